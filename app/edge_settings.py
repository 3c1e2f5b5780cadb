"""Configuration of the edges: rate limits, CORS, client and admin auth, logs, shared state.

Parsed purely like the rest of the settings (rule 2), from the environment and the TOML
file; `load_settings` calls `load_edges` and stores the result as `Settings.edges`. Kept
apart from app/settings.py because none of it describes a worker.

Rate-limit strings use flask-limiter's notation ("60/minute;1000/hour", "10 per second").
They are checked here with the same grammar rather than by importing `limits`, because
gunicorn's master validates the configuration before forking and must not import
networking libraries before gevent patches the workers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app import config_values as values
from app.config_values import ConfigError

#: One limit: "N/unit", "N per unit", "N/M units" (the grammar of limits.parse_many).
_ONE_LIMIT = re.compile(r"\s*\d+\s*(?:/|\s+per\s+)\s*(?:\d+\s+)?(?:second|minute|hour|day|month|year)s?\s*", re.I)
_SEPARATORS = re.compile(r"[;,|]")
LOG_FORMATS = ("text", "json")
#: Storage schemes flask-limiter can use here (the redis client is a runtime dependency).
STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
#: REDIS_URL schemes: one Redis server (shared state needs publish/subscribe on one server).
REDIS_SCHEMES = ("redis", "rediss", "redis+unix")


@dataclass(frozen=True)
class ClientSpec:
    """A client of the gateway: one accepted API key, its name (for logs, metrics and rate-limit
    buckets, so the key itself is never needed there) and its own limit, if any."""

    name: str
    key: str = field(repr=False)
    #: Replaces RATE_LIMIT for this client ("600/minute"); None: RATE_LIMIT applies.
    rate_limit: str | None = None


@dataclass(frozen=True)
class Edges:
    #: Limits per client (key or IP) on the chat routes; None: unlimited.
    rate_limit: str | None = None
    #: flask-limiter storage; None: one file shared by this machine's processes (or memory
    #: outside gunicorn), see app/limiting.py.
    ratelimit_storage_uri: str | None = field(default=None, repr=False)
    #: Proxies in front of Cortex whose X-Forwarded-For is trusted (werkzeug ProxyFix x_for).
    trusted_proxies: int = 0
    #: Origins allowed by CORS: () none, ("*",) any, else exact origins.
    cors_origins: tuple[str, ...] = ()
    #: Accepted client keys; () means client auth is off.
    clients: tuple[ClientSpec, ...] = ()
    #: Enables /api/admin; None: the admin API does not exist (404).
    admin_token: str | None = field(default=None, repr=False)
    log_format: str = "text"
    #: Log message content (prompts and answers). Off: logs carry sizes, never text.
    log_content: bool = False
    #: A directory private to this Cortex instance, shared by its worker processes (admin
    #: journal, rate-limit file, Prometheus multiprocess files). gunicorn.conf.py creates one
    #: when CORTEX_STATE_DIR is unset; None outside gunicorn: everything stays in-process.
    state_dir: str | None = None
    #: Shared state of every instance (key cooldowns, disabled keys, circuits; and the limit
    #: counters unless RATELIMIT_STORAGE_URI says otherwise); None: each process keeps its own.
    redis_url: str | None = field(default=None, repr=False)
    #: This instance's name in /api/health and shared-state events; None: hostname:PORT.
    instance_id: str | None = None

    @property
    def auth_required(self) -> bool:
        return bool(self.clients)


TOP_KEYS = frozenset(
    {"rate_limit", "ratelimit_storage_uri", "trusted_proxies", "cors_origins", "clients", "log_format", "log_content",
     "redis_url", "instance_id"}
)  # fmt: skip
_CLIENT_KEYS = {"name", "key", "key_env", "rate_limit"}


def rate_limit(source: str, raw: Any) -> str | None:
    """A limit string, normalised to ';'-separated parts; None for an empty one."""
    if not isinstance(raw, str):
        raise ConfigError(f"{source}: expected a string such as '60/minute;1000/hour', got {raw!r}")
    parts = [p.strip() for p in _SEPARATORS.split(raw) if p.strip()]
    for part in parts:
        if not _ONE_LIMIT.fullmatch(part):
            raise ConfigError(
                f"{source}: {part!r} is not a rate limit; write e.g. '60/minute', '10 per second' or '1000/hour'"
            )
    return ";".join(parts) or None


def storage_uri(source: str, raw: Any) -> str | None:
    text = str(raw).strip()
    if not text:
        return None
    scheme = urlsplit(text).scheme
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(f"{source}: expected a {' / '.join(s + '://' for s in STORAGE_SCHEMES)} URI")
    return text


def redis_url(source: str, raw: Any) -> str | None:
    text = str(raw).strip()
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(f"{source}: expected a {' / '.join(s + '://' for s in REDIS_SCHEMES)} URI")
    if parts.scheme == "redis+unix" and not parts.path:
        raise ConfigError(f"{source}: redis+unix:// needs a socket path, e.g. redis+unix:///run/redis/redis.sock")
    if parts.scheme != "redis+unix" and not parts.hostname:
        raise ConfigError(f"{source}: expected a host, e.g. redis://127.0.0.1:6379/0")
    return text


def instance_id(source: str, raw: Any) -> str | None:
    text = str(raw).strip()
    if not text:
        return None
    if len(text) > 128 or not all(ch.isprintable() and not ch.isspace() for ch in text):
        raise ConfigError(f"{source}: expected 1-128 printable characters without whitespace, got {text!r}")
    return text


def origins(source: str, raw: Any) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(o.rstrip("/") for o in values.string_list(source, raw, "origins, or '*'")))
    if "*" in found:
        if len(found) > 1:
            raise ConfigError(f"{source}: '*' allows every origin; list origins or give '*' alone")
        return found
    for origin in found:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ConfigError(f"{source}: an origin is scheme://host[:port], got {origin!r}")
    return found


def _secret(source: str, raw: str) -> str:
    text = raw.strip()
    if len(text) < 8 or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise ConfigError(f"{source}: expected at least 8 characters without whitespace")
    return text


def _clients(env: Mapping[str, str], doc: Mapping[str, Any]) -> tuple[ClientSpec, ...]:
    """CORTEX_API_KEYS=k1,k2 (clients `key-1`, `key-2`) and TOML [[clients]] tables."""
    clients = [
        ClientSpec(f"key-{i}", _secret("CORTEX_API_KEYS", key))
        for i, key in enumerate(values.keys("CORTEX_API_KEYS", env.get("CORTEX_API_KEYS", "")), start=1)
    ]
    tables = doc.get("clients", [])
    if not isinstance(tables, list):
        raise ConfigError("CORTEX_CONFIG clients: expected an array of tables ([[clients]])")
    for index, raw in enumerate(tables):
        src = f"CORTEX_CONFIG clients[{index}]"
        table = values.table(src, raw)
        values.reject_unknown(src, table, _CLIENT_KEYS)
        name = values.worker_name(f"{src}.name", table.get("name"))
        if ("key" in table) == ("key_env" in table):
            raise ConfigError(f"{src} ({name}): give key or key_env (exactly one)")
        if "key_env" in table:
            var = table["key_env"]
            if not isinstance(var, str) or not env.get(var, "").strip():
                raise ConfigError(f"{src} ({name}).key_env: environment variable {var!r} is not set")
            key = _secret(var, env[var])
        else:
            if not isinstance(table["key"], str):
                raise ConfigError(f"{src} ({name}).key: expected a string")
            key = _secret(f"{src} ({name}).key", table["key"])
        limit = rate_limit(f"{src} ({name}).rate_limit", table["rate_limit"]) if "rate_limit" in table else None
        clients.append(ClientSpec(name, key, limit))
    names = [c.name for c in clients]
    keys = [c.key for c in clients]
    if len(set(names)) != len(names):
        raise ConfigError("client names must be unique (CORTEX_API_KEYS makes key-1, key-2, ...)")
    if len(set(keys)) != len(keys):
        raise ConfigError("the same client key is configured twice")
    return tuple(clients)


def load_edges(env: Mapping[str, str], doc: Mapping[str, Any]) -> Edges:
    def pick(var: str, key: str) -> tuple[str, Any] | None:
        if env.get(var, "").strip():
            return var, env[var].strip()
        if key in doc:
            return f"CORTEX_CONFIG {key}", doc[key]
        return None

    limit = pick("RATE_LIMIT", "rate_limit")
    storage = pick("RATELIMIT_STORAGE_URI", "ratelimit_storage_uri")
    proxies = pick("TRUSTED_PROXIES", "trusted_proxies")
    cors = pick("CORS_ORIGINS", "cors_origins")
    log_format = pick("LOG_FORMAT", "log_format")
    log_content = pick("LOG_CONTENT", "log_content")
    redis = pick("REDIS_URL", "redis_url")
    instance = pick("INSTANCE_ID", "instance_id")
    admin = env.get("CORTEX_ADMIN_TOKEN", "")
    fmt = str(log_format[1]).strip().lower() if log_format else "text"
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"{log_format[0] if log_format else 'LOG_FORMAT'}: expected text or json, got {fmt!r}")
    state_dir = env.get("CORTEX_STATE_DIR", "").strip() or None
    return Edges(
        rate_limit=rate_limit(*limit) if limit else None,
        ratelimit_storage_uri=storage_uri(*storage) if storage else None,
        trusted_proxies=int(values.number(*proxies, minimum=0, maximum=10, integer=True)) if proxies else 0,
        cors_origins=origins(*cors) if cors else (),
        clients=_clients(env, doc),
        admin_token=_secret("CORTEX_ADMIN_TOKEN", admin) if admin.strip() else None,
        log_format=fmt,
        log_content=values.boolean(*log_content) if log_content else False,
        state_dir=state_dir,
        redis_url=redis_url(*redis) if redis else None,
        instance_id=instance_id(*instance) if instance else None,
    )
