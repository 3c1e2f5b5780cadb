"""The Gateway: everything a running Cortex process owns, built from Settings.

Building it opens no socket and starts no greenlet (rule 1); `start()` does, called by
gunicorn's post_worker_init hook in each worker process, or explicitly by tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.dispatcher import Dispatcher
from app.health import HealthMonitor
from app.pool import WorkerPool
from app.settings import Settings
from app.strategies import STRATEGIES, make_strategy
from providers.transport import Transport


class Gateway:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
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
        self.dispatcher = Dispatcher(
            self.pool, self.health, self.strategies, settings.routing_strategy, settings, clock
        )

    def start(self) -> None:
        self.health.start()

    def stop(self) -> None:
        self.health.stop()
        self.transport.close()
