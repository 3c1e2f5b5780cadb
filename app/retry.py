"""Retry policy for one request: how many attempts, and how long to wait before each.

Retries belong to the dispatcher alone (rule 12); this is the pure arithmetic it asks.
Time and randomness are arguments (rule 13), so tests neither sleep nor flake.

When to wait (the `Move` the dispatcher is about to make):
- FIRST, NEXT_KEY, NEXT_WORKER: no wait. Another key or another worker is independent
  evidence; waiting would only add latency to a failover the client never sees.
- SAME_WORKER (the same worker again after a server error or timeout) and NEW_ROUND (every
  eligible worker failed once and the dispatcher loops over them again): exponential
  backoff with full jitter, because now we knock on a door that just failed, and jitter
  keeps many requests that failed together from returning together.
The backoff exponent counts the backoffs of this request, so successive waits grow.

A wait never runs past the request's deadline: if the wait would reach it, no attempt is
left (`admit` says None), since an attempt starting at the deadline has no time to answer.
"""

from __future__ import annotations

import enum
import random

#: The jitter's source for every budget: `random.Random()` seeds itself from 2.5 KB of
#: os.urandom, too dear to build once per request.
_JITTER = random.Random()


class Move(enum.Enum):
    FIRST = "first"
    NEXT_KEY = "next_key"
    NEXT_WORKER = "next_worker"
    SAME_WORKER = "same_worker"
    NEW_ROUND = "new_round"


_BACKS_OFF = frozenset({Move.SAME_WORKER, Move.NEW_ROUND})


def backoff(attempt_number: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before backoff number `attempt_number` (1 = the first): uniform in
    [0, min(cap, base * 2 ** (attempt_number - 1))] ("full jitter")."""
    exponent = min(max(attempt_number - 1, 0), 62)  # 2**62 already dwarfs any cap; no overflow
    ceiling = min(cap, base * float(2**exponent))
    return rng.uniform(0.0, max(ceiling, 0.0))


class RetryBudget:
    """One request's attempts: at most `max_attempts` (0 = no limit but the time budget),
    each started before `deadline` (same clock as the `now` passed in)."""

    def __init__(
        self,
        deadline: float,
        max_attempts: int = 6,
        backoff_base: float = 0.25,
        backoff_max: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 0:
            raise ValueError(f"max_attempts must not be negative, got {max_attempts!r}")
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = rng if rng is not None else _JITTER
        self.attempts = 0
        self._backoffs = 0

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def may_attempt(self, now: float) -> bool:
        """Is there an attempt left, ignoring any wait?"""
        if self.max_attempts and self.attempts >= self.max_attempts:
            return False
        return now < self.deadline

    def admit(self, now: float, move: Move) -> float | None:
        """None: stop, no attempt is left. Else the seconds to wait before making the attempt,
        which is counted now (call once per attempt actually made)."""
        if not self.may_attempt(now):
            return None
        wait = 0.0
        if move in _BACKS_OFF:
            wait = backoff(self._backoffs + 1, self.backoff_base, self.backoff_max, self._rng)
            if now + wait >= self.deadline:
                return None
            self._backoffs += 1
        self.attempts += 1
        return wait
