"""Request bodies in, typed `ChatRequest` out, or a `ValidationError` naming the field.

Views never look inside a raw body; everything past this module is typed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import InvalidJSON, PayloadTooLarge, UnsupportedMediaType, ValidationError
from app.strategies import ALIASES, STRATEGIES, canonical_strategy
from providers.base import ROLES, ChatParams, Message

if TYPE_CHECKING:
    from flask import Request

MAX_MESSAGES = 1000
MAX_NAME_CHARS = 256
MAX_MAX_TOKENS = 10_000_000
#: Deepest nesting of arrays and objects a body may have. A chat body needs 5 levels
#: (body, messages, message, content parts, part); the bound stops a 100,000-deep body from
#: costing the parser a recursion per level.
MAX_JSON_DEPTH = 32
MAX_STOP_SEQUENCES = 4
STREAM_FORMATS = ("text", "sse")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat as every route hands it to the dispatcher. `model` is as the client wrote it
    (an alias, `provider/model`, `auto`...); the dispatcher resolves it per worker."""

    messages: tuple[Message, ...]
    model: str | None = None
    provider: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str | None = None
    #: A routing strategy for this request only (its canonical name), else the default.
    strategy: str | None = None

    def params(self, model: str) -> ChatParams:
        return ChatParams(self.messages, model, self.temperature, self.max_tokens, self.top_p, self.stop, self.user)


@dataclass(frozen=True, slots=True)
class NativeChat:
    """POST /api/chat: the chat, and the stream format the body asked for (if any)."""

    chat: ChatRequest
    stream_format: str | None


@dataclass(frozen=True, slots=True)
class OpenAIChat:
    """POST /v1/chat/completions: the chat and OpenAI's streaming switches."""

    chat: ChatRequest
    stream: bool
    include_usage: bool


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: A JSON string, escapes included: its brackets do not nest anything.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(data: bytes, limit: int) -> bool:
    """Whether `data` nests arrays and objects more than `limit` levels deep, judged before
    parsing (the parser recurses once per level) and at C speed, with no Python loop per byte:
    strings are cut out, everything but brackets deleted, and innermost `[]` pairs removed
    once per level. A pair left after `limit` rounds sat deeper than `limit`; so do more than
    `limit` openers never closed (a truncated body). Other malformed JSON is left for the
    parser to describe."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case: too few brackets to nest that deep
    brackets = _STRING.sub(b"", data).translate(_SQUARE, _NOT_BRACKET)
    for _ in range(limit):
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break
        brackets = inner
    return b"[]" in brackets or brackets.count(b"[") > limit


def read_body(request: Request) -> bytes:
    """The raw body, refused (413) past MAX_BODY_BYTES whatever its framing. Werkzeug refuses a
    Content-Length over the limit up front, but cuts a chunked body at the limit silently
    (LimitedStream.readall stops there), which turned an oversized body into a 400 about
    truncated JSON; one byte more on the raw stream tells the two apart."""
    data = request.get_data(cache=False)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        if request.environ["wsgi.input"].read(1):
            raise PayloadTooLarge("the request body exceeds the configured limit (MAX_BODY_BYTES)")
    return data


def decode_json_body(data: bytes, content_type: str | None) -> Any:
    """Parse a JSON body strictly: UTF-8, no NaN/Infinity, nesting at most MAX_JSON_DEPTH deep.
    Every failure is an ApiError (400 or 415), never a 500."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: application/json' (got {media!r})")
    if not data.strip():
        raise InvalidJSON("the request body is empty; expected a JSON object")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("the request body is not valid UTF-8") from None
    if _too_deep(data, MAX_JSON_DEPTH):
        raise InvalidJSON(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # unreachable after _too_deep, kept as a last line of defence
        raise InvalidJSON("the JSON is nested too deeply") from None
    except ValueError as exc:  # also an integer past Python's 4300-digit conversion limit
        raise InvalidJSON(f"the request body is not valid JSON ({exc})") from None


def _is_number(value: Any) -> bool:
    """A JSON number that is finite (1e400 parses as inf). An int is always finite: math.isfinite
    would raise OverflowError on one too large for a float."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_integer(value: Any) -> bool:
    """An integer as JSON Schema counts them: 3 and 3.0 alike, never true/false."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _optional_name(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string")
    if len(value) > MAX_NAME_CHARS:
        raise ValidationError(field, f"must be at most {MAX_NAME_CHARS} characters")
    # Model and worker names are printable ASCII everywhere we know of; anything else would
    # end up in response headers and log lines, where control characters must never go.
    if not all(" " <= ch <= "~" for ch in value):
        raise ValidationError(field, "must contain printable ASCII characters only")
    return value.strip()


