"""Configuration: parsed once, purely, into frozen dataclasses (rule 2).

Environment variables are the primary interface; an optional TOML file (`CORTEX_CONFIG`)
describes many workers with names, priorities and models. Environment scalars override the
file's; workers from both are combined. Anything invalid raises `ConfigError` naming the
variable or TOML key and what is wrong, so a bad deployment fails at start-up, loudly.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app import config_values as values
from app.config_values import ConfigError
from app.edge_settings import TOP_KEYS as EDGE_KEYS
from app.edge_settings import Edges, load_edges
from app.strategies import ALIASES, STRATEGIES, canonical_strategy
from providers.base import Timeouts
from providers.catalog import PRESETS, PROVIDERS, Preset
from providers.demo import DEMO_MODEL

PROVIDER_TYPES = (*PROVIDERS, "demo")
DEMO_PRIORITY = 1000
COMPAT_PRIORITY = PROVIDERS["openai_compat"].default_priority


@dataclass(frozen=True, slots=True)
class UrlList:
    """A variable that lists servers by URL, one worker each (`<prefix>_URLS`)."""

    prefix: str
    provider: str
    #: Unnamed workers are `<stem>-1`, `<stem>-2`...; a lone one is plain `<stem>` when
    #: `lone_is_stem` (OLLAMA_URLS), but keeps `compat-1` for OPENAI_COMPAT_URLS, as documented.
    stem: str
    lone_is_stem: bool


URL_LISTS: tuple[UrlList, ...] = (
    UrlList("OPENAI_COMPAT", "openai_compat", "compat", lone_is_stem=False),
    UrlList("OLLAMA", "ollama", "ollama", lone_is_stem=True),
)


@dataclass(frozen=True)
class WorkerSpec:
    """One configured upstream endpoint. Keys are never part of its repr (rule 15)."""

    name: str
    provider: str
    base_url: str = ""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    models: tuple[str, ...] = ()
    default_model: str | None = None
    priority: int = COMPAT_PRIORITY
    timeouts: Timeouts = Timeouts()
    stream_usage: bool = True
    extra_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    preset: str | None = None
    #: False: ask the upstream for whole answers (for servers whose streaming is broken).
    stream: bool = True
    #: Ollama's keep_alive ("5m", "-1", "0"), passed through when set.
    keep_alive: str | None = None
    #: Key rotation (app.keys.KEY_STRATEGIES); None means the global KEY_STRATEGY, which
    #: load_settings fills in, so every loaded spec carries a concrete one.
    key_strategy: str | None = None
    #: Requests per minute each of this worker's keys may receive (a free tier's quota), kept
    #: by Cortex so the provider never has to answer 429; None: no limit of ours.
    rpm: int | None = None


@dataclass(frozen=True)
class Settings:
    workers: tuple[WorkerSpec, ...] = ()
    routing_strategy: str = "priority"
    health_check_interval: float = 30.0
    health_check_timeout: float = 5.0
    #: A health probe slower than this marks the worker degraded (still used, but noted).
    degraded_latency: float = 2.0
    timeouts: Timeouts = Timeouts()
    demo_delay: float = 0.04
    #: How long a key rests after a 429 that carried no Retry-After.
    key_cooldown: float = 60.0
    max_body_bytes: int = 1 << 20
    upstream_pool_size: int = 1000
    log_level: str = "INFO"
    #: Seconds between SSE keep-alive comments while the first token is awaited; also how
    #: long a streamed request waits for a real status code before committing a 200.
    sse_keepalive_interval: float = 15.0
    #: A stream whose client has not read for this long is closed (0: never), so a client
    #: that stops reading does not hold its upstream and a connection slot forever.
    client_send_timeout: float = 60.0
    #: Model aliases: name -> target ("provider/model", a model, or another alias).
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    #: Key rotation for workers that do not choose their own.
    key_strategy: str = "round_robin"
    #: Consecutive live failures that open a worker's circuit (0: no circuit breaker).
    circuit_failures: int = 5
    #: How long an open circuit skips its worker before one trial request.
    circuit_cooldown: float = 30.0
    #: Attempts per request, failovers included (0: as many as the time budget allows).
    max_attempts: int = 6
    #: Full-jitter exponential backoff before retrying a worker that just failed.
    retry_backoff_base: float = 0.25
    retry_backoff_max: float = 2.0
    #: The latency strategy's exploration probability (epsilon).
    latency_explore: float = 0.1
    #: Rate limits, CORS, auth, logs and shared state (app/edge_settings.py).
    edges: Edges = Edges()

    @property
    def demo_only(self) -> bool:
        return bool(self.workers) and all(w.provider == "demo" for w in self.workers)


# --- workers from the environment ----------------------------------------------------------


def _preset_workers(env: Mapping[str, str], timeouts: Timeouts, claimed: set[str]) -> list[WorkerSpec]:
    """GROQ_API_KEYS, GEMINI_API_KEYS etc.: one worker per preset whose keys are set, unless a
    TOML worker already takes its keys from that variable (`api_keys_env = "GROQ_API_KEYS"`):
    then the file describes that worker, and the variable must not add a second one."""
    workers = []
    for preset in PRESETS.values():
        prefix = preset.name.upper()
        raw_keys = env.get(f"{prefix}_API_KEYS", "")
        if not raw_keys.strip() or f"{prefix}_API_KEYS" in claimed:
            continue
        model = env.get(f"{prefix}_MODEL", "").strip() or preset.default_model
        priority = env.get(f"{prefix}_PRIORITY")
        base_url = env.get(f"{prefix}_BASE_URL")
        rpm = env.get(f"{prefix}_RPM", "").strip()
        workers.append(
            WorkerSpec(
                name=preset.name,
                provider=preset.provider,
                preset=preset.name,
                base_url=values.url(f"{prefix}_BASE_URL", base_url) if base_url else preset.base_url,
                api_keys=values.keys(f"{prefix}_API_KEYS", raw_keys),
                models=(model,),
                default_model=model,
                priority=values.priority(f"{prefix}_PRIORITY", priority) if priority else preset.priority,
                timeouts=timeouts,
                rpm=values.rpm(f"{prefix}_RPM", rpm) if rpm else None,
            )
        )
    return workers


def _url_workers(env: Mapping[str, str], timeouts: Timeouts, spec: UrlList) -> list[WorkerSpec]:
    """OPENAI_COMPAT_URLS / OLLAMA_URLS = url,url or name=url,name=url: one worker per URL,
    sharing the prefix's keys, model and priority."""
    prefix, provider, stem = spec.prefix, spec.provider, spec.stem
    var = f"{prefix}_URLS"
    entries = [e.strip() for e in env.get(var, "").split(",") if e.strip()]
    if not entries:
        return []
    keys = values.keys(f"{prefix}_API_KEYS", env.get(f"{prefix}_API_KEYS", ""))
    model = env.get(f"{prefix}_MODEL", "").strip() or None
    priority_raw = env.get(f"{prefix}_PRIORITY")
    priority = (
        values.priority(f"{prefix}_PRIORITY", priority_raw) if priority_raw else PROVIDERS[provider].default_priority
    )
    keep_alive = values.keep_alive(f"{prefix}_KEEP_ALIVE", env.get(f"{prefix}_KEEP_ALIVE", "").strip() or None)
    rpm_raw = env.get(f"{prefix}_RPM", "").strip()
    rpm = values.rpm(f"{prefix}_RPM", rpm_raw) if rpm_raw else None
    workers = []
    for index, entry in enumerate(entries, start=1):
        name, sep, url = entry.partition("=")
        if not sep or "://" in name:  # unnamed (an "=" inside the URL is not a name)
            name, url = (stem if len(entries) == 1 and spec.lone_is_stem else f"{stem}-{index}"), entry
        workers.append(
            WorkerSpec(
                name=values.worker_name(var, name.strip()),
                provider=provider,
                base_url=values.url(var, url),
                api_keys=keys,
                models=(model,) if model else (),
                default_model=model,
                priority=priority,
                timeouts=timeouts,
                keep_alive=keep_alive,
                rpm=rpm,
            )
        )
    return workers


