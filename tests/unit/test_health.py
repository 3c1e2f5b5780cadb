"""The health monitor: parallel probes, each bounded, published as one immutable snapshot."""

from __future__ import annotations

import gevent
import pytest

from app.health import DEGRADED, HEALTHY, UNAVAILABLE, UNKNOWN, HealthMonitor
from app.pool import Worker, WorkerPool
from app.settings import WorkerSpec
from providers.base import ProviderInfo
from providers.errors import ErrorKind, UpstreamError


class Probe:
    def __init__(self, log: list[str], name: str, delay: float = 0.0, error: UpstreamError | None = None) -> None:
        self.log, self.name, self.delay, self.error = log, name, delay, error

    def describe(self) -> ProviderInfo:
        return ProviderInfo("probe", ())

    def list_models(self, key: str | None, timeout: float) -> tuple[str, ...]:
        self.log.append(f"start {self.name}")
        gevent.sleep(self.delay)
        self.log.append(f"end {self.name}")
        if self.error:
            raise self.error
        return (f"{self.name}-model",)

    def stream_chat(self, *args: object):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def monitor(*probes: Probe, keys: tuple[str, ...] = ()) -> HealthMonitor:
    # libev caches the loop's time; after other tests blocked this thread without running the
    # loop it is stale, and the 0.1 s sleep and the 0.2 s deadline would both be due at once.
    gevent.get_hub().loop.update_now()
    pool = WorkerPool([Worker(WorkerSpec(p.name, "openai_compat", "http://x", keys), p) for p in probes])
    return HealthMonitor(pool, interval=10, timeout=0.2, degraded_latency=0.05)


def test_probes_run_in_parallel_and_each_is_bounded():
    log: list[str] = []
    m = monitor(
        Probe(log, "fast"),
        Probe(log, "slow", delay=0.1),
        Probe(log, "hung", delay=30),
        Probe(log, "broken", error=UpstreamError(ErrorKind.AUTH, "Invalid API Key", status=401)),
    )
    assert {w.status for w in m.snapshot.workers.values()} == {UNKNOWN}
    snapshot = m.check_now()
    # every probe started before the slow one finished: they ran side by side
    assert log.index("start hung") < log.index("end slow") and log.index("start broken") < log.index("end slow")
    assert snapshot.of("fast").status == HEALTHY and snapshot.of("fast").models == ("fast-model",)
    assert snapshot.of("slow").status == DEGRADED
    assert snapshot.of("hung").status == UNAVAILABLE and "no answer within 0.2s" in snapshot.of("hung").error
    assert snapshot.of("broken").status == UNAVAILABLE and snapshot.of("broken").error == "auth: Invalid API Key"
    assert m.snapshot is snapshot


def test_snapshot_is_immutable():
    m = monitor(Probe([], "a"))
    snapshot = m.check_now()
    with pytest.raises(TypeError):
        snapshot.workers["a"] = None  # type: ignore[index]


def test_unavailable_worker_keeps_the_models_it_last_reported():
    probe = Probe([], "a")
    m = monitor(probe)
    m.check_now()
    probe.error = UpstreamError(ErrorKind.CONNECT, "refused")
    assert m.check_now().of("a").models == ("a-model",)


def test_background_loop_starts_and_stops():
    m = monitor(Probe([], "a"))
    m.interval = 0.01
    m.start()
    gevent.sleep(0.05)
    assert m.snapshot.of("a").status == HEALTHY
    m.stop()
    assert m._greenlet is None


def test_only_a_failed_probe_demotes_a_worker_and_a_live_success_lifts_it():
    """Live failures mark a worker unavailable on the status page but leave ordering to its
    circuit; a probe's failure demotes it until a probe or a request sees it work."""
    m = monitor(Probe([], "live"), Probe([], "probed", error=UpstreamError(ErrorKind.CONNECT, "refused")))
    m.record_live("live", False, "server: HTTP 500")
    assert m.snapshot.of("live").status == UNAVAILABLE and not m.snapshot.of("live").demoted
    m.check_now()
    assert m.snapshot.of("live").status == HEALTHY and m.snapshot.of("probed").demoted
    m.record_live("probed", False, "connect: refused")  # tried as a last resort, failed again
    assert m.snapshot.of("probed").demoted and m.snapshot.of("probed").error == "live request: connect: refused"
    m.record_live("probed", True)
    assert m.snapshot.of("probed").status == HEALTHY and not m.snapshot.of("probed").demoted
