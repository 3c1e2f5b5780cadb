"""Workers as the running gateway sees them: the configured spec, its adapter, its key ring,
its circuit and its live load. The pool is built once from Settings and is read-only afterwards."""

from __future__ import annotations

import random
from collections.abc import Iterator

from app.circuit import Circuit
from app.keys import KeyRing
from app.settings import Settings, WorkerSpec
from providers.base import Adapter, Endpoint
from providers.catalog import PROVIDERS
from providers.demo import DemoAdapter
from providers.http import HttpAdapter
from providers.transport import Transport


def make_adapter(spec: WorkerSpec, settings: Settings, transport: Transport) -> Adapter:
    if spec.provider == "demo":
        return DemoAdapter(delay=settings.demo_delay)
    kind = PROVIDERS[spec.provider]  # settings accept only known types
    endpoint = Endpoint(spec.base_url, spec.extra_headers, spec.stream_usage, spec.stream, spec.keep_alive)
    return HttpAdapter(endpoint, kind.protocol, kind.info, transport)


class Worker:
    __slots__ = ("spec", "adapter", "keys", "circuit", "in_flight")

    def __init__(
        self, spec: WorkerSpec, adapter: Adapter, *, circuit: Circuit | None = None, rng: random.Random | None = None
    ) -> None:
        """`circuit` defaults to the Settings defaults; `rng` feeds the `random` key strategy."""
        self.spec = spec
        self.adapter = adapter
        self.keys = KeyRing(spec.api_keys, spec.key_strategy or Settings.key_strategy, rng)
        self.circuit = circuit if circuit is not None else Circuit(Settings.circuit_failures, Settings.circuit_cooldown)
        self.in_flight = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def priority(self) -> int:
        return self.spec.priority

    @property
    def type(self) -> str:
        return self.spec.provider

    def models(self, discovered: tuple[str, ...]) -> tuple[str, ...]:
        """Configured models first, then what the upstream reported, without repeats."""
        if not discovered:
            return self.spec.models
        return tuple(dict.fromkeys(self.spec.models + discovered))

    def resolve_model(self, requested: str | None, discovered: tuple[str, ...]) -> str | None:
        """The model to ask this worker for, or None when it cannot serve the request."""
        if requested is None:
            return self.spec.default_model or (self.spec.models or discovered or (None,))[0]
        known = self.models(discovered)
        return requested if not known or requested in known else None


class WorkerPool:
    def __init__(self, workers: list[Worker]) -> None:
        self._workers = {w.name: w for w in workers}

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport) -> WorkerPool:
        return cls(
            [
                Worker(
                    spec,
                    make_adapter(spec, settings, transport),
                    circuit=Circuit(settings.circuit_failures, settings.circuit_cooldown),
                )
                for spec in settings.workers
            ]
        )

    def __iter__(self) -> Iterator[Worker]:
        return iter(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, name: str) -> Worker | None:
        return self._workers.get(name)