# --- workers from TOML -------------------------------------------------------------------

_WORKER_KEYS = {
    "name", "provider", "preset", "base_url", "api_keys", "api_keys_env", "models",
    "default_model", "priority", "timeouts", "stream_usage", "headers", "stream", "keep_alive", "key_strategy",
    "rpm",
}  # fmt: skip


def _toml_keys(src: str, table: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
    if "api_keys" in table and "api_keys_env" in table:
        raise ConfigError(f"{src}: give api_keys or api_keys_env, not both")
    if "api_keys" in table:
        return values.keys(f"{src}.api_keys", table["api_keys"])
    if "api_keys_env" in table:
        var = table["api_keys_env"]
        if not isinstance(var, str) or var not in env:
            raise ConfigError(f"{src}.api_keys_env: environment variable {var!r} is not set")
        return values.keys(var, env[var])
    return ()


def _toml_models(
    src: str, table: Mapping[str, Any], provider: str, preset: Preset | None
) -> tuple[tuple[str, ...], str | None]:
    """(models, default model): the demo serves its own; a preset brings its default model."""
    models = values.names(f"{src}.models", table.get("models", []))
    default_model = table.get("default_model")
    if default_model is not None and not (isinstance(default_model, str) and default_model.strip()):
        raise ConfigError(f"{src}.default_model: expected a model name")
    if provider == "demo":
        return models or (DEMO_MODEL,), default_model or DEMO_MODEL
    if default_model is None:
        default_model = models[0] if models else (preset.default_model if preset else None)
    if preset and not models and default_model:
        models = (default_model,)
    return models, default_model


def _toml_worker(
    index: int, raw: Any, env: Mapping[str, str], timeouts: Timeouts, where: str | None = None
) -> WorkerSpec:
    """One `[[workers]]` table; `where` names it in errors (default: its place in the file)."""
    where = where or f"CORTEX_CONFIG workers[{index}]"
    table = values.table(where, raw)
    values.reject_unknown(where, table, _WORKER_KEYS)
    name = values.worker_name(f"{where}.name", table.get("name"))
    src = f"{where} ({name})"
    preset = None
    if "preset" in table:
        preset = PRESETS.get(table["preset"]) if isinstance(table["preset"], str) else None
        if preset is None:
            raise ConfigError(f"{src}.preset: unknown preset {table['preset']!r} (known: {', '.join(PRESETS)})")
    provider = table.get("provider", preset.provider if preset else "openai_compat")
    if provider not in PROVIDER_TYPES:
        raise ConfigError(f"{src}.provider: unknown provider {provider!r} (known: {', '.join(PROVIDER_TYPES)})")
    if preset is not None and preset.provider != provider:
        raise ConfigError(f"{src}.preset: {preset.name!r} is a {preset.provider} preset, not {provider}")
    base_url = ""
    if provider != "demo":
        raw_url = table.get("base_url", preset.base_url if preset else None)
        if raw_url is None:
            raise ConfigError(f"{src}.base_url: required for provider {provider!r}")
        base_url = values.url(f"{src}.base_url", raw_url)
    models, default_model = _toml_models(src, table, provider, preset)
    default_priority = (
        preset.priority if preset else (DEMO_PRIORITY if provider == "demo" else PROVIDERS[provider].default_priority)
    )
    headers = values.table(f"{src}.headers", table.get("headers", {}))
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{src}.headers: expected a table of string values")
    return WorkerSpec(
        name=name,
        provider=provider,
        preset=preset.name if preset else None,
        base_url=base_url,
        api_keys=_toml_keys(src, table, env),
        models=models,
        default_model=default_model,
        priority=values.priority(f"{src}.priority", table.get("priority", default_priority)),
        timeouts=values.timeouts(
            f"{src}.timeouts", values.table(f"{src}.timeouts", table.get("timeouts", {})), timeouts
        ),
        stream_usage=values.boolean(f"{src}.stream_usage", table.get("stream_usage", True)),
        extra_headers=dict(headers),
        stream=values.boolean(f"{src}.stream", table.get("stream", True)),
        keep_alive=values.keep_alive(f"{src}.keep_alive", table.get("keep_alive")),
        key_strategy=values.key_strategy(f"{src}.key_strategy", table["key_strategy"])
        if "key_strategy" in table
        else None,
        rpm=values.rpm(f"{src}.rpm", table["rpm"]) if "rpm" in table else None,
    )


# --- the whole ---------------------------------------------------------------------------

_TOP_KEYS = {
    "routing_strategy", "health_check_interval", "health_check_timeout", "degraded_latency",
    "demo_provider", "demo_delay_ms", "key_cooldown", "max_body_bytes", "upstream_pool_size", "log_level", "timeouts", "workers",
    "sse_keepalive_interval", "client_send_timeout", "aliases",
    "key_strategy", "circuit_failures", "circuit_cooldown", "max_attempts", "retry_backoff_base", "retry_backoff_max",
    "latency_explore", *EDGE_KEYS,
}  # fmt: skip

#: (environment variable, TOML key) of every top-level scalar.
_SCALARS: tuple[tuple[str, str], ...] = (
    ("ROUTING_STRATEGY", "routing_strategy"),
    ("HEALTH_CHECK_INTERVAL", "health_check_interval"),
    ("HEALTH_CHECK_TIMEOUT", "health_check_timeout"),
    ("HEALTH_DEGRADED_LATENCY", "degraded_latency"),
    ("DEMO_PROVIDER", "demo_provider"),
    ("DEMO_DELAY_MS", "demo_delay_ms"),
    ("KEY_COOLDOWN", "key_cooldown"),
    ("MAX_BODY_BYTES", "max_body_bytes"),
    ("UPSTREAM_POOL_SIZE", "upstream_pool_size"),
    ("LOG_LEVEL", "log_level"),
    ("SSE_KEEPALIVE_INTERVAL", "sse_keepalive_interval"),
    ("CLIENT_SEND_TIMEOUT", "client_send_timeout"),
    ("KEY_STRATEGY", "key_strategy"),
    ("CIRCUIT_FAILURES", "circuit_failures"),
    ("CIRCUIT_COOLDOWN", "circuit_cooldown"),
    ("MAX_ATTEMPTS", "max_attempts"),
    ("RETRY_BACKOFF_BASE", "retry_backoff_base"),
    ("RETRY_BACKOFF_MAX", "retry_backoff_max"),
    ("LATENCY_EXPLORE", "latency_explore"),
)
_TIMEOUT_ENV = (
    ("CONNECT_TIMEOUT", "connect"),
    ("FIRST_TOKEN_TIMEOUT", "first_token"),
    ("IDLE_TIMEOUT", "idle"),
    ("REQUEST_TIMEOUT", "total"),
)


def _parse_toml(toml_text: str | None) -> dict[str, Any]:
    if not toml_text:
        return {}
    try:
        doc = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"CORTEX_CONFIG: not valid TOML ({exc})") from None
    values.reject_unknown("CORTEX_CONFIG", doc, _TOP_KEYS)
    return doc


