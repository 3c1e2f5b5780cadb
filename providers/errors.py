"""One error model for every upstream, so the dispatcher decides from `kind` alone.

    ErrorKind           what happened                         dispatcher reaction
    ---------           -------------                         -------------------
    CONNECT             no connection (refused, DNS, TLS)     next worker
    TIMEOUT             connect/first-token/idle/total        next worker (before first byte)
    AUTH                401/403: the key is bad               disable key, next key
    RATE_LIMITED        429: slow down (Retry-After)          cool key down, next key
    QUOTA               quota or billing exhausted            cool key down, next key
    NOT_FOUND           model or route unknown there          next worker
    BAD_REQUEST         the client's own input was refused    stop: the client gets a 400
    SERVER              5xx or unexpected status              next worker
    MALFORMED_STREAM    framing or JSON we cannot read        next worker
    INTERRUPTED         the stream ended before it finished   next worker (before first byte)
    EMPTY               the upstream answered with no content next worker
    BLOCKED             the provider's safety filter refused  next worker (policies differ);
                        the prompt or the answer              400 if every worker refuses

Messages are built from our own fields and a short, sanitised excerpt of the upstream's
error text, never from `str()` of a transport exception (it contains the URL, which may
carry a key).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime


class ErrorKind(enum.StrEnum):
    CONNECT = "connect"
    TIMEOUT = "timeout"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    SERVER = "server"
    MALFORMED_STREAM = "malformed_stream"
    INTERRUPTED = "interrupted"
    EMPTY = "empty"
    BLOCKED = "blocked"


#: Kinds after which the same request may succeed elsewhere. BAD_REQUEST is the exception:
#: the client's own input was refused, and every other worker would refuse it too.
RETRYABLE_KINDS = frozenset(ErrorKind) - {ErrorKind.BAD_REQUEST}

#: Longest excerpt of an upstream's error text we pass on.
MAX_MESSAGE_CHARS = 300


class UpstreamError(Exception):
    """A classified failure of one attempt against one worker."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return f"UpstreamError({self.kind.value}, {self.message!r}, status={self.status})"


def kind_for_status(status: int) -> ErrorKind:
    """Classify an HTTP status alone; adapters refine it with the body (quota, model codes)."""
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 402:
        return ErrorKind.QUOTA
    if status in (404, 405):
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status in (400, 413, 422):
        return ErrorKind.BAD_REQUEST
    return ErrorKind.SERVER


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3).

    `now` is the current Unix time, passed in so the function stays pure. Negative or
    unparseable values give None; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that also works on plain dicts."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def excerpt(text: str) -> str:
    """Squash whitespace and cut an upstream message to a size safe to show and log."""
    squashed = " ".join(text.split())
    if len(squashed) > MAX_MESSAGE_CHARS:
        return squashed[: MAX_MESSAGE_CHARS - 1] + "…"
    return squashed


def json_error_fields(body: bytes) -> tuple[str | None, str | None]:
    """(message, code) from the common `{"error": {"message", "code"|"type"}}` shape, if present."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        return (
            message if isinstance(message, str) else None,
            str(code) if isinstance(code, (str, int)) else None,
        )
    if isinstance(error, str):
        return error, None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return doc["message"], None
    return None, None


def malformed(message: str) -> UpstreamError:
    return UpstreamError(ErrorKind.MALFORMED_STREAM, message)


def incomplete() -> UpstreamError:
    """A stream that ended without its protocol's end marker ([DONE], message_stop, done: true...)."""
    return UpstreamError(ErrorKind.INTERRUPTED, "the upstream stream ended before it was complete")
