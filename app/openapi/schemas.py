"""The reusable parts of the OpenAPI document: `components` (schemas, responses, headers,
security schemes), as plain data.

The request schemas say exactly what app/validation.py accepts, limits included (they are
imported from there), so a body valid here is parsed and one invalid here is a 400: the
fuzz tests (tests/live/test_fuzz.py) hold the two to that. Unknown fields of a chat body are
ignored, as OpenAI-compatible servers do, hence `additionalProperties: true`.
"""

from __future__ import annotations

from typing import Any

from app.strategies import ALIASES, STRATEGIES
from app.validation import MAX_MAX_TOKENS, MAX_MESSAGES, MAX_NAME_CHARS, MAX_STOP_SEQUENCES, NATIVE_ROLES, OPENAI_ROLES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or null: the validator treats a null field as an absent one."""
    return {"anyOf": [schema, {"type": "null"}]}


#: Printable ASCII, not blank (validation.py `_optional_name`).
NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": "^[ -~]*[!-~][ -~]*$"}
TIMESTAMP = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
NON_NEGATIVE = {"type": "integer", "minimum": 0}


def _messages(roles: list[str]) -> Schema:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_MESSAGES,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": {"enum": roles}, "content": ref("Content")},
        },
    }


def _sampling(max_tokens_fields: tuple[str, ...]) -> dict[str, Schema]:
    fields: dict[str, Schema] = {
        "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2}),
        "top_p": nullable({"type": "number", "minimum": 0, "maximum": 1}),
        "stop": nullable(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "maxItems": MAX_STOP_SEQUENCES, "items": {"type": "string", "minLength": 1}},
                ]
            }
        ),
    }
    for name in max_tokens_fields:
        fields[name] = nullable({"type": "integer", "minimum": 1, "maximum": MAX_MAX_TOKENS})
    return fields


NATIVE_CHAT = {
    "type": "object",
    "description": "A chat for POST /api/chat and /api/chat/complete. Unknown fields are ignored.",
    "required": ["messages"],
    "properties": {
        "messages": _messages(list(NATIVE_ROLES)),
        "model": nullable({**NAME, "description": "`auto`, an alias, `provider/model` or a model name"}),
        "provider": nullable({**NAME, "description": "a worker name, provider type or preset"}),
        **_sampling(("max_tokens",)),
        "strategy": nullable({"enum": sorted([*STRATEGIES, *ALIASES])}),
        "stream_format": nullable({"enum": ["text", "sse"], "description": "POST /api/chat only"}),
    },
    "example": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
}

OPENAI_CHAT = {
    "type": "object",
    "description": "OpenAI's chat-completions body; the parameters listed are honoured, others ignored.",
    "required": ["messages"],
    "properties": {
        "messages": _messages(list(OPENAI_ROLES)),
        "model": nullable(NAME),
        "user": nullable(NAME),
        **_sampling(("max_tokens", "max_completion_tokens")),
        "n": nullable({"const": 1}),
        "stream": {"type": "boolean"},
        "stream_options": nullable({"type": "object", "properties": {"include_usage": {"type": "boolean"}}}),
    },
    "example": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
}

NATIVE_ERROR = {
    "type": "object",
    "description": "Every error outside /v1.",
    "required": ["error", "details", "timestamp"],
    "properties": {
        "error": {"type": "string", "description": "a short title (`Invalid request`, `Not found`...)"},
        "details": {"type": "string"},
        "timestamp": TIMESTAMP,
        "field": {"type": "string", "description": "the request field at fault (400)"},
        "attempts": {"type": "array", "items": ref("Attempt")},
    },
}

OPENAI_ERROR = {
    "type": "object",
    "description": "Every error under /v1, in OpenAI's shape.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

ATTEMPT = {
    "type": "object",
    "description": "One try of one worker with one key (its position, never the key).",
    "required": ["worker", "kind", "message"],
    "properties": {
        "worker": {"type": "string"},
        "key": {"type": ["integer", "null"]},
        "kind": {"type": "string"},
        "status": {"type": ["integer", "null"]},
        "message": {"type": "string"},
    },
}

USAGE = {
    "type": "object",
    "required": ["input_tokens", "output_tokens", "total_tokens"],
    "properties": {name: {"type": ["integer", "null"]} for name in ("input_tokens", "output_tokens", "total_tokens")},
}

CIRCUIT = {
    "type": "object",
    "required": ["state", "consecutive_failures", "open_until"],
    "properties": {
        "state": {"enum": ["closed", "open", "half_open"]},
        "consecutive_failures": NON_NEGATIVE,
        "open_until": NULLABLE_TIMESTAMP,
    },
}

WORKER_STATUS = {"enum": ["healthy", "degraded", "unavailable", "unknown"]}

WORKER_HEALTH = {
    "type": "object",
    "required": ["status", "type", "priority", "last_check", "latency_ms", "error", "available_at", "in_flight"],
    "properties": {
        "status": WORKER_STATUS,
        "type": {"type": "string"},
        "priority": {"type": "integer"},
        "last_check": NULLABLE_TIMESTAMP,
        "latency_ms": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]},
        "available_at": NULLABLE_TIMESTAMP,
        "in_flight": NON_NEGATIVE,
        "circuit": ref("Circuit"),
    },
}

HEALTH = {
    "type": "object",
    "required": ["status", "instance", "shared_state", "timestamp", "uptime", "workers", "summary", "last_check"],
    "properties": {
        "status": {"enum": ["healthy", "degraded", "unhealthy", "no_workers"]},
        "instance": {"type": "string", "description": "This instance's name: INSTANCE_ID, else hostname:PORT."},
        "shared_state": {
            "type": "object",
            "description": "Where key cooldowns, disabled keys and circuits are shared (redis: REDIS_URL; "
            "local: each process keeps its own), and whether the process that answered reaches it. "
            "Unreachable, it serves on its own state; the status code does not change.",
            "required": ["backend", "reachable"],
            "properties": {"backend": {"enum": ["redis", "local"]}, "reachable": {"type": "boolean"}},
        },
        "timestamp": TIMESTAMP,
        "uptime": {"type": "number"},
        "workers": {"type": "object", "additionalProperties": ref("WorkerHealth")},
        "summary": {
            "type": "object",
            "required": ["total", "available", "healthy", "degraded", "unavailable", "unknown"],
            "properties": {
                k: NON_NEGATIVE for k in ("total", "available", "healthy", "degraded", "unavailable", "unknown")
            },
        },
        "last_check": NULLABLE_TIMESTAMP,
    },
}

KEY_STATE = {
    "type": "object",
    "description": "Counters of one key, by position; never the key.",
    "required": ["key", "state"],
    "properties": {"key": {"type": "integer", "minimum": 1}, "state": {"enum": ["ready", "cooling", "disabled"]}},
}

PROVIDER = {
    "type": "object",
    "required": ["name", "type", "status", "priority", "models", "capabilities", "keys", "key_states", "circuit"],
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "preset": {"type": ["string", "null"]},
        "status": WORKER_STATUS,
        "priority": {"type": "integer"},
        "models": {"type": "array", "items": {"type": "string"}},
        "default_model": {"type": ["string", "null"]},
        "capabilities": {"type": "array", "items": {"type": "string"}},
        "keys": NON_NEGATIVE,
        "key_states": {"type": "array", "items": ref("KeyState")},
        "circuit": ref("Circuit"),
        "available_at": NULLABLE_TIMESTAMP,
        "demo": {"type": "boolean"},
        "description": {"type": ["string", "null"]},
    },
}

PROVIDERS = {
    "type": "object",
    "required": ["providers", "total_count", "healthy_count", "default_strategy"],
    "properties": {
        "providers": {"type": "array", "items": ref("Provider")},
        "total_count": NON_NEGATIVE,
        "healthy_count": NON_NEGATIVE,
        "default_strategy": {"type": "string"},
    },
}

COMPLETE = {
    "type": "object",
    "required": ["response", "provider", "model", "finish_reason", "attempts"],
    "properties": {
        "response": {"type": "string"},
        "provider": {"type": "string", "description": "the worker that answered"},
        "model": {"type": "string"},
        "finish_reason": {"type": ["string", "null"]},
        "attempts": {"type": "integer", "minimum": 1},
        "usage": ref("Usage"),
    },
}

OPENAI_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {k: {"type": ["integer", "null"]} for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
}

CHAT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": NON_NEGATIVE,
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]}},
                    },
                    "logprobs": {"type": "null"},
                    "finish_reason": {"type": "string"},
                },
            },
        },
        "usage": ref("OpenAIUsage"),
    },
}

MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                },
            },
        },
    },
}

CHAT_COMPLETION_CHUNK = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "delta", "finish_reason"],
                "properties": {
                    "index": NON_NEGATIVE,
                    "delta": {
                        "type": "object",
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                    },
                    "logprobs": {"type": "null"},
                    "finish_reason": {"type": ["string", "null"]},
                },
            },
        },
        "usage": nullable(ref("OpenAIUsage")),
    },
}


def json_text(schema: Schema) -> Schema:
    """An SSE `data` field: JSON text whose value `schema` describes."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