def _content(where: str, raw: Any) -> str:
    """A string, or OpenAI's list of content parts when every part is text."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        texts = []
        for index, part in enumerate(raw):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                reason = f'part {index}: only text parts ({{"type": "text", "text": ...}}) are supported'
                raise ValidationError(where, reason)
            texts.append(part["text"])
        return "".join(texts)
    raise ValidationError(where, "must be a string or a list of text parts")


def _messages(raw: Any, roles: dict[str, str]) -> tuple[Message, ...]:
    if raw is None:
        raise ValidationError("messages", "is required")
    if not isinstance(raw, list):
        raise ValidationError("messages", "must be a list of {role, content} objects")
    if not raw:
        raise ValidationError("messages", "must contain at least one message")
    if len(raw) > MAX_MESSAGES:
        raise ValidationError("messages", f"must contain at most {MAX_MESSAGES} messages")
    out = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise ValidationError(where, "must be an object with 'role' and 'content'")
        raw_role = item.get("role")
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise ValidationError(f"{where}.role", f"must be one of {', '.join(roles)}")
        out.append(Message(role, _content(f"{where}.content", item.get("content"))))
    return tuple(out)


NATIVE_ROLES = {r: r for r in ROLES}
#: OpenAI's "developer" role is its newer name for system instructions.
OPENAI_ROLES = {**NATIVE_ROLES, "developer": "system"}


def _temperature(body: dict[str, Any]) -> float | None:
    value = body.get("temperature")
    if value is None:
        return None
    if not _is_number(value):
        raise ValidationError("temperature", "must be a number")
    if not 0 <= value <= 2:
        raise ValidationError("temperature", "must be between 0 and 2")
    return float(value)


def _top_p(body: dict[str, Any]) -> float | None:
    value = body.get("top_p")
    if value is None:
        return None
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValidationError("top_p", "must be a number between 0 and 1")
    return float(value)


def _max_tokens(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not _is_integer(value):
        raise ValidationError(field, "must be an integer")
    if value <= 0:
        raise ValidationError(field, "must be a positive integer")
    if value > MAX_MAX_TOKENS:
        raise ValidationError(field, f"must be at most {MAX_MAX_TOKENS}")
    return int(value)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ValidationError("stop", "must be a non-empty string or a list of them")
    if len(items) > MAX_STOP_SEQUENCES:
        raise ValidationError("stop", f"may hold at most {MAX_STOP_SEQUENCES} sequences")
    return tuple(items)


def _strategy(body: dict[str, Any]) -> str | None:
    raw = body.get("strategy")
    if raw is None:
        return None
    name = canonical_strategy(raw) if isinstance(raw, str) else None
    if name is None:
        raise ValidationError("strategy", f"must be one of {', '.join(sorted([*STRATEGIES, *ALIASES]))}")
    return name


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def parse_native_chat(body: Any) -> NativeChat:
    body = _object(body)
    stream_format = body.get("stream_format")
    if stream_format is not None and stream_format not in STREAM_FORMATS:
        raise ValidationError("stream_format", f"must be one of {', '.join(STREAM_FORMATS)}")
    chat = ChatRequest(
        messages=_messages(body.get("messages"), NATIVE_ROLES),
        model=_optional_name(body, "model"),
        provider=_optional_name(body, "provider"),
        temperature=_temperature(body),
        max_tokens=_max_tokens(body, "max_tokens"),
        top_p=_top_p(body),
        stop=_stop(body),
        strategy=_strategy(body),
    )
    return NativeChat(chat, stream_format)


def parse_openai_chat(body: Any) -> OpenAIChat:
    """OpenAI's chat-completions body. Known parameters are checked; unknown ones are ignored,
    as OpenAI-compatible servers do, so newer SDKs keep working."""
    body = _object(body)
    n = body.get("n")
    if n is not None and not (_is_integer(n) and n == 1):
        raise ValidationError("n", "only n = 1 is supported")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ValidationError("stream", "must be true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ValidationError("stream_options", "must be an object")
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ValidationError("stream_options.include_usage", "must be true or false")
    # Both are checked; OpenAI's newer name wins when both are given.
    legacy_max_tokens = _max_tokens(body, "max_tokens")
    max_tokens = _max_tokens(body, "max_completion_tokens")
    chat = ChatRequest(
        messages=_messages(body.get("messages"), OPENAI_ROLES),
        model=_optional_name(body, "model"),
        temperature=_temperature(body),
        max_tokens=max_tokens if max_tokens is not None else legacy_max_tokens,
        top_p=_top_p(body),
        stop=_stop(body),
        user=_optional_name(body, "user"),
    )
    return OpenAIChat(chat, stream, include_usage)
