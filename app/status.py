"""The bodies of GET /api/health and GET /api/providers, built from cached state only.

Pure functions of the pool, the latest health snapshot and the time: nothing here probes
an upstream, so these endpoints answer instantly even when every upstream hangs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.circuit import OPEN
from app.health import DEGRADED, HEALTHY, UNAVAILABLE, UNKNOWN, HealthSnapshot
from app.pool import Worker, WorkerPool


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status(worker: Worker, snapshot: HealthSnapshot, now: float) -> tuple[str, float | None]:
    """The worker's status, also 'unavailable' while every key rests or its circuit is open;
    and when it returns (None when usable now, inf when every key is disabled)."""
    back = worker.keys.available_at(now)
    if back is not None:
        return UNAVAILABLE, back
    if worker.circuit.state(now) == OPEN:
        return UNAVAILABLE, worker.circuit.opened_until
    return snapshot.of(worker.name).status, None


def _circuit(worker: Worker, now: float) -> dict[str, Any]:
    circuit = worker.circuit
    return {
        "state": circuit.state(now),
        "consecutive_failures": circuit.consecutive_failures,
        "open_until": _iso(circuit.opened_until),
    }


def _key_states(worker: Worker, now: float) -> list[dict[str, Any]]:
    """Per-key counters, by position: not even a masked key goes into a public endpoint."""
    return [
        {"key": index + 1, **{k: v for k, v in stats.items() if k != "key"}}
        for index, stats in enumerate(worker.keys.stats(now))
    ]


def _returns_at(back: float | None) -> str | None:
    return _iso(back) if back is not None and back != float("inf") else None


def health_report(
    pool: WorkerPool,
    snapshot: HealthSnapshot,
    now: float,
    started_at: float,
    instance: str,
    shared_state: Mapping[str, object],
) -> tuple[dict[str, Any], int]:
    """The health body and its status code. `instance` names this instance and `shared_state`
    says whether this process reaches the shared state (app/shared_state.py); neither changes
    the status code: an instance without Redis still serves, on its own state."""
    workers: dict[str, Any] = {}
    counts = {HEALTHY: 0, DEGRADED: 0, UNAVAILABLE: 0, UNKNOWN: 0}
    for worker in pool:
        health = snapshot.of(worker.name)
        status, back = _status(worker, snapshot, now)
        counts[status] += 1
        error: str | None = None
        if worker.keys.available_at(now) is not None:
            error = "every API key is cooling down or disabled"
        elif worker.circuit.state(now) == OPEN:
            error = f"circuit open after {worker.circuit.consecutive_failures} consecutive failures"
        elif status == UNAVAILABLE:
            error = health.error
        workers[worker.name] = {
            "status": status,
            "type": worker.type,
            "priority": worker.priority,
            "last_check": _iso(health.checked_at),
            "latency_ms": None if health.latency is None else round(health.latency * 1000, 1),
            "error": error,
            "available_at": _returns_at(back),
            "in_flight": worker.in_flight,
            "circuit": _circuit(worker, now),
        }
    total = len(pool)
    available = total - counts[UNAVAILABLE]
    if total == 0:
        overall, code = "no_workers", 503
    elif available == 0:
        overall, code = "unhealthy", 503
    elif counts[UNAVAILABLE] or counts[DEGRADED]:
        overall, code = "degraded", 200
    else:
        overall, code = "healthy", 200
    body = {
        "status": overall,
        "instance": instance,
        "shared_state": dict(shared_state),
        "timestamp": _iso(now),
        "uptime": round(now - started_at, 3),
        "workers": workers,
        "summary": {
            "total": total,
            "available": available,
            "healthy": counts[HEALTHY],
            "degraded": counts[DEGRADED],
            "unavailable": counts[UNAVAILABLE],
            "unknown": counts[UNKNOWN],
        },
        "last_check": _iso(snapshot.taken_at),
    }
    return body, code


def providers_report(pool: WorkerPool, snapshot: HealthSnapshot, now: float, strategy: str) -> dict[str, Any]:
    providers = []
    for worker in sorted(pool, key=lambda w: (w.priority, w.name)):
        info = worker.adapter.describe()
        status, back = _status(worker, snapshot, now)
        providers.append(
            {
                "name": worker.name,
                "type": info.type,
                "preset": worker.spec.preset,
                "status": status,
                "priority": worker.priority,
                "models": list(worker.models(snapshot.of(worker.name).models)),
                "default_model": worker.resolve_model(None, snapshot.of(worker.name).models),
                "capabilities": list(info.capabilities),
                "keys": len(worker.keys),
                "key_states": _key_states(worker, now),
                "circuit": _circuit(worker, now),
                "available_at": _returns_at(back),
                "demo": info.is_demo,
                "description": info.description,
            }
        )
    return {
        "providers": providers,
        "total_count": len(providers),
        "healthy_count": sum(1 for p in providers if p["status"] in (HEALTHY, DEGRADED)),
        "default_strategy": strategy,
    }


def models_report(pool: WorkerPool, snapshot: HealthSnapshot, aliases: Mapping[str, str]) -> dict[str, Any]:
    """GET /v1/models in OpenAI's list shape: every model a worker is configured with or
    reported, once (owned by the first worker in priority order), then the aliases."""
    seen: dict[str, str] = {}
    for worker in sorted(pool, key=lambda w: (w.priority, w.name)):
        for model in worker.models(snapshot.of(worker.name).models):
            seen.setdefault(model, worker.name)
    data = [{"id": model, "object": "model", "created": 0, "owned_by": owner} for model, owner in seen.items()]
    data += [{"id": alias, "object": "model", "created": 0, "owned_by": "cortex-alias"} for alias in aliases]
    return {"object": "list", "data": data}


def admin_worker(worker: Worker, snapshot: HealthSnapshot, now: float) -> dict[str, Any]:
    """One worker as the admin API shows it: the public view plus its keys, masked, with
    their 1-based position (what POST .../keys/<n>/enable takes). Never a whole key, nor the
    worker's extra headers (they may carry credentials)."""
    health = snapshot.of(worker.name)
    status, back = _status(worker, snapshot, now)
    return {
        "name": worker.name,
        "type": worker.type,
        "preset": worker.spec.preset,
        "base_url": worker.spec.base_url,
        "priority": worker.priority,
        "models": list(worker.models(health.models)),
        "status": status,
        "available_at": _returns_at(back),
        "health": {
            "status": health.status,
            "last_check": _iso(health.checked_at),
            "latency_ms": None if health.latency is None else round(health.latency * 1000, 1),
            "error": health.error,
        },
        "circuit": _circuit(worker, now),
        "in_flight": worker.in_flight,
        "key_strategy": worker.keys.strategy,
        "keys": [{"position": index + 1, **stats} for index, stats in enumerate(worker.keys.stats(now))],
    }


def admin_workers_report(pool: WorkerPool, snapshot: HealthSnapshot, now: float) -> list[dict[str, Any]]:
    return [admin_worker(w, snapshot, now) for w in sorted(pool, key=lambda w: (w.priority, w.name))]