#: One event of POST /api/chat's SSE stream, as an SSE parser hands it over (OpenAPI 3.1: the
#: `schema` of text/event-stream describes each event). Unnamed events (`message`) carry text.
NATIVE_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"enum": ["message", "done", "error"]},
        "data": json_text(
            {
                "anyOf": [
                    {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                    {
                        "type": "object",
                        "description": "`done`: who answered, the model, why it finished, usage",
                        "required": ["provider", "model", "finish_reason", "usage", "attempts"],
                        "properties": {"usage": nullable(ref("Usage"))},
                    },
                    {
                        "type": "object",
                        "description": "`error`: the kind of failure; `status` when the request was refused "
                        "after keep-alives (e.g. 503), null mid-stream",
                        "required": ["error", "message", "status"],
                        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                    },
                ]
            }
        ),
    },
}

#: One event of /v1/chat/completions' stream: a chunk, an in-band error, or `[DONE]`.
OPENAI_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"const": "message"},
        "data": {
            "anyOf": [
                {"const": "[DONE]"},
                json_text({"anyOf": [ref("ChatCompletionChunk"), ref("OpenAIError")]}),
            ]
        },
    },
}

TIMEOUTS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {k: {"type": "number", "exclusiveMinimum": 0} for k in ("connect", "first_token", "idle", "total")},
}

