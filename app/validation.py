"""Request bodies in, typed `ChatRequest` out, or a `ValidationError` naming the field.

Views never look inside a raw body; everything past this module is typed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidJSON, UnsupportedMediaType, ValidationError
from providers.base import ROLES, ChatParams, Message

MAX_MESSAGES = 1000
MAX_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    provider: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def params(self, model: str) -> ChatParams:
        return ChatParams(self.messages, model, self.temperature, self.max_tokens)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json_body(data: bytes, content_type: str | None) -> Any:
    """Parse a JSON body strictly: UTF-8, no NaN/Infinity, bounded nesting."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: application/json' (got {media!r})")
    if not data.strip():
        raise InvalidJSON("the request body is empty; expected a JSON object")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidJSON("the request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidJSON("the JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidJSON(f"the request body is not valid JSON ({exc})") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


def _messages(raw: Any) -> tuple[Message, ...]:
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
        role = item.get("role")
        if role not in ROLES:
            raise ValidationError(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        content = item.get("content")
        if not isinstance(content, str):
            raise ValidationError(f"{where}.content", "must be a string")
        out.append(Message(role, content))
    return tuple(out)


def parse_chat_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature):
            raise ValidationError("temperature", "must be a number")
        if not 0 <= temperature <= 2:
            raise ValidationError("temperature", "must be between 0 and 2")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise ValidationError("max_tokens", "must be an integer")
        if max_tokens <= 0:
            raise ValidationError("max_tokens", "must be a positive integer")
        if max_tokens > 10_000_000:
            raise ValidationError("max_tokens", "is unreasonably large")
    return ChatRequest(
        messages=_messages(body.get("messages")),
        model=_optional_name(body, "model"),
        provider=_optional_name(body, "provider"),
        temperature=float(temperature) if temperature is not None else None,
        max_tokens=max_tokens,
    )
