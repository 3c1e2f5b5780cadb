"""Routing strategies: the order in which a request tries its eligible workers.

A strategy object is built once per process (so a stateful one, such as a rotation, is shared
by all concurrent requests) and is handed the time rather than reading a clock (rule 13).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar


class Rankable(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def priority(self) -> int: ...


W = TypeVar("W", bound=Rankable)


class Strategy(Protocol):
    name: str

    def order(self, candidates: Sequence[W], now: float) -> list[W]: ...


class PriorityStrategy:
    """Lowest priority number first: local and cheap workers get low numbers, so this is
    the design's 'local first'. Ties break by name, so the order is stable."""

    name = "priority"

    def order(self, candidates: Sequence[W], now: float) -> list[W]:
        return sorted(candidates, key=lambda w: (w.priority, w.name))


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "priority": PriorityStrategy,
}

#: Names from the original design that mean the same as "priority".
ALIASES = {"local_first": "priority", "priority_first": "priority"}


def canonical_strategy(name: str) -> str | None:
    """The strategy's registered name, or None when it is unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in STRATEGIES else None


def make_strategy(name: str) -> Strategy:
    canonical = canonical_strategy(name)
    if canonical is None:
        raise ValueError(f"unknown routing strategy {name!r}")
    return STRATEGIES[canonical]()
