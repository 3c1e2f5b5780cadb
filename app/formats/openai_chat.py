"""OpenAI's chat-completions wire format, as /v1/chat/completions answers it.

Follows OpenAI's API reference ("The chat completion object", "The chat completion chunk
object"), the shapes the official SDKs parse. A stream (`stream: true`)::

    data: {"id":"chatcmpl-…","object":"chat.completion.chunk","created":1764000000,"model":"m",
           "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

    data: {…,"choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}]}

    data: {…,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

    data: {…,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

    data: [DONE]

The usage chunk is sent only to clients that set `stream_options.include_usage` (and then
every earlier chunk carries `"usage": null`, as OpenAI does). A failure after the first
chunk is an in-band `data: {"error": {...}}` event and no `[DONE]`, which the SDKs raise as
`APIError`; keep-alives are SSE comments, which they ignore.
"""

from __future__ import annotations

from typing import Any

from app.formats.base import Answer, Refusal, compact_json
from providers.errors import UpstreamError
from providers.events import Event, Finish, TextDelta, Usage

CONTENT_TYPE = "text/event-stream; charset=utf-8"
KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"

#: Our status codes and OpenAI's error `type` for each (the SDKs pick their exception class
#: from the status; the type is what people read).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # as OpenAI answers a wrong key (code invalid_api_key)
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error" if status < 503 else "service_unavailable_error")


def error_body(message: str, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def usage_body(usage: Usage) -> dict[str, int | None]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(
    completion_id: str, created: int, model: str, text: str, finish_reason: str | None, usage: Usage | None
) -> dict[str, Any]:
    """The whole `chat.completion` object of a non-streaming answer."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason or "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body


class OpenAIChunkEncoder:
    content_type = CONTENT_TYPE
    keepalive = KEEPALIVE

    __slots__ = ("_id", "_created", "_model", "_include_usage", "_finished", "_usage")

    def __init__(self, completion_id: str, created: int, requested_model: str | None, include_usage: bool) -> None:
        self._id = completion_id
        self._created = created
        self._model = requested_model or "auto"
        self._include_usage = include_usage
        self._finished = False
        self._usage: Usage | None = None

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None, last: bool = False) -> bytes:
        doc: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            doc["usage"] = usage_body(usage) if last and usage is not None else None
        return b"data: " + compact_json(doc).encode("utf-8", "replace") + b"\n\n"

    @staticmethod
    def _choice(delta: dict[str, str], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    def begin(self, answer: Answer) -> bytes | None:
        self._model = answer.model
        return self._chunk(self._choice({"role": "assistant", "content": ""}))

    def encode(self, event: Event) -> bytes | None:
        if isinstance(event, TextDelta):
            return self._chunk(self._choice({"content": event.text})) if event.text else None
        if isinstance(event, Finish):
            return self._finish(event.reason)
        if isinstance(event, Usage):
            self._usage = event
        return None

    def _finish(self, reason: str | None) -> bytes | None:
        if self._finished:
            return None
        self._finished = True
        return self._chunk(self._choice({}, reason or "stop"))

    def error(self, error: UpstreamError) -> bytes:
        doc = error_body(f"the upstream failed mid-stream: {error.message}", 502, error.kind.value)
        return b"data: " + compact_json(doc).encode("utf-8", "replace") + b"\n\n"

    def refused(self, refusal: Refusal) -> bytes:
        return (
            b"data: "
            + compact_json(error_body(refusal.message, refusal.status, refusal.code)).encode("utf-8", "replace")
            + b"\n\n"
        )

    def end(self) -> bytes | None:
        tail = self._finish(None) or b""
        if self._include_usage and self._usage is not None:
            tail += self._chunk([], self._usage, last=True)
        return tail + DONE
