"""Server-Sent Events for POST /api/chat (`Accept: text/event-stream` or `"stream_format": "sse"`).

One unnamed event per text delta, then exactly one of `done` or `error`::

    data: {"text":"Hel"}

    data: {"text":"lo"}

    event: done
    data: {"provider":"groq","type":"openai_compat","model":"llama-3.1-8b-instant","finish_reason":"stop",
           "usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11},"attempts":1}

    : keep-alive            (comment lines while the upstream is silent before the first token)

    event: error
    data: {"error":"interrupted","message":"the upstream connection broke mid-response","status":null}

A stream that ends without `done` or `error` was cut by the network, not by Cortex.
"""

from __future__ import annotations

from typing import Any

from app.formats.base import Answer, Refusal, compact_json, sse_event
from providers.errors import UpstreamError
from providers.events import Event, Finish, TextDelta, Usage

CONTENT_TYPE = "text/event-stream; charset=utf-8"
KEEPALIVE = b": keep-alive\n\n"


class SSEEncoder:
    content_type = CONTENT_TYPE
    keepalive = KEEPALIVE

    __slots__ = ("_answer", "_finish", "_usage")

    def __init__(self) -> None:
        self._answer: Answer | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None

    def begin(self, answer: Answer) -> bytes | None:
        self._answer = answer
        return None

    def encode(self, event: Event) -> bytes | None:
        if isinstance(event, TextDelta):
            return sse_event(compact_json({"text": event.text})) if event.text else None
        if isinstance(event, Finish):
            self._finish = event.reason
        elif isinstance(event, Usage):
            self._usage = event
        return None

    def error(self, error: UpstreamError) -> bytes:
        body = {"error": error.kind.value, "message": error.message, "status": error.status}
        return sse_event(compact_json(body), "error")

    def refused(self, refusal: Refusal) -> bytes:
        body: dict[str, Any] = {"error": refusal.code, "message": refusal.message, "status": refusal.status}
        if refusal.retry_after is not None:
            body["retry_after"] = refusal.retry_after
        return sse_event(compact_json(body), "error")

    def end(self) -> bytes | None:
        answer = self._answer
        body = {
            "provider": answer.worker if answer else None,
            "type": answer.provider if answer else None,
            "model": answer.model if answer else None,
            "finish_reason": self._finish or "stop",
            "usage": self._usage.as_dict() if self._usage else None,
            "attempts": answer.attempts if answer else None,
        }
        return sse_event(compact_json(body), "done")
