"""Chunked plain text, the default format of POST /api/chat.

Each text delta is written as its UTF-8 bytes, unchanged. A failure after the first byte
cannot change the status any more, so it is written into the body as one line in a fixed,
documented form that a client can recognise::

    <partial reply>
    [cortex-error] interrupted: the upstream connection broke mid-response

The marker starts on a line of its own (a newline is written first) and always ends
with a newline. A stream without the marker is complete. Plain text has no comment syntax,
so it carries no keep-alives: nothing is sent before the first token.
"""

from __future__ import annotations

from app.formats.base import Answer, Refusal
from providers.errors import UpstreamError
from providers.events import Event, TextDelta

CONTENT_TYPE = "text/plain; charset=utf-8"
ERROR_MARKER = "[cortex-error]"


def _marker(kind: str, message: str) -> bytes:
    return f"\n{ERROR_MARKER} {kind}: {' '.join(message.split())}\n".encode("utf-8", "replace")


class TextEncoder:
    content_type = CONTENT_TYPE
    keepalive = None

    @staticmethod
    def begin(answer: Answer) -> bytes | None:
        return None

    @staticmethod
    def encode(event: Event) -> bytes | None:
        if isinstance(event, TextDelta):
            return event.text.encode("utf-8", "replace")
        return None

    @staticmethod
    def error(error: UpstreamError) -> bytes:
        return _marker(error.kind.value, error.message)

    @staticmethod
    def refused(refusal: Refusal) -> bytes:
        return _marker(refusal.code, refusal.message)

    @staticmethod
    def end() -> bytes | None:
        return None
