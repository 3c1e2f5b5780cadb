"""Routing strategies: the order in which a request tries its eligible workers.

A strategy object is built once per process, so a stateful one (a rotation, latency
averages) is shared by all concurrent requests of that process. Under gevent `order` and
`observe` never yield, so each runs as one step and needs no lock. They are handed the time
rather than reading a clock (rule 13), and the one source of randomness (exploration in
`latency`) is an injectable `random.Random`.

The dispatcher calls `order` once per request and `observe` after every attempt, so the
stateful strategies learn from live traffic; stateless ones ignore `observe`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


class Rankable(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


W = TypeVar("W", bound=Rankable)


class Strategy(Protocol):
    name: str

    def order(self, candidates: Sequence[W], now: float) -> list[W]: ...

    def observe(self, worker_name: str, ttfb: float | None, ok: bool, now: float) -> None:
        """After each attempt: its time to first token (None when unknown) and whether it
        produced content."""


def _by_priority(w: Rankable) -> tuple[int, str]:
    return (w.priority, w.name)


class PriorityStrategy:
    """Lowest priority number first: local and cheap workers get low numbers, so this is
    the design's 'local first'. Ties break by name, so the order is stable."""

    name = "priority"

    def order(self, candidates: Sequence[W], now: float) -> list[W]:
        return sorted(candidates, key=_by_priority)

    def observe(self, worker_name: str, ttfb: float | None, ok: bool, now: float) -> None:
        pass


class RoundRobinStrategy:
    """Each request led by the next worker in turn, whichever subset of workers it may use.

    A counter modulo the candidate count breaks when the candidate list differs between
    requests (one model served by two workers, another by three): the same worker keeps
    landing first. Instead each worker remembers the turn at which it last led a request,
    and candidates are ordered by that, least recently first (never = before everyone, ties
    by name); only the leader's turn is updated. Over a fixed set that is exactly a rotation,
    and its failover order continues the rotation. Over changing subsets every candidate
    still gets its turn, and a worker left out of some requests leads more of the ones it is
    in, which evens out the total load. A worker absent for a while leads once on return,
    then rotates normally: no burst. State: one integer per worker name seen.
    """

    name = "round_robin"

    def __init__(self) -> None:
        self._turn = 0
        self._led_at: dict[str, int] = {}

    def order(self, candidates: Sequence[W], now: float) -> list[W]:
        ranked = sorted(candidates, key=lambda w: (self._led_at.get(w.name, -1), w.name))
        if ranked:
            self._turn += 1
            self._led_at[ranked[0].name] = self._turn
        return ranked

    def observe(self, worker_name: str, ttfb: float | None, ok: bool, now: float) -> None:
        pass


class LeastLoadedStrategy:
    """Fewest requests in flight (in this process) first; ties by priority, then name, so
    an idle gateway still behaves like 'local first'."""

    name = "least_loaded"

    def order(self, candidates: Sequence[W], now: float) -> list[W]:
        return sorted(candidates, key=lambda w: (w.in_flight, w.priority, w.name))

    def observe(self, worker_name: str, ttfb: float | None, ok: bool, now: float) -> None:
        pass


@dataclass
class _Latency:
    ewma: float
    #: When the worker last produced a sample or was promoted to probe it (see LatencyStrategy).
    touched: float


class LatencyStrategy:
    """Lowest recent time to first token first: an exponentially weighted moving average per
    worker (weight `alpha` on the newest sample), fed by `observe`.

    - A failed attempt counts as a sample of `failure_penalty` seconds, so a failing worker
      sinks behind the working ones and climbs back as it succeeds again.
    - Workers without a sample yet go first (by priority), so each is measured once.
    - Exploration, so a worker that was slow or failing once is not shunned forever: the
      seen worker whose last sample is older than `explore_after` seconds goes first once
      (its clock restarts when promoted, so a burst of requests does not all probe it);
      otherwise, with probability `epsilon`, a random worker other than the fastest does.
    - State is one small record per worker name ever observed: workers are configured, so
      this is bounded by the pool size.
    """

    name = "latency"

    def __init__(
        self,
        alpha: float = 0.3,
        epsilon: float = 0.1,
        explore_after: float = 30.0,
        failure_penalty: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.alpha = alpha
        self.epsilon = epsilon
        self.explore_after = explore_after
        self.failure_penalty = failure_penalty
        self._rng = rng if rng is not None else random.Random()
        self._stats: dict[str, _Latency] = {}

    def latency(self, worker_name: str) -> float | None:
        """The worker's current average (seconds), None before its first sample."""
        stats = self._stats.get(worker_name)
        return None if stats is None else stats.ewma

    def observe(self, worker_name: str, ttfb: float | None, ok: bool, now: float) -> None:
        if ok and ttfb is None:
            return  # a success with no timing teaches nothing about latency
        sample = ttfb if ok and ttfb is not None else self.failure_penalty
        stats = self._stats.get(worker_name)
        if stats is None:
            self._stats[worker_name] = _Latency(sample, now)
        else:
            stats.ewma += self.alpha * (sample - stats.ewma)
            stats.touched = now

    def order(self, candidates: Sequence[W], now: float) -> list[W]:
        unseen = sorted((w for w in candidates if w.name not in self._stats), key=_by_priority)
        seen = sorted(
            (w for w in candidates if w.name in self._stats),
            key=lambda w: (self._stats[w.name].ewma, w.priority, w.name),
        )
        if unseen or len(seen) < 2:
            return unseen + seen
        probe = self._probe(seen, now)
        if probe is not None:
            self._stats[probe.name].touched = now
            seen.remove(probe)
            seen.insert(0, probe)
        return seen

    def _probe(self, seen: list[W], now: float) -> W | None:
        """The worker to re-measure on this request, if any (never the fastest: it leads anyway)."""
        others = seen[1:]
        stalest = min(others, key=lambda w: self._stats[w.name].touched)
        if now - self._stats[stalest.name].touched >= self.explore_after:
            return stalest
        if self.epsilon and self._rng.random() < self.epsilon:
            return self._rng.choice(others)
        return None


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "priority": PriorityStrategy,
    "round_robin": RoundRobinStrategy,
    "least_loaded": LeastLoadedStrategy,
    "latency": LatencyStrategy,
}

#: Names from the original design that mean the same as "priority".
ALIASES = {"local_first": "priority", "priority_first": "priority"}


def canonical_strategy(name: str) -> str | None:
    """The strategy's registered name, or None when it is unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in STRATEGIES else None


def make_strategy(name: str, **options: Any) -> Strategy:
    """A new strategy by name or alias; options go to its constructor (for `latency`: alpha,
    epsilon, explore_after, failure_penalty, rng). An option it does not take is a TypeError."""
    canonical = canonical_strategy(name)
    if canonical is None:
        raise ValueError(f"unknown routing strategy {name!r}")
    return STRATEGIES[canonical](**options)