#: One `[[workers]]` table of the TOML file, as JSON (README "The TOML file"). The admin API
#: validates it exactly like the file; unknown keys are errors (422).
WORKER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        "provider": {"enum": ["openai_compat", "gemini", "cohere", "anthropic", "ollama", "demo"]},
        "preset": {"enum": ["groq", "openai", "openrouter", "gemini", "cohere", "anthropic"]},
        "base_url": {"type": "string", "format": "uri"},
        "api_keys": {"type": "array", "items": {"type": "string"}},
        "api_keys_env": {"type": "string"},
        "models": {"type": "array", "items": {"type": "string"}},
        "default_model": {"type": "string"},
        "priority": {"type": "integer"},
        "timeouts": ref("Timeouts"),
        "stream_usage": {"type": "boolean"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "stream": {"type": "boolean"},
        "keep_alive": {"type": ["string", "integer"]},
        "key_strategy": {"enum": ["round_robin", "least_used", "random"]},
        "rpm": {"type": "integer", "minimum": 1},
    },
}

#: The admin API's answers are only sketched (every one carries the answering process's
#: `pid`); their full shapes belong to app/routes/admin.py.
ADMIN_ANSWER = {"type": "object", "required": ["pid"], "properties": {"pid": {"type": "integer"}}}

SCHEMAS: dict[str, Schema] = {
    "Content": {
        "description": "A string, or OpenAI's list of content parts when every part is text.",
        "anyOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "text"],
                    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                },
            },
        ],
    },
    "NativeChatRequest": NATIVE_CHAT,
    "OpenAIChatRequest": OPENAI_CHAT,
    "NativeError": NATIVE_ERROR,
    "OpenAIError": OPENAI_ERROR,
    "Attempt": ATTEMPT,
    "Usage": USAGE,
    "Circuit": CIRCUIT,
    "WorkerHealth": WORKER_HEALTH,
    "Health": HEALTH,
    "KeyState": KEY_STATE,
    "Provider": PROVIDER,
    "Providers": PROVIDERS,
    "Completion": COMPLETE,
    "OpenAIUsage": OPENAI_USAGE,
    "ChatCompletion": CHAT_COMPLETION,
    "ChatCompletionChunk": CHAT_COMPLETION_CHUNK,
    "NativeSSEEvent": NATIVE_SSE_EVENT,
    "OpenAISSEEvent": OPENAI_SSE_EVENT,
    "ModelList": MODEL_LIST,
    "Timeouts": TIMEOUTS,
    "WorkerSpec": WORKER_SPEC,
    "AdminAnswer": ADMIN_ANSWER,
}


def _header(description: str, schema: Schema) -> Schema:
    return {"description": description, "schema": schema}


HEADERS: dict[str, Schema] = {
    "X-Request-ID": _header("The request's id: the client's own when sane, else a new one.", {"type": "string"}),
    "Retry-After": _header("Seconds until a retry may succeed.", {"type": "integer", "minimum": 1}),
    "X-RateLimit-Limit": _header("The client's request budget in the current window.", NON_NEGATIVE),
    "X-RateLimit-Remaining": _header("What is left of it.", NON_NEGATIVE),
    "X-RateLimit-Reset": _header("When the window resets (Unix time).", NON_NEGATIVE),
    "X-Cortex-Worker": _header("The worker that answered.", {"type": "string"}),
    "X-Cortex-Model": _header("The model that answered.", {"type": "string"}),
    "X-Cortex-Attempts": _header("Attempts it took (1: no failover).", {"type": "integer", "minimum": 1}),
    "WWW-Authenticate": _header('`Bearer realm="cortex"`.', {"type": "string"}),
    "Allow": _header("The methods the URL accepts (405).", {"type": "string"}),
}

SECURITY_SCHEMES = {
    "clientKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A CORTEX_API_KEYS key (or a [[clients]] key). Required on /api/chat* and /v1/* only when "
        "client keys are configured; otherwise the routes are open.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "CORTEX_ADMIN_TOKEN. Without it configured, /api/admin does not exist (404).",
    },
}