def _scalars(env: Mapping[str, str], doc: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each scalar's (source name, raw value); the environment wins over the file."""
    found: dict[str, tuple[str, Any]] = {}
    for var, key in _SCALARS:
        if env.get(var, "").strip():
            found[key] = (var, env[var].strip())
        elif key in doc:
            found[key] = (f"CORTEX_CONFIG {key}", doc[key])
    return found


def _global_timeouts(env: Mapping[str, str], doc: Mapping[str, Any]) -> Timeouts:
    table = values.table("CORTEX_CONFIG timeouts", doc.get("timeouts", {}))
    timeouts = values.timeouts("CORTEX_CONFIG timeouts", table, Timeouts())
    for var, key in _TIMEOUT_ENV:
        if env.get(var, "").strip():
            timeouts = replace(timeouts, **{key: values.number(var, env[var], minimum=0.001, maximum=86400)})
    return timeouts


def _demo_worker(mode: str, source: str, real_workers: list[WorkerSpec], timeouts: Timeouts) -> list[WorkerSpec]:
    mode = str(mode).strip().lower()
    if mode not in ("auto", "on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{source}: expected auto, on or off, got {mode!r}")
    enabled = not real_workers if mode == "auto" else values.boolean(source, mode)
    if not enabled or any(w.provider == "demo" for w in real_workers):
        return []
    return [
        WorkerSpec(
            name="demo",
            provider="demo",
            models=(DEMO_MODEL,),
            default_model=DEMO_MODEL,
            priority=DEMO_PRIORITY,
            timeouts=timeouts,
        )
    ]


def _resilience(scalars: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """The retry, circuit and rotation knobs, as keyword arguments for Settings."""

    def number(key: str, default: float, **bounds: Any) -> float:
        source, raw = scalars.get(key, (key, default))
        return values.number(source, raw, **bounds)

    base = number("retry_backoff_base", 0.25, minimum=0, maximum=60)
    cap = number("retry_backoff_max", 2.0, minimum=0, maximum=600)
    if cap < base:
        source = scalars.get("retry_backoff_max", ("RETRY_BACKOFF_MAX",))[0]
        raise ConfigError(f"{source}: must be at least the backoff base ({base:g}), got {cap:g}")
    key_source, key_raw = scalars.get("key_strategy", ("KEY_STRATEGY", "round_robin"))
    return {
        "key_strategy": values.key_strategy(key_source, key_raw),
        "circuit_failures": int(number("circuit_failures", 5, minimum=0, maximum=10_000, integer=True)),
        "circuit_cooldown": number("circuit_cooldown", 30.0, minimum=0.1, maximum=86400),
        "max_attempts": int(number("max_attempts", 6, minimum=0, maximum=1000, integer=True)),
        "retry_backoff_base": base,
        "retry_backoff_max": cap,
        "latency_explore": number("latency_explore", 0.1, minimum=0, maximum=1),
    }


def load_settings(environ: Mapping[str, str], toml_text: str | None = None) -> Settings:
    """Build Settings from an environment mapping and the TOML file's text (if any)."""
    doc = _parse_toml(toml_text)
    scalars = _scalars(environ, doc)
    timeouts = _global_timeouts(environ, doc)

    strategy_source, strategy_raw = scalars.get("routing_strategy", ("ROUTING_STRATEGY", "priority"))
    strategy = canonical_strategy(str(strategy_raw))
    if strategy is None:
        known = ", ".join(sorted([*STRATEGIES, *ALIASES]))
        raise ConfigError(f"{strategy_source}: unknown routing strategy {strategy_raw!r} (known: {known})")

    def number(key: str, default: float, **bounds: Any) -> float:
        source, raw = scalars.get(key, (key, default))
        return values.number(source, raw, **bounds)

    toml_workers = doc.get("workers", [])
    if not isinstance(toml_workers, list):
        raise ConfigError("CORTEX_CONFIG workers: expected an array of tables ([[workers]])")
    workers = [_toml_worker(i, t, environ, timeouts) for i, t in enumerate(toml_workers)]
    claimed = {
        t["api_keys_env"] for t in toml_workers if isinstance(t, dict) and isinstance(t.get("api_keys_env"), str)
    }
    workers += _preset_workers(environ, timeouts, claimed)
    for url_list in URL_LISTS:
        workers += _url_workers(environ, timeouts, url_list)
    real = [w for w in workers if w.provider != "demo"]
    demo_source, demo_mode = scalars.get("demo_provider", ("DEMO_PROVIDER", "auto"))
    workers += _demo_worker(demo_mode, demo_source, real, timeouts)
    resilience = _resilience(scalars)
    workers = [w if w.key_strategy else replace(w, key_strategy=resilience["key_strategy"]) for w in workers]

    seen: set[str] = set()
    for worker in workers:
        if worker.name in seen:
            raise ConfigError(f"worker name {worker.name!r} is used twice (names must be unique)")
        seen.add(worker.name)

    level_source, level = scalars.get("log_level", ("LOG_LEVEL", "INFO"))
    level = str(level).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{level_source}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")

    return Settings(
        workers=tuple(workers),
        routing_strategy=strategy,
        health_check_interval=number("health_check_interval", 30.0, minimum=0, maximum=86400),
        health_check_timeout=number("health_check_timeout", 5.0, minimum=0.01, maximum=600),
        degraded_latency=number("degraded_latency", 2.0, minimum=0.001, maximum=600),
        timeouts=timeouts,
        demo_delay=number("demo_delay_ms", 40, minimum=0, maximum=10_000) / 1000,
        key_cooldown=number("key_cooldown", 60.0, minimum=0, maximum=86400),
        max_body_bytes=int(number("max_body_bytes", 1 << 20, minimum=1024, maximum=1 << 30, integer=True)),
        upstream_pool_size=int(number("upstream_pool_size", 1000, minimum=1, maximum=100_000, integer=True)),
        log_level=level,
        sse_keepalive_interval=number("sse_keepalive_interval", 15.0, minimum=0, maximum=3600),
        client_send_timeout=number("client_send_timeout", 60.0, minimum=0, maximum=86400),
        model_aliases=_aliases(environ, doc),
        edges=load_edges(environ, doc),
        **resilience,
    )


def _aliases(env: Mapping[str, str], doc: Mapping[str, Any]) -> dict[str, str]:
    """MODEL_ALIASES=fast=groq/llama-3.1-8b-instant,smart=gemini/gemini-2.5-flash, and the TOML
    [aliases] table; the environment wins for a name given in both."""
    aliases: dict[str, str] = {}
    table = values.table("CORTEX_CONFIG aliases", doc.get("aliases", {}))
    items: list[tuple[str, str, Any]] = [(f"CORTEX_CONFIG aliases.{k}", k, v) for k, v in table.items()]
    for entry in (e.strip() for e in env.get("MODEL_ALIASES", "").split(",")):
        if entry:
            name, sep, target = entry.partition("=")
            if not sep:
                raise ConfigError(f"MODEL_ALIASES: expected name=target, got {entry!r}")
            items.append(("MODEL_ALIASES", name.strip(), target.strip()))
    for source, name, target in items:
        if not isinstance(target, str) or not target or not name or not all(" " < c <= "~" for c in name + target):
            raise ConfigError(
                f"{source}: an alias and its target are non-empty printable names, got {name!r}={target!r}"
            )
        aliases[name] = target
    for name in aliases:
        seen = {name}
        target = aliases[name]
        while target in aliases:
            if target in seen:
                raise ConfigError(f"model alias {name!r} refers to itself through {target!r}")
            seen.add(target)
            target = aliases[target]
    return aliases


def parse_worker(raw: Any, env: Mapping[str, str], settings: Settings, where: str = "worker") -> WorkerSpec:
    """One worker given at runtime (the admin API) in exactly the shape of a `[[workers]]`
    table, with the running settings' timeouts and key strategy as its defaults."""
    spec = _toml_worker(0, raw, env, settings.timeouts, where)
    return spec if spec.key_strategy else replace(spec, key_strategy=settings.key_strategy)


def load_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The production entry point: reads the TOML file named by CORTEX_CONFIG, if any."""
    env = os.environ if environ is None else environ
    return load_settings(env, read_config(env))


def read_config(env: Mapping[str, str]) -> str | None:
    """The text of the TOML file named by CORTEX_CONFIG; None when it is unset."""
    path = env.get("CORTEX_CONFIG", "").strip()
    text = None
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError(f"CORTEX_CONFIG: cannot read {path!r} ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"CORTEX_CONFIG: {path!r} is not UTF-8 text") from None
    return text
