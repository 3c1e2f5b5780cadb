"""A worker's rpm: each key's requests per minute, counted before an attempt (app/upstream_quota.py)
and honoured by the dispatcher: a key over quota is skipped, a worker whose keys all are fails
over, and when every worker is over quota the client gets a 429 with the window's reset."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest

from app.circuit import Circuit
from app.dispatcher import Dispatcher
from app.errors import RateLimited
from app.health import HealthMonitor
from app.limit_storage import SCHEME
from app.pool import Worker, WorkerPool
from app.settings import Settings, WorkerSpec
from app.strategies import STRATEGIES, make_strategy
from app.upstream_quota import NoQuota, UpstreamQuota
from providers.base import Timeouts
from tests.unit.test_dispatcher import OK, REQ, Scripted


def make(*workers: tuple[str, Scripted, tuple[str, ...], int | None], quota: UpstreamQuota) -> Dispatcher:
    gevent.get_hub().loop.update_now()
    t = Timeouts()
    specs = [
        WorkerSpec(name, "openai_compat", "http://x", keys, ("m",), "m", i, t, rpm=rpm)
        for i, (name, _, keys, rpm) in enumerate(workers)
    ]
    pool = WorkerPool([Worker(spec, w[1]) for spec, w in zip(specs, workers, strict=True)])
    config = Settings(workers=tuple(specs), timeouts=t, key_cooldown=60, retry_backoff_base=0.001)
    for worker in pool:
        worker.circuit = Circuit(config.circuit_failures, config.circuit_cooldown)
    health = HealthMonitor(pool, interval=0, timeout=1, degraded_latency=1)
    strategies = {name: make_strategy(name) for name in STRATEGIES}
    return Dispatcher(pool, health, strategies, "priority", config, quota=quota)


@pytest.fixture(params=["memory", "sqlite"])
def quota(request, tmp_path: Path) -> UpstreamQuota:  # type: ignore[no-untyped-def]
    return UpstreamQuota("memory://" if request.param == "memory" else f"{SCHEME}://{tmp_path / 'q.sqlite3'}")


def test_take_counts_per_worker_and_key_position(quota):
    assert [quota.take("w", 2, 0) for _ in range(2)] == [None, None]
    resets_in = quota.take("w", 2, 0)
    assert resets_in is not None and 0 < resets_in <= 60
    assert quota.take("w", 2, 1) is None  # another key has its own window
    assert quota.take("other", 2, 0) is None  # another worker too
    assert all(quota.take("free", None, 0) is None for _ in range(10))  # no rpm: no limit
    assert NoQuota().take("w", 1, 0) is None


def test_a_key_over_quota_is_skipped_for_the_next_key(quota):
    adapter = Scripted(OK)
    dispatcher = make(("w", adapter, ("k1", "k2"), 1), quota=quota)
    for _ in range(2):
        dispatcher.complete(REQ)
    # round robin would have used k1 then k2 anyway; now both are spent, the third request
    # gets none of them
    assert sorted(key for _, key in adapter.calls) == ["k1", "k2"]
    with pytest.raises(RateLimited) as info:
        dispatcher.complete(REQ)
    assert len(adapter.calls) == 2
    assert [(a["worker"], a["kind"]) for a in info.value.extra["attempts"]] == [("w", "upstream_rpm")]
    assert info.value.retry_after is not None and 1 <= info.value.retry_after <= 60


def test_a_worker_over_quota_fails_over_to_the_next(quota):
    first, second = Scripted(OK), Scripted(OK)
    dispatcher = make(("first", first, ("a",), 2), ("second", second, ("b",), None), quota=quota)
    workers = [dispatcher.complete(REQ).worker.name for _ in range(5)]
    assert workers == ["first", "first", "second", "second", "second"]
    assert len(first.calls) == 2
    result = dispatcher.complete(REQ)
    assert [a.kind for a in result.attempts] == ["upstream_rpm"]


def test_a_keyless_worker_is_limited_as_one_key(quota):
    local = Scripted(OK)
    dispatcher = make(("local", local, (), 1), quota=quota)
    dispatcher.complete(REQ)
    with pytest.raises(RateLimited):
        dispatcher.complete(REQ)
    assert len(local.calls) == 1


def test_a_failing_store_never_stops_dispatch(caplog):
    quota = UpstreamQuota("redis://127.0.0.1:1/0")  # nothing listens on port 1
    adapter = Scripted(OK)
    dispatcher = make(("w", adapter, ("k",), 2), quota=quota)
    assert dispatcher.complete(REQ).text == "Hello"
    assert dispatcher.complete(REQ).text == "Hello"
    with pytest.raises(RateLimited):  # counted in memory meanwhile: still a limit
        dispatcher.complete(REQ)
    warnings = [r.getMessage() for r in caplog.records if r.name == "cortex.limits"]
    assert len(warnings) == 1 and "redis://127.0.0.1:1" in warnings[0]
