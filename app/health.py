"""Background health: a greenlet probes every worker on an interval, in parallel, each probe
bounded by a timeout, and publishes an immutable snapshot that request handlers read
without waiting or locking (rule 14).

Probes use each provider's free model-list endpoint (FIELD-NOTES 11), never a chat call.
Live traffic reports too (`record_live`): a request that fails on a worker marks it
unavailable at once, and one that succeeds marks an unavailable worker healthy again, so
/api/health agrees with what requests experience within one request, not one interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import gevent

from app.deadlines import deadline
from app.pool import Worker, WorkerPool
from providers.errors import UpstreamError

log = logging.getLogger("cortex.health")

UNKNOWN, HEALTHY, DEGRADED, UNAVAILABLE = "unknown", "healthy", "degraded", "unavailable"


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    status: str
    checked_at: float | None = None
    latency: float | None = None
    error: str | None = None
    models: tuple[str, ...] = ()
    #: The status comes from live traffic (`record_live`), not from a probe.
    live: bool = False

    @property
    def available(self) -> bool:
        return self.status != UNAVAILABLE

    @property
    def demoted(self) -> bool:
        """A probe saw the worker fail and no request has seen it work since: dispatch tries it
        after the others. A live failure alone does not demote: counting those is the
        circuit's job (CIRCUIT_FAILURES in a row), else one blip would exile a worker until
        the next probe, or for good with health checks off."""
        return self.status == UNAVAILABLE and not self.live


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    workers: Mapping[str, WorkerHealth]
    taken_at: float | None = None

    def of(self, name: str) -> WorkerHealth:
        return self.workers.get(name, _UNKNOWN)


_UNKNOWN = WorkerHealth(UNKNOWN)


class HealthMonitor:
    def __init__(
        self,
        pool: WorkerPool,
        *,
        interval: float,
        timeout: float,
        degraded_latency: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.timeout = timeout
        self.degraded_latency = degraded_latency
        self.clock = clock
        self.snapshot = HealthSnapshot(MappingProxyType({w.name: _UNKNOWN for w in pool}))
        self._greenlet: gevent.Greenlet | None = None
        self._started = False

    def start(self) -> None:
        """Start the loop; a no-op when health checks are disabled (interval 0)."""
        self._started = True
        if self.interval > 0 and self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._started = False
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def reconfigure(self, *, interval: float, timeout: float, degraded_latency: float) -> None:
        """New probe settings (a configuration reload); the loop starts or stops if the
        interval turned on or off, and otherwise picks the new interval up after its sleep."""
        self.timeout, self.degraded_latency = timeout, degraded_latency
        if interval != self.interval:
            self.interval = interval
            if self._started:
                self.stop()
                self.start()

    def retain(self) -> None:
        """The pool was swapped: keep what is known of the workers still in it, start the new
        ones as unknown, forget the removed ones. One new snapshot, swapped in whole."""
        old = self.snapshot
        workers = {w.name: old.of(w.name) for w in self.pool}
        self.snapshot = HealthSnapshot(MappingProxyType(workers), old.taken_at)

    def check_now(self) -> HealthSnapshot:
        """Probe every worker at once and publish the result; returns the new snapshot."""
        workers = list(self.pool)
        probes = [gevent.spawn(self._probe, w) for w in workers]
        gevent.joinall(probes, timeout=self.timeout + 1.0)
        results = {}
        for worker, probe in zip(workers, probes, strict=True):
            if probe.successful():
                results[worker.name] = probe.value
            else:
                probe.kill(block=False)
                results[worker.name] = WorkerHealth(UNAVAILABLE, self.clock(), None, "health check did not finish")
        self.snapshot = HealthSnapshot(MappingProxyType(results), self.clock())
        return self.snapshot

    def record_live(self, name: str, ok: bool, error: str | None = None) -> None:
        """What a live request just saw on a worker. Publishes a new snapshot only when the
        worker's status changes, so the common case (healthy, and it worked) costs nothing."""
        previous = self.snapshot.of(name)
        if ok:
            if previous.available and previous.status != UNKNOWN:
                return
            if previous.status == UNAVAILABLE:
                log.info("worker %s answered a request: healthy again", name)
            current = WorkerHealth(HEALTHY, self.clock(), previous.latency, None, previous.models, live=True)
        else:
            if previous.status != UNAVAILABLE:
                log.warning("worker %s failed a request: %s", name, error)
            current = WorkerHealth(
                UNAVAILABLE, self.clock(), previous.latency, f"live request: {error}", previous.models,
                live=not previous.demoted,  # a worker a probe saw fail stays demoted
            )  # fmt: skip
        workers = dict(self.snapshot.workers)
        workers[name] = current
        self.snapshot = HealthSnapshot(MappingProxyType(workers), self.snapshot.taken_at)

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.check_now()
            except Exception:  # noqa: BLE001 - the loop must survive anything a probe does
                log.exception("health round failed")
            gevent.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _probe(self, worker: Worker) -> WorkerHealth:
        now = self.clock()
        key = worker.keys.first_usable(now)
        if not worker.keys.keyless and key is None:
            return WorkerHealth(UNAVAILABLE, now, None, "every API key is cooling down or disabled")
        started = time.monotonic()
        try:
            with deadline(self.timeout, f"no answer within {self.timeout:g}s"):
                models = worker.adapter.list_models(key, self.timeout)
        except UpstreamError as error:
            text = f"{error.kind.value}: {error.message}"
            previous = self.snapshot.of(worker.name)
            if previous.status != UNAVAILABLE:
                log.warning("worker %s is unavailable: %s", worker.name, text)
            return WorkerHealth(UNAVAILABLE, self.clock(), None, text, previous.models)
        latency = time.monotonic() - started
        status = DEGRADED if latency > self.degraded_latency else HEALTHY
        if self.snapshot.of(worker.name).status == UNAVAILABLE:
            log.info("worker %s is %s again", worker.name, status)
        return WorkerHealth(status, self.clock(), round(latency, 4), None, tuple(models))
