"""Typed readers for configuration values: each turns one raw value (an environment string
or a TOML value) into a typed one, or raises `ConfigError` naming where the value came from
(`source`) and what is wrong with it. Pure functions; app/settings.py composes them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from app.keys import KEY_STRATEGIES
from providers.base import Timeouts


class ConfigError(ValueError):
    """Configuration is invalid; the message names the variable or key and the reason."""


#: Go's time.ParseDuration syntax, which Ollama applies to a keep_alive string ("5m", "1h30m").
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")


def number(source: str, raw: Any, *, minimum: float, maximum: float = math.inf, integer: bool = False) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{source}: expected a number, got {raw!r}")
    if isinstance(raw, str):
        try:
            raw = int(raw) if integer else float(raw)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{source}: expected {kind}, got {raw!r}") from None
    if integer and not isinstance(raw, int):
        raise ConfigError(f"{source}: expected an integer, got {raw!r}")
    if not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ConfigError(f"{source}: expected a number, got {raw!r}")
    if not minimum <= raw <= maximum:
        bound = f"between {minimum:g} and {maximum:g}" if math.isfinite(maximum) else f"at least {minimum:g}"
        raise ConfigError(f"{source}: must be {bound}, got {raw!r}")
    return raw


def boolean(source: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source}: expected true or false, got {raw!r}")


def url(source: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{source}: expected a URL string, got {raw!r}")
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: expected an http:// or https:// URL, got {raw!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{source}: put credentials in the key settings, not in the URL")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigError(f"{source}: the port in {raw!r} is invalid") from None
    return url


def string_list(source: str, raw: Any, what: str) -> tuple[str, ...]:
    """A comma-separated string or a TOML array of strings, stripped, empty items dropped."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{source}: expected a comma-separated list (or TOML array) of {what}")
    return tuple(item.strip() for item in items if item.strip())


def keys(source: str, raw: Any) -> tuple[str, ...]:
    keys = string_list(source, raw, "keys")
    for index, key in enumerate(keys):
        if any(ch.isspace() or ord(ch) < 32 for ch in key):
            raise ConfigError(f"{source}: key #{index + 1} contains whitespace or control characters")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{source}: the same key is listed twice")
    return keys


def names(source: str, raw: Any) -> tuple[str, ...]:
    return string_list(source, raw, "model names")


def priority(source: str, raw: Any) -> int:
    return int(number(source, raw, minimum=0, maximum=1_000_000, integer=True))


def rpm(source: str, raw: Any) -> int:
    return int(number(source, raw, minimum=1, maximum=1_000_000, integer=True))


def worker_name(source: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > 64 or not all(c.isalnum() or c in "-_." for c in raw):
        raise ConfigError(f"{source}: worker names are 1-64 letters, digits, '-', '_' or '.', got {raw!r}")
    return raw


def timeouts(source: str, raw: Mapping[str, Any], base: Timeouts) -> Timeouts:
    reject_unknown(source, raw, {"connect", "first_token", "idle", "total"})
    values = {k: number(f"{source}.{k}", v, minimum=0.001, maximum=86400) for k, v in raw.items()}
    return replace(base, **values)


def reject_unknown(source: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def table(source: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a table")
    return raw


def key_strategy(source: str, raw: Any) -> str:
    name = str(raw).strip().lower()
    if name not in KEY_STRATEGIES:
        raise ConfigError(f"{source}: unknown key strategy {raw!r} (known: {', '.join(KEY_STRATEGIES)})")
    return name


def keep_alive(source: str, raw: Any) -> str | None:
    """Ollama accepts a duration string ("5m", "1h30m") or a number of seconds (-1: forever).
    Checked here because Ollama answers every request with a 400 if it cannot parse it."""
    if raw is None:
        return None
    text = str(raw).strip() if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
    try:
        valid = math.isfinite(float(text))
    except ValueError:
        valid = _GO_DURATION.fullmatch(text) is not None
    if not valid:
        raise ConfigError(f'{source}: expected a duration such as "5m" or a number of seconds, got {raw!r}')
    return text
