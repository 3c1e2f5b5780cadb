"""Small pure helpers every protocol's request builder uses."""

from __future__ import annotations

import json
from typing import Any

from providers.base import ChatParams


def token_count(value: object) -> int | None:
    """A token count as a provider's decoded JSON gives it: an int, never a bool (JSON `true`
    is not 1 token); None for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def json_body(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: non-ASCII text as is (smaller than \\u escapes, and what the
    providers' own SDKs send)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sampling_fields(
    params: ChatParams,
    *,
    temperature: str | None = "temperature",
    max_tokens: str | None = "max_tokens",
    top_p: str | None = "top_p",
    stop: str | None = "stop",
) -> dict[str, Any]:
    """The sampling parameters the client set, under the provider's own names (None: the
    provider module sends that one itself, or not at all). Unset parameters are omitted, so
    the provider's defaults apply."""
    fields: dict[str, Any] = {}
    if temperature and params.temperature is not None:
        fields[temperature] = params.temperature
    if max_tokens and params.max_tokens is not None:
        fields[max_tokens] = params.max_tokens
    if top_p and params.top_p is not None:
        fields[top_p] = params.top_p
    if stop and params.stop:
        fields[stop] = list(params.stop)
    return fields
