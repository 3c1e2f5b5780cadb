"""Key-ring policy and routing order, with time passed in (no sleeping)."""

from __future__ import annotations

from dataclasses import dataclass

from app.keys import KeyRing
from app.strategies import PriorityStrategy, canonical_strategy, make_strategy


def test_round_robin_start_moves_one_key_per_request():
    ring = KeyRing(("a", "b", "c"))
    assert [ring.candidates(0) for _ in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def test_cooldown_skips_a_key_until_it_returns_and_never_shortens():
    ring = KeyRing(("a", "b"))
    ring.cool_down(0, now=100, seconds=30)
    ring.cool_down(0, now=101, seconds=5)  # a later, shorter 429 must not bring the key back early
    assert 0 not in ring.candidates(129)
    assert 0 in ring.candidates(130.5)
    assert ring.stats(100)[0]["rate_limited"] == 2 and ring.stats(100)[0]["state"] == "cooling"


def test_a_lone_key_cools_down_too_and_the_ring_says_when_it_returns():
    ring = KeyRing(("only",))
    ring.cool_down(0, now=10, seconds=20)
    assert ring.candidates(15) == []
    assert ring.available_at(15) == 30
    assert ring.available_at(31) is None


def test_disabled_keys_stay_out():
    ring = KeyRing(("a", "b"))
    ring.disable(1)
    assert all(1 not in ring.candidates(t) for t in range(5))
    ring.disable(0)
    assert ring.available_at(0) == float("inf")


def test_keyless_worker_has_one_slot_and_stats_are_masked():
    assert KeyRing(()).candidates(0) == [None]
    ring = KeyRing(("sk-abcdefghijklmnopqrstu",))
    ring.record_attempt(0, 5)
    ring.record_success(0)
    (stats,) = ring.stats(5)
    assert stats["key"] == "sk-…rstu" and stats["used"] == 1 and stats["succeeded"] == 1 and stats["last_used"] == 5
    assert "abcdefghijklmnop" not in repr(ring.stats(5)) + repr(ring._states)


@dataclass
class W:
    name: str
    priority: int


def test_priority_orders_by_number_then_name():
    workers = [W("b", 2), W("z", 1), W("a", 2), W("local", 0)]
    assert [w.name for w in PriorityStrategy().order(workers, 0)] == ["local", "z", "a", "b"]


def test_strategy_names_and_aliases():
    assert canonical_strategy("local_first") == "priority" and canonical_strategy(" Priority_First ") == "priority"
    assert canonical_strategy("bogus") is None
    assert make_strategy("priority").name == "priority"


def test_health_probes_peek_without_moving_the_rotation():
    ring = KeyRing(("a", "b"))
    ring.cool_down(0, now=0, seconds=10)
    assert ring.first_usable(5) == "b" and ring.first_usable(11) == "a"
    assert ring.candidates(11) == [0, 1]  # the rotation did not move
    assert KeyRing(()).first_usable(0) is None
