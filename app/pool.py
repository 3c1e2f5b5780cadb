"""Workers as the running gateway sees them: the configured spec, its adapter, its key ring,
its circuit and its live load.

The pool changes only as a whole (the admin API adds, removes, reloads): the next set of
workers is built aside, reusing the Worker objects whose spec is unchanged (so their key
stats, disabled keys and circuit survive), and swapped in with one assignment. Readers never
lock: an iteration that started before a swap finishes over the set it started with, and a
stream already dispatched keeps its Worker object to the end."""

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


def make_worker(spec: WorkerSpec, settings: Settings, transport: Transport) -> Worker:
    return Worker(
        spec,
        make_adapter(spec, settings, transport),
        circuit=Circuit(settings.circuit_failures, settings.circuit_cooldown),
    )


class WorkerPool:
    def __init__(self, workers: list[Worker]) -> None:
        self._workers = {w.name: w for w in workers}
        #: Counts swaps, so what is derived from the pool (the dispatcher's provider names)
        #: knows when to derive it again.
        self.generation = 0

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport) -> WorkerPool:
        return cls([make_worker(spec, settings, transport) for spec in settings.workers])

    def rebuilt(self, specs: tuple[WorkerSpec, ...], settings: Settings, transport: Transport) -> list[Worker]:
        """The workers for `specs`: the current Worker object where its spec is unchanged
        (its circuit retuned to `settings`), a new one otherwise. Changes nothing yet."""
        workers = []
        for spec in specs:
            current = self._workers.get(spec.name)
            if current is not None and current.spec == spec:
                circuit = current.circuit
                circuit.failure_threshold, circuit.cooldown = settings.circuit_failures, settings.circuit_cooldown
                circuit.max_cooldown = 8 * settings.circuit_cooldown  # Circuit's own default
                workers.append(current)
            else:
                workers.append(make_worker(spec, settings, transport))
        return workers

    def swap(self, workers: list[Worker]) -> None:
        """Make `workers` the pool, in one assignment."""
        self._workers = {w.name: w for w in workers}
        self.generation += 1

    def __iter__(self) -> Iterator[Worker]:
        return iter(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, name: str) -> Worker | None:
        return self._workers.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._workers)
