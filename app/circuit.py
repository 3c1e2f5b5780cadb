"""A circuit breaker per worker: the live-traffic view of a worker, beside health's probes.

    closed --(failure_threshold consecutive failures)--> open
    open --(cooldown elapsed)--> half_open
    half_open: one trial request at a time is allowed through; everyone else skips the worker
    half_open --(trial succeeds)--> closed          (cooldown back to its base value)
    half_open --(trial fails)--> open               (cooldown doubled, capped at max_cooldown)

Why: a worker that times out costs every request the full first-token timeout before it
fails over. After a few such failures in a row, skipping it for a while is cheaper; letting
exactly one request probe it afterwards finds out when it has recovered without sending a
burst at a server that is still down. Doubling the cooldown after each failed trial keeps a
long outage from costing one slow request every `cooldown` seconds; the cap (8 x cooldown
unless given) bounds how late a recovery is noticed. A success closes the circuit in any
state: an answer is the best evidence that the worker works.

What counts as a failure is decided by the caller, not here. The suggested rule for the
dispatcher: connect, timeout, server, malformed_stream, interrupted and empty are failures
of the worker; a committed stream (first content) is a success; rate_limited, quota and
auth are about one key (the key ring handles them), and not_found, bad_request and blocked
are about the request, so those give no verdict: call `release_trial()` instead.

Time is an argument (rule 13). A failure threshold of 0 disables the breaker: it stays
closed and always allows, while still counting failures for status pages.
"""

from __future__ import annotations

from typing import Protocol

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitObserver(Protocol):
    """Told when the circuit opens or closes here (app/shared_state.py passes it on to the
    other processes and instances). Called on the request path: it must only queue."""

    def circuit_opened(self, until: float) -> None: ...

    def circuit_closed(self) -> None: ...


class Circuit:
    #: Set by app/shared_state.py when state is shared; None: nobody is told.
    observer: CircuitObserver | None = None

    def __init__(self, failure_threshold: int, cooldown: float, max_cooldown: float | None = None) -> None:
        if failure_threshold < 0 or cooldown < 0:
            raise ValueError("failure_threshold and cooldown must not be negative")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown if max_cooldown is not None else 8 * cooldown)
        self._failures = 0
        self._opened_until: float | None = None
        self._next_cooldown = cooldown
        self._trial = False

    @property
    def enabled(self) -> bool:
        return self.failure_threshold > 0

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def opened_until(self) -> float | None:
        """When the open state ends (half-open from then); None while closed. For status pages."""
        return self._opened_until

    @property
    def trial_in_progress(self) -> bool:
        return self._trial

    def state(self, now: float) -> str:
        if self._opened_until is None:
            return CLOSED
        return OPEN if now < self._opened_until else HALF_OPEN

    def blocked(self, now: float) -> bool:
        """Would `allow` refuse now? (Asked when ordering workers; reserves nothing.)"""
        state = self.state(now)
        return state == OPEN or (state == HALF_OPEN and self._trial)

    def allow(self, now: float) -> bool:
        """May a request try this worker now? In half_open a True reserves the one trial slot:
        the caller must then report `record_success`, `record_failure` or `release_trial`."""
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == OPEN or self._trial:
            return False
        self._trial = True
        return True

    def record_success(self, now: float) -> None:
        was_open = self._opened_until is not None
        self.close()
        if was_open and self.observer is not None:
            self.observer.circuit_closed()

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if not self.enabled:
            return
        state = self.state(now)
        if state == HALF_OPEN:
            self._trip(now)  # the trial failed (or a straggler did): rest again, longer
        elif state == CLOSED and self._failures >= self.failure_threshold:
            self._trip(now)
        # OPEN: a request that started before the trip; the cooldown already runs

    def release_trial(self) -> None:
        """The trial ended without a verdict (the client left, a key-level error): let the
        next request be the trial instead."""
        self._trial = False

    def _trip(self, now: float) -> None:
        self._opened_until = now + self._next_cooldown
        self._next_cooldown = min(self._next_cooldown * 2, self.max_cooldown)
        self._trial = False
        if self.observer is not None:
            self.observer.circuit_opened(self._opened_until)

    # --- what another process or instance saw (app/shared_state.py); the observer is not told

    def close(self) -> None:
        """Closed: by a success here (`record_success`), or one elsewhere."""
        self._failures = 0
        self._opened_until = None
        self._next_cooldown = self.cooldown
        self._trial = False

    def hold_open(self, until: float) -> None:
        """Another process opened the circuit until `until`: open here too, never shorter than
        an open state of our own. A trial in flight here gives its verdict as a straggler."""
        if self.enabled:
            self._opened_until = until if self._opened_until is None else max(self._opened_until, until)
            self._trial = False
