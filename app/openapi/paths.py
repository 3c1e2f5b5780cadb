"""The `paths` of the OpenAPI document: every public URL, its bodies, answers and errors.

Errors use one of two shapes: `NativeError` everywhere except under /v1, where they are
OpenAI's `OpenAIError`. Every answer may carry `X-Request-ID`. A 405 (with `Allow`) can
come from any URL for a method it does not serve; OpenAPI cannot attach it to undocumented
methods, so it is described once, in the info, and its body is the family's error shape.
"""

from __future__ import annotations

from typing import Any

from app.openapi.schemas import HEADERS, ref

Doc = dict[str, Any]

JSON = "application/json"
TEXT = "text/plain"
SSE = "text/event-stream"


def _headers(*names: str, required: tuple[str, ...] = ()) -> Doc:
    found: Doc = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    for name in names:
        # A required header is a copy of its component: `required` cannot sit beside a `$ref`.
        header: Doc = {"$ref": f"#/components/headers/{name}"}
        found[name] = header if name not in required else {**HEADERS[name], "required": True}
    return found


def answer(description: str, content: Doc | None = None, *headers: str, required: tuple[str, ...] = ()) -> Doc:
    doc: Doc = {"description": description, "headers": _headers(*headers, required=required)}
    if content:
        doc["content"] = content
    return doc


def json_body(schema_name: str) -> Doc:
    return {JSON: {"schema": ref(schema_name)}}


ERRORS: dict[int, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # status: (when, headers, required headers)
    400: (
        "The body is not JSON, not an object, nested too deeply, or a field is wrong (`field`/`param` names it); "
        "or every provider refused the input.",
        (),
        (),
    ),  # fmt: skip
    401: (
        "A client key is required and missing or wrong (only when client keys are configured).",
        ("WWW-Authenticate",),
        ("WWW-Authenticate",),
    ),  # fmt: skip
    404: ("Unknown route, `provider` or `model` (`attempts` lists each try when workers were asked).", (), ()),
    409: ("A worker of that name exists.", (), ()),
    413: ("The body is larger than MAX_BODY_BYTES.", (), ()),
    415: ("`Content-Type` is not `application/json`.", (), ()),
    422: ("The worker table or the configuration is invalid.", (), ()),
    429: (
        "This client exceeded its rate limit, or every provider that could answer is rate limiting.",
        ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
        ("Retry-After",),
    ),  # fmt: skip
    503: (
        "No worker could answer (`attempts` lists each try), or the admin journal is busy.",
        ("Retry-After",),
        ("Retry-After",),
    ),  # fmt: skip
}


def errors(shape: str, *statuses: int) -> dict[str, Doc]:
    """The error answers of an operation, in `NativeError` or `OpenAIError` shape."""
    found = {}
    for status in statuses:
        when, headers, required = ERRORS[status]
        found[str(status)] = answer(when, json_body(shape), *headers, required=required)
    return found


def native(*statuses: int) -> dict[str, Doc]:
    return errors("NativeError", *statuses)


def openai(*statuses: int) -> dict[str, Doc]:
    return errors("OpenAIError", *statuses)


CHAT_ERRORS = (400, 401, 404, 413, 415, 429, 503)
#: Headers of a limited route's answer, and of a streamed answer's committed worker.
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
WORKER_HEADERS = ("X-Cortex-Worker", "X-Cortex-Model", "X-Cortex-Attempts")
ADMIN_SECURITY: list[Doc] = [{"adminToken": []}]
CLIENT_SECURITY: list[Doc] = [{}, {"clientKey": []}]
STRING = {"schema": {"type": "string"}}


def _admin(summary: str, answers: dict[str, Doc], body: str | None = None, params: list[Doc] | None = None) -> Doc:
    op: Doc = {
        "tags": ["admin"],
        "summary": summary,
        "security": ADMIN_SECURITY,
        "responses": {**answers, **native(401, 404, 503)},
    }
    if body:
        op["requestBody"] = {"required": True, "content": json_body(body)}
        op["responses"].update(native(400, 413, 415))
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, schema: Doc) -> Doc:
    return {"name": name, "in": "path", "required": True, "schema": schema}


