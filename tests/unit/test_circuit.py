"""The circuit breaker and the retry budget: pure policies, time and randomness injected."""

from __future__ import annotations

import random

import pytest

from app.circuit import CLOSED, HALF_OPEN, OPEN, Circuit
from app.pool import Worker, WorkerPool
from app.retry import Move, RetryBudget, backoff
from app.settings import Settings, WorkerSpec, load_settings
from providers.demo import DemoAdapter
from providers.transport import Transport


def opened(threshold: int = 5, cooldown: float = 30, at: float = 100, **kw: float) -> Circuit:
    circuit = Circuit(threshold, cooldown, **kw)
    for _ in range(threshold):
        circuit.record_failure(at)
    return circuit


# --- circuit ----------------------------------------------------------------------------


def test_five_consecutive_failures_open_it_and_four_do_not():
    circuit = Circuit(5, 30)
    for i in range(4):
        circuit.record_failure(100 + i)
        assert circuit.state(100 + i) == CLOSED and circuit.allow(100 + i)
    circuit.record_failure(104)
    assert circuit.state(104) == OPEN and circuit.consecutive_failures == 5
    assert circuit.opened_until == 134 and not circuit.allow(104)


def test_a_success_resets_the_count_of_consecutive_failures():
    circuit = Circuit(3, 30)
    circuit.record_failure(0)
    circuit.record_failure(0)
    circuit.record_success(0)
    circuit.record_failure(0)
    circuit.record_failure(0)
    assert circuit.state(0) == CLOSED and circuit.consecutive_failures == 2 and circuit.opened_until is None


def test_open_is_skipped_until_the_cooldown_then_exactly_one_trial():
    circuit = opened(at=100)
    assert not any(circuit.allow(t) for t in (100, 110, 129.999))
    assert circuit.state(130) == HALF_OPEN
    assert circuit.allow(130) is True  # the trial
    assert circuit.trial_in_progress
    assert [circuit.allow(130.1 + i) for i in range(5)] == [False] * 5  # everyone else still skips it
    assert circuit.state(131) == HALF_OPEN


def test_a_successful_trial_closes_it():
    circuit = opened(at=100)
    assert circuit.allow(130)
    circuit.record_success(131)
    assert circuit.state(131) == CLOSED and circuit.opened_until is None and circuit.consecutive_failures == 0
    assert all(circuit.allow(131) for _ in range(3))


def test_a_failed_trial_reopens_it_for_a_doubled_cooldown_up_to_the_cap():
    circuit = opened(cooldown=30, at=100, max_cooldown=100)
    assert circuit.allow(130)
    circuit.record_failure(131)
    assert circuit.state(131) == OPEN and circuit.opened_until == 191 and not circuit.allow(190)
    assert circuit.allow(191)
    circuit.record_failure(191)
    assert circuit.opened_until == 291  # 120 would pass the cap of 100
    assert circuit.allow(291)
    circuit.record_failure(291)
    assert circuit.opened_until == 391
    assert circuit.allow(391)
    circuit.record_success(392)  # recovered: the next trip starts from the base cooldown again
    for _ in range(5):
        circuit.record_failure(400)
    assert circuit.opened_until == 430


def test_the_default_cap_is_eight_cooldowns():
    assert Circuit(1, 30).max_cooldown == 240


def test_a_released_trial_lets_the_next_request_be_the_trial():
    circuit = opened(at=0)
    assert circuit.allow(30) and not circuit.allow(30)
    circuit.release_trial()  # the client left before a verdict
    assert circuit.state(31) == HALF_OPEN and circuit.allow(31) and not circuit.allow(31)


def test_a_straggler_failing_while_open_does_not_extend_the_cooldown():
    circuit = opened(at=100)
    circuit.record_failure(110)  # a request that started before the trip
    assert circuit.opened_until == 130 and circuit.allow(130)


def test_threshold_zero_disables_the_breaker_but_still_counts():
    circuit = Circuit(0, 30)
    for _ in range(100):
        circuit.record_failure(0)
    assert not circuit.enabled and circuit.state(0) == CLOSED and circuit.allow(0)
    assert circuit.consecutive_failures == 100 and circuit.opened_until is None


def test_negative_settings_are_refused():
    with pytest.raises(ValueError):
        Circuit(-1, 30)
    with pytest.raises(ValueError):
        Circuit(5, -1)


