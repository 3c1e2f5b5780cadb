"""The Gateway: everything a running Cortex process owns, built from Settings.

Building it opens no socket and starts no greenlet (rule 1); `start()` does, called by
gunicorn's post_worker_init hook in each worker process, or explicitly by tests.

The admin API changes it at runtime through `admin` (app/admin_bus.py), which makes every
worker process apply the same changes in the same order; `prepare` and `apply` below say what
each change does. A reload applies the workers and the dispatch settings; what is bound when
the process starts (`RESTART_ONLY`: the listen address, rate limits, client keys, CORS, logs,
the connection pool, the body limit) keeps its value until a restart, which gunicorn does
gracefully on SIGHUP.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import gevent

from app.admin_bus import ADD, ENABLE_KEY, HEALTH_CHECK, RELOAD, REMOVE, AdminBus, AdminOp
from app.config_values import ConfigError
from app.dispatcher import Dispatcher
from app.errors import Conflict, InvalidConfig, NotFound
from app.health import HealthMonitor
from app.lifecycle import InFlight
from app.limit_storage import storage_uri
from app.pool import Worker, WorkerPool, make_worker
from app.settings import Settings, WorkerSpec, load_settings, parse_worker, read_config
from app.shared_state import SharedState, instance_name
from app.strategies import STRATEGIES, LatencyStrategy, make_strategy
from app.upstream_quota import UpstreamQuota
from providers.transport import Transport

log = logging.getLogger("cortex.admin")

#: Settings a reload does not change in a running process (beside every edge setting).
RESTART_ONLY = ("upstream_pool_size", "max_body_bytes", "log_level")


@dataclass(frozen=True, slots=True)
class PoolChange:
    """What a reload did to the pool, by worker name; and which changed settings it left for a
    restart to apply."""

    kept: tuple[str, ...]
    replaced: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    restart_required: tuple[str, ...]


class Gateway:
    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.time, environ: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        #: Where a reload and an `api_keys_env` look (the process environment by default).
        self.environ = os.environ if environ is None else environ
        self.started_at = clock()
        self.transport = Transport(pool_size=settings.upstream_pool_size)
        self.pool = WorkerPool.from_settings(settings, self.transport)
        self.health = HealthMonitor(
            self.pool,
            interval=settings.health_check_interval,
            timeout=settings.health_check_timeout,
            degraded_latency=settings.degraded_latency,
            clock=clock,
        )
        # One instance of every strategy, so a request may pick another than the default and
        # stateful ones (rotation, latency averages) see all of the process's traffic.
        self.strategies = {
            name: make_strategy(name, **({"epsilon": settings.latency_explore} if name == "latency" else {}))
            for name in STRATEGIES
        }
        self.strategy = self.strategies[settings.routing_strategy]
        # Each key's requests per minute (a worker's rpm), counted where the client limits are;
        # it touches no store for workers without one.
        self.dispatcher = Dispatcher(
            self.pool, self.health, self.strategies, settings.routing_strategy, settings, clock,
            quota=UpstreamQuota(storage_uri(settings.edges)),
        )  # fmt: skip
        self.admin = AdminBus.for_state_dir(self, settings.edges.state_dir)
        #: This instance's name (/api/health, shared-state events).
        self.instance = instance_name(settings.edges, self.environ)
        #: Key cooldowns, disabled keys and circuits shared through Redis (REDIS_URL), else a no-op.
        self.shared = SharedState(settings.edges.redis_url, self.instance, self.pool, clock)
        #: The chat requests being served, so a stopping process ends them explicitly.
        self.in_flight = InFlight()
        self._background_check: gevent.Greenlet | None = None

    def start(self) -> None:
        self.admin.start()
        self.health.start()
        self.shared.start()

    def stop(self) -> None:
        self.admin.stop()
        self.health.stop()
        self.shared.stop()
        self.transport.close()

    # --- admin changes (called by AdminBus, in every process, in journal order) -------------

    def prepare(self, op: AdminOp) -> AdminOp:
        if op.kind == ADD:
            spec = self._parse_worker(op.worker)
            if self.pool.get(spec.name) is not None:
                raise Conflict(f"a worker named {spec.name!r} exists; remove it first")
            return replace(op, name=spec.name)
        if op.kind in (REMOVE, ENABLE_KEY):
            worker = self.pool.get(op.name or "")
            if worker is None:
                raise NotFound(f"no worker named {op.name!r} (workers: {', '.join(self.pool.names) or 'none'})")
            if op.kind == ENABLE_KEY and not (op.key is not None and 1 <= op.key <= len(worker.keys)):
                raise NotFound(f"worker {op.name!r} has no key {op.key} (it has {len(worker.keys)})")
        if op.kind == RELOAD:
            try:
                text = read_config(self.environ)
                load_settings(self.environ, text)
            except ConfigError as exc:
                raise InvalidConfig(f"configuration not reloaded, nothing changed: {exc}") from None
            return replace(op, config=text)
        return op

    def apply(self, op: AdminOp, own: bool) -> object:
        """Carry out a prepared op. Another process's op was validated against the same state,
        so a conflict here means the processes differ: it is logged and skipped."""
        log.info("admin: %s%s", op.describe(), "" if own else " (from the journal)")
        if op.kind == ADD:
            spec = self._parse_worker(op.worker)
            if self.pool.get(spec.name) is not None:
                log.warning("admin: worker %s exists here; not added again", spec.name)
                return None
            self._swap_in([*self.pool, make_worker(spec, self.settings, self.transport)])
            return self.pool.get(spec.name)
        if op.kind == REMOVE:
            self._swap_in([w for w in self.pool if w.name != op.name])
            return None
        if op.kind == ENABLE_KEY:
            worker = self.pool.get(op.name or "")
            if worker is not None and op.key is not None and 1 <= op.key <= len(worker.keys):
                worker.keys.enable(op.key - 1)
                if own:  # every process of this instance applies the op; one tells the others
                    self.shared.key_enabled(worker.name, op.key - 1)
            return worker
        if op.kind == RELOAD:
            return self.reconfigure(load_settings(self.environ, op.config))
        if op.kind == HEALTH_CHECK and not own:  # the submitting process checks in its view
            self._check_in_background()
        return None

    def reconfigure(self, new: Settings) -> PoolChange:
        """Make `new` the workers and dispatch settings. Workers whose spec is unchanged keep
        their state (key stats, disabled keys, circuit, health); runtime adds and removes are
        forgotten: the configuration is the truth again."""
        old = self.settings
        restart = tuple(
            [f.name for f in fields(old.edges) if getattr(old.edges, f.name) != getattr(new.edges, f.name)]
            + [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        )
        effective = replace(new, edges=old.edges, **{name: getattr(old, name) for name in RESTART_ONLY})
        workers = self.pool.rebuilt(effective.workers, effective, self.transport)
        before = {w.name: w for w in self.pool}
        change = PoolChange(
            kept=tuple(w.name for w in workers if before.get(w.name) is w),
            replaced=tuple(w.name for w in workers if w.name in before and before[w.name] is not w),
            added=tuple(w.name for w in workers if w.name not in before),
            removed=tuple(name for name in before if name not in {w.name for w in workers}),
            restart_required=restart,
        )
        self.settings = effective
        latency = self.strategies["latency"]
        if isinstance(latency, LatencyStrategy):
            latency.epsilon = effective.latency_explore
        self.strategy = self.strategies[effective.routing_strategy]
        self.dispatcher.reconfigure(effective)
        self.health.reconfigure(
            interval=effective.health_check_interval,
            timeout=effective.health_check_timeout,
            degraded_latency=effective.degraded_latency,
        )
        self._swap_in(workers)
        return change

    def _swap_in(self, workers: list[Worker]) -> None:
        self.pool.swap(workers)
        self.health.retain()
        self.shared.attach()

    def _parse_worker(self, table: Mapping[str, object] | None) -> WorkerSpec:
        try:
            return parse_worker(table, self.environ, self.settings)
        except ConfigError as exc:
            raise InvalidConfig(str(exc)) from None

    def _check_in_background(self) -> None:
        """Another process's health check: run one here too, unless one is running."""
        if self._background_check is None or self._background_check.dead:
            self._background_check = gevent.spawn(self.health.check_now)