ADMIN_OK = json_body("AdminAnswer")
WORKER_NAME = _path_param("name", {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"})
KEY_POSITION = _path_param("position", {"type": "integer", "minimum": 1, "description": "the key's 1-based position"})

PATHS: dict[str, Doc] = {
    "/api/health": {
        "get": {
            "tags": ["status"],
            "summary": "Health of the gateway and of every worker, from cached state (never waits on an upstream)",
            "responses": {
                "200": answer("`healthy` or `degraded`: at least one worker can answer.", json_body("Health")),
                "503": answer("`unhealthy` or `no_workers`: no worker can answer.", json_body("Health")),
            },
        }
    },
    "/api/providers": {
        "get": {
            "tags": ["status"],
            "summary": "Every worker, by priority, with its models, keys' states (never a key) and circuit",
            "responses": {"200": answer("The workers.", json_body("Providers"))},
        }
    },
    "/api/chat": {
        "post": {
            "tags": ["chat"],
            "summary": "A streamed reply: chunked plain text, or Server-Sent Events",
            "description": "SSE when `stream_format` is `sse`, or when it is absent and `Accept` prefers "
            "`text/event-stream`. A failure after the first byte ends the text with a `[cortex-error] <kind>: "
            "<message>` line, or the SSE stream with an `error` event. A stream that had to send keep-alives "
            "before its first token carries who answered in its `done` event instead of the X-Cortex headers.",
            "security": CLIENT_SECURITY,
            "requestBody": {"required": True, "content": json_body("NativeChatRequest")},
            "responses": {
                "200": answer(
                    "The reply as it streams.",
                    {TEXT: STRING, SSE: {"schema": ref("NativeSSEEvent")}},
                    *WORKER_HEADERS,
                    *RATE_HEADERS,
                ),
                **native(*CHAT_ERRORS),
            },
        }
    },
    "/api/chat/complete": {
        "post": {
            "tags": ["chat"],
            "summary": "The whole reply as one JSON object",
            "security": CLIENT_SECURITY,
            "requestBody": {"required": True, "content": json_body("NativeChatRequest")},
            "responses": {
                "200": answer(
                    "The reply.",
                    json_body("Completion"),
                    *RATE_HEADERS,
                ),
                **native(*CHAT_ERRORS),
            },
        }
    },
    "/v1/chat/completions": {
        "post": {
            "tags": ["openai"],
            "summary": "OpenAI-compatible chat completions",
            "description": "`stream: true` answers `chat.completion.chunk` SSE events ending with `data: [DONE]` "
            '(a failure after the first chunk is a `data: {"error": ...}` event and no `[DONE]`); otherwise one '
            "`chat.completion` object.",
            "security": CLIENT_SECURITY,
            "requestBody": {"required": True, "content": json_body("OpenAIChatRequest")},
            "responses": {
                "200": answer(
                    "The completion, or its chunks.",
                    {**json_body("ChatCompletion"), SSE: {"schema": ref("OpenAISSEEvent")}},
                    *WORKER_HEADERS,
                    *RATE_HEADERS,
                ),
                **openai(*CHAT_ERRORS),
            },
        }
    },
    "/v1/models": {
        "get": {
            "tags": ["openai"],
            "summary": "Every model a worker serves, then the aliases, in OpenAI's list shape",
            "security": CLIENT_SECURITY,
            "responses": {
                "200": answer(
                    "The models.",
                    json_body("ModelList"),
                    *RATE_HEADERS,
                ),
                **openai(401, 429),
            },
        }
    },
    "/": {
        "get": {
            "tags": ["page"],
            "summary": "The chat page",
            "responses": {"200": answer("The page.", {"text/html": STRING})},
        }
    },
    "/static/{filename}": {
        "get": {
            "tags": ["page"],
            "summary": "The chat page's script and style",
            "parameters": [_path_param("filename", {"type": "string"})],
            "responses": {
                "200": answer("The file.", {"*/*": STRING}),
                **native(404),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["status"],
            "summary": "This document",
            "responses": {"200": answer("OpenAPI 3.1.", {JSON: {"schema": {"type": "object"}}})},
        }
    },
    "/metrics": {
        "get": {
            "tags": ["status"],
            "summary": "Prometheus metrics of every worker process",
            "responses": {
                "200": answer(
                    "The Prometheus text exposition format (OpenMetrics when `Accept` asks for it).",
                    {TEXT: STRING, "application/openmetrics-text": STRING},
                )
            },
        }
    },
    "/api/admin/workers": {
        "get": _admin("Every worker with its keys, masked", {"200": answer("The workers.", ADMIN_OK)}),
        "post": _admin(
            "Add a worker (in every worker process)",
            {
                "201": answer("Added; the worker as listed.", ADMIN_OK),
                **native(409, 422),
            },
            body="WorkerSpec",
        ),
    },
    "/api/admin/workers/{name}": {
        "delete": _admin(
            "Remove a worker; its streams in flight finish",
            {"200": answer("Removed.", ADMIN_OK)},
            params=[WORKER_NAME],
        )
    },
    "/api/admin/workers/{name}/keys/{position}/enable": {
        "post": _admin(
            "Enable a disabled key of a worker again, by position",
            {"200": answer("Enabled; the worker as listed.", ADMIN_OK)},
            params=[WORKER_NAME, KEY_POSITION],
        )
    },
    "/api/admin/reload": {
        "post": _admin(
            "Reload workers and dispatch settings from CORTEX_CONFIG and the environment",
            {"200": answer("Reloaded: which workers were kept, replaced, added, removed.", ADMIN_OK), **native(422)},
        )
    },
    "/api/admin/health-check": {
        "post": _admin("Probe every worker now", {"200": answer("The health report after the probes.", ADMIN_OK)})
    },
}
