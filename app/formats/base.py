"""What every output format implements, and the facts about an answer it may announce.

An encoder turns the internal event stream into one wire format (plain text, native SSE,
OpenAI chunks). It is pure (bytes out, no I/O), built per request, and told about the
answer (`begin`) only once a worker has committed, because the model actually used is not
known before. Formats that can carry comments also carry keep-alives while the gateway is
still waiting for the first token (FIELD-NOTES 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from providers.errors import UpstreamError
from providers.events import Event


@dataclass(frozen=True, slots=True)
class Answer:
    """Who answered: announced by formats that carry metadata (never a key)."""

    worker: str
    provider: str
    model: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """The dispatch failed after the response had already started (keep-alives were sent),
    so the status it would have had travels inside the stream instead."""

    status: int
    code: str
    title: str
    message: str
    retry_after: float | None = None


class Encoder(Protocol):
    @property
    def content_type(self) -> str: ...

    @property
    def keepalive(self) -> bytes | None:
        """Bytes to send while the upstream is silent before the first token; None when the
        format has no comment syntax (plain text), so nothing may be sent before content."""
        ...

    def begin(self, answer: Answer) -> bytes | None: ...

    def encode(self, event: Event) -> bytes | None: ...

    def error(self, error: UpstreamError) -> bytes: ...

    def refused(self, refusal: Refusal) -> bytes: ...

    def end(self) -> bytes | None: ...


def compact_json(doc: Any) -> str:
    """One line of JSON: SSE data may not contain a raw newline, and JSON never has one.
    Encoders write it with `encode("utf-8", "replace")`, as all their text: an upstream's JSON
    may carry a lone surrogate ("\\ud800"), which Python decodes but UTF-8 cannot encode."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def sse_event(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode("utf-8", "replace")
