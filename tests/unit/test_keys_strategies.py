"""Key-ring policy and routing order, with time passed in (no sleeping)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from app.keys import KeyRing
from app.strategies import (
    LatencyStrategy,
    LeastLoadedStrategy,
    PriorityStrategy,
    RoundRobinStrategy,
    canonical_strategy,
    make_strategy,
)


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
    in_flight: int = 0


def test_priority_orders_by_number_then_name():
    workers = [W("b", 2), W("z", 1), W("a", 2), W("local", 0)]
    assert [w.name for w in PriorityStrategy().order(workers, 0)] == ["local", "z", "a", "b"]


def test_strategy_names_and_aliases():
    assert canonical_strategy("local_first") == "priority" and canonical_strategy(" Priority_First ") == "priority"
    assert canonical_strategy("bogus") is None
    assert make_strategy("priority").name == "priority"
    for name in ("round_robin", "least_loaded", "latency"):
        assert canonical_strategy(name) == name and make_strategy(name).name == name
    assert make_strategy("latency", epsilon=0.5).epsilon == 0.5  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown routing strategy"):
        make_strategy("fastest")
    with pytest.raises(TypeError):
        make_strategy("priority", epsilon=0.5)


def test_health_probes_peek_without_moving_the_rotation():
    ring = KeyRing(("a", "b"))
    ring.cool_down(0, now=0, seconds=10)
    assert ring.first_usable(5) == "b" and ring.first_usable(11) == "a"
    assert ring.candidates(11) == [0, 1]  # the rotation did not move
    assert KeyRing(()).first_usable(0) is None


# --- key rotation strategies ---------------------------------------------------------------


def test_unknown_key_strategy_is_a_value_error():
    with pytest.raises(ValueError, match="unknown key strategy 'lru'"):
        KeyRing(("a",), "lru")


def test_least_used_picks_the_least_used_key():
    ring = KeyRing(("a", "b", "c"), "least_used")
    for index, times in ((0, 3), (1, 1), (2, 2)):
        for _ in range(times):
            ring.record_attempt(index, 0)
    assert ring.candidates(0) == [1, 2, 0]
    ring.record_attempt(1, 0)
    ring.record_attempt(1, 0)  # b: 3, c: 2, a: 3
    assert ring.candidates(0)[0] == 2


def test_least_used_rotates_among_ties_and_skips_resting_keys():
    ring = KeyRing(("a", "b", "c"), "least_used")
    # nothing recorded yet (concurrent requests): ties rotate instead of all picking key 0
    assert [ring.candidates(0)[0] for _ in range(3)] == [0, 1, 2]
    ring.record_attempt(2, 0)
    assert [ring.candidates(0) for _ in range(2)] == [[0, 1, 2], [1, 0, 2]]
    ring.cool_down(0, now=0, seconds=10)
    assert ring.candidates(5) == [1, 2]


def test_random_covers_every_key_and_is_reproducible_with_a_seed():
    def firsts(seed: int) -> list[int | None]:
        ring = KeyRing(("a", "b", "c", "d"), "random", random.Random(seed))
        orders = [ring.candidates(0) for _ in range(200)]
        assert all(sorted(o) == [0, 1, 2, 3] for o in orders)  # every key, once each
        return [o[0] for o in orders]

    run = firsts(7)
    assert run == firsts(7)
    assert run != firsts(8)
    assert set(Counter(run)) == {0, 1, 2, 3} and min(Counter(run).values()) >= 30


def test_random_never_offers_a_cooling_or_disabled_key():
    ring = KeyRing(("a", "b", "c"), "random", random.Random(1))
    ring.cool_down(0, now=0, seconds=10)
    ring.disable(2)
    assert all(ring.candidates(t) == [1] for t in range(10))
    assert sorted(ring.candidates(10)) == [0, 1]


@pytest.mark.parametrize("strategy", ["round_robin", "least_used", "random"])
def test_a_cooling_key_is_no_candidate_before_its_time_and_is_again_after(strategy):
    ring = KeyRing(("a", "b"), strategy, random.Random(0))
    ring.cool_down(1, now=100, seconds=20)
    assert all(1 not in ring.candidates(t) for t in (100, 110, 119.999))
    assert all(1 in ring.candidates(t) for t in (120, 121, 500))


def test_enable_brings_a_disabled_key_back_and_clears_its_cooldown():
    ring = KeyRing(("a", "b"))
    ring.cool_down(0, now=0, seconds=100)
    ring.disable(0)
    assert all(0 not in ring.candidates(t) for t in (0, 200))
    ring.enable(0)
    assert 0 in ring.candidates(1)  # back at once, though its cooldown would run to 100
    assert ring.stats(1)[0]["state"] == "ready" and ring.stats(1)[0]["disabled_count"] == 1
    ring.enable(None)  # keyless: nothing to do


def test_counters_follow_what_happened_to_each_key():
    ring = KeyRing(("a", "b"))
    ring.record_attempt(0, 1)
    ring.record_failure(0)
    ring.cool_down(0, 1, 5)
    ring.record_attempt(1, 2)
    ring.record_success(1)
    ring.disable(1)
    ring.disable(1)  # already out: counted once
    a, b = ring.stats(2)
    assert (a["used"], a["failed"], a["rate_limited"], a["succeeded"], a["last_used"]) == (1, 1, 1, 0, 1)
    assert (b["used"], b["succeeded"], b["disabled_count"], b["state"], b["last_used"]) == (1, 1, 1, "disabled", 2)


# --- routing strategies ---------------------------------------------------------------------


def test_round_robin_gives_each_of_three_the_lead_exactly_ten_times_in_thirty():
    strategy = RoundRobinStrategy()
    workers = [W("a", 1), W("b", 2), W("c", 3)]
    rng = random.Random(3)
    leads = []
    for call in range(30):
        shuffled = workers[:]
        rng.shuffle(shuffled)  # each request hands its candidates in its own order
        ranked = strategy.order(shuffled, now=call)
        assert sorted(w.name for w in ranked) == ["a", "b", "c"]
        leads.append(ranked[0].name)
        strategy.observe(ranked[0].name, 0.1, True, call)
    assert Counter(leads) == {"a": 10, "b": 10, "c": 10}
    assert leads[:6] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_stays_even_when_the_candidate_list_changes():
    strategy = RoundRobinStrategy()
    a, b, c = W("a", 1), W("b", 1), W("c", 1)
    pair_leads, trio_leads = Counter(), Counter()
    for _ in range(32):  # requests for a model only a and b serve, interleaved with ones all three serve
        pair_leads[strategy.order([b, a], 0)[0].name] += 1
        trio_leads[strategy.order([c, a, b], 0)[0].name] += 1
    assert pair_leads == {"a": 16, "b": 16}
    # c, which the pair requests leave idle, leads more of the requests it can serve,
    # so the total load evens out (24, 24, 16), where a rotation per candidate list gives (27, 27, 10)
    assert trio_leads == {"a": 8, "b": 8, "c": 16}


def test_round_robin_failover_order_continues_the_rotation():
    strategy = RoundRobinStrategy()
    workers = [W("a", 1), W("b", 1), W("c", 1)]
    assert [[w.name for w in strategy.order(workers, 0)] for _ in range(3)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
    ]
    assert strategy.order([], 0) == []


def test_least_loaded_prefers_fewest_in_flight_then_priority_then_name():
    workers = [W("busy", 0, in_flight=4), W("z", 5, in_flight=1), W("b", 2, in_flight=1), W("a", 2, in_flight=1)]
    assert [w.name for w in LeastLoadedStrategy().order(workers, 0)] == ["a", "b", "z", "busy"]
    assert [w.name for w in LeastLoadedStrategy().order([W("y", 1), W("x", 1), W("p", 0)], 0)] == ["p", "x", "y"]


def test_latency_prefers_the_fast_worker():
    strategy = LatencyStrategy(epsilon=0, explore_after=1e9)
    fast, slow = W("fast", 5), W("slow", 1)
    strategy.observe("slow", 2.0, True, 0)
    strategy.observe("fast", 0.2, True, 0)
    assert all(strategy.order([slow, fast], t)[0] is fast for t in range(100))
    assert strategy.latency("fast") == pytest.approx(0.2) and strategy.latency("nobody") is None


def test_latency_averages_with_alpha_and_a_failure_counts_as_a_penalty():
    strategy = LatencyStrategy(alpha=0.5, epsilon=0, explore_after=1e9, failure_penalty=10)
    strategy.observe("w", 1.0, True, 0)
    strategy.observe("w", 3.0, True, 1)
    assert strategy.latency("w") == pytest.approx(2.0)
    strategy.observe("w", None, False, 2)
    assert strategy.latency("w") == pytest.approx(6.0)
    strategy.observe("w", None, True, 3)  # a success without timing changes nothing
    assert strategy.latency("w") == pytest.approx(6.0)
    strategy.observe("other", 3.0, True, 3)
    assert [w.name for w in strategy.order([W("w", 0), W("other", 9)], 4)] == ["other", "w"]


def test_latency_tries_a_never_seen_worker_first():
    strategy = LatencyStrategy(epsilon=0)
    strategy.observe("fast", 0.1, True, 0)
    ranked = strategy.order([W("fast", 0), W("new-b", 9), W("new-a", 3)], 1)
    assert [w.name for w in ranked] == ["new-a", "new-b", "fast"]


def test_latency_exploration_probes_the_slow_worker_within_a_few_calls():
    strategy = LatencyStrategy(epsilon=0.1, explore_after=1e9, rng=random.Random(42))
    fast, slow = W("fast", 0), W("slow", 0)
    strategy.observe("fast", 0.1, True, 0)
    strategy.observe("slow", 5.0, True, 0)
    leads = [strategy.order([fast, slow], t)[0].name for t in range(100)]
    assert 1 <= leads.count("slow") <= 20  # probed (about epsilon of the time), the fast one keeps the rest
    assert "slow" in leads[:20]
    quiet = LatencyStrategy(epsilon=0, explore_after=1e9)
    quiet.observe("fast", 0.1, True, 0)
    quiet.observe("slow", 5.0, True, 0)
    assert all(quiet.order([fast, slow], t)[0] is fast for t in range(100))  # the control


def test_latency_re_probes_a_stale_worker_once_per_explore_after():
    strategy = LatencyStrategy(epsilon=0, explore_after=30)
    fast, slow = W("fast", 0), W("slow", 0)
    strategy.observe("slow", None, False, 0)  # failed at t=0
    strategy.observe("fast", 0.1, True, 0)
    assert strategy.order([fast, slow], 29)[0] is fast
    assert strategy.order([fast, slow], 30)[0] is slow  # stale: re-probed once
    assert strategy.order([fast, slow], 31)[0] is fast  # not again for the next request
    for t in range(32, 52):  # it recovered: the probe's samples pull its average down
        strategy.observe("slow", 0.05, True, t)
        strategy.observe("fast", 0.1, True, t)
    assert strategy.latency("slow") < strategy.latency("fast")
    assert strategy.order([fast, slow], 52)[0] is slow


def test_latency_with_a_seeded_rng_is_reproducible():
    def run(seed: int) -> list[str]:
        strategy = LatencyStrategy(rng=random.Random(seed), explore_after=1e9)
        strategy.observe("a", 0.1, True, 0)
        strategy.observe("b", 0.5, True, 0)
        strategy.observe("c", 0.9, True, 0)
        return [w.name for t in range(50) for w in strategy.order([W("a", 0), W("b", 0), W("c", 0)], t)[:1]]

    assert run(1) == run(1)
    assert {"b", "c"} <= set(run(1) + run(2) + run(3))


def test_stateless_strategies_accept_observations():
    for strategy in (PriorityStrategy(), LeastLoadedStrategy(), RoundRobinStrategy()):
        strategy.observe("w", 0.1, True, 0)
        strategy.observe("w", None, False, 0)