# --- backoff and the retry budget ----------------------------------------------------------


def test_backoff_is_full_jitter_within_an_exponential_ceiling_and_the_cap():
    rng = random.Random(5)
    for attempt, ceiling in ((1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 2.0), (10_000, 2.0)):
        draws = [backoff(attempt, 0.25, 2.0, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling and min(draws) < 0.1 * ceiling  # spread over the whole range


def test_backoff_is_reproducible_with_a_seeded_rng():
    assert [backoff(3, 0.25, 2, random.Random(1)) for _ in range(3)] == [backoff(3, 0.25, 2, random.Random(1))] * 3


def test_failover_to_another_key_or_worker_does_not_wait():
    budget = RetryBudget(deadline=100, max_attempts=0, rng=random.Random(0))
    assert [budget.admit(10, move) for move in (Move.FIRST, Move.NEXT_KEY, Move.NEXT_WORKER)] == [0, 0, 0]
    assert budget.attempts == 3


def test_retrying_a_failed_worker_backs_off_and_the_waits_grow():
    budget = RetryBudget(deadline=1000, max_attempts=0, backoff_base=1, backoff_max=1000, rng=random.Random(2))
    budget.admit(0, Move.FIRST)
    waits = [budget.admit(0, Move.SAME_WORKER) for _ in range(4)] + [budget.admit(0, Move.NEW_ROUND)]
    for number, wait in enumerate(waits, start=1):
        assert wait is not None and 0 <= wait <= 2 ** (number - 1)
    assert budget.attempts == 6


def test_max_attempts_counts_every_attempt_and_zero_means_only_the_deadline():
    budget = RetryBudget(deadline=100, max_attempts=3, rng=random.Random(0))
    assert [budget.admit(0, Move.NEXT_WORKER) for _ in range(4)] == [0, 0, 0, None]
    assert not budget.may_attempt(0)
    unlimited = RetryBudget(deadline=100, max_attempts=0)
    assert all(unlimited.admit(0, Move.NEXT_WORKER) == 0 for _ in range(1000))


def test_no_attempt_at_or_after_the_deadline_and_no_wait_past_it():
    budget = RetryBudget(deadline=100, max_attempts=0, rng=random.Random(0))
    assert budget.admit(100, Move.NEXT_WORKER) is None and budget.remaining(100) == 0
    outcomes = []
    for seed in range(200):
        tight = RetryBudget(deadline=10.5, max_attempts=0, backoff_base=1, backoff_max=1, rng=random.Random(seed))
        wait = tight.admit(10, Move.SAME_WORKER)
        assert wait is None or 10 + wait < 10.5
        assert tight.attempts == (0 if wait is None else 1)  # a refused attempt is not counted
        outcomes.append(wait is None)
    assert 50 < sum(outcomes) < 150  # both cases happened: draws of [0, 1) against 0.5 s left


def test_negative_max_attempts_is_refused():
    with pytest.raises(ValueError):
        RetryBudget(deadline=1, max_attempts=-1)


# --- wiring into the pool --------------------------------------------------------------------


def test_the_pool_gives_each_worker_its_key_strategy_and_a_circuit_from_settings():
    toml = '[[workers]]\nname = "w"\nbase_url = "http://x/v1"\napi_keys = ["a", "b"]\nkey_strategy = "least_used"'
    settings = load_settings({"CIRCUIT_FAILURES": "2", "CIRCUIT_COOLDOWN": "7"}, toml)
    (worker,) = WorkerPool.from_settings(settings, Transport(pool_size=1))  # no session until first use
    assert worker.keys.strategy == "least_used" and len(worker.keys) == 2
    assert (worker.circuit.failure_threshold, worker.circuit.cooldown) == (2, 7)


def test_a_worker_built_by_hand_gets_the_default_policies():
    worker = Worker(WorkerSpec("w", "demo"), DemoAdapter(delay=0))
    assert worker.keys.strategy == Settings.key_strategy == "round_robin"
    assert (worker.circuit.failure_threshold, worker.circuit.cooldown) == (5, 30)
    own = Circuit(1, 1)
    assert Worker(WorkerSpec("w", "demo"), DemoAdapter(delay=0), circuit=own).circuit is own
