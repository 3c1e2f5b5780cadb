"""A worker's key ring: which key to try first, cooldown on 429, disabling on 401/403.

Policy only; time is passed in (rule 13) so tests never sleep, and the one source of
randomness (the `random` strategy) is an injectable `random.Random`. One ring per worker
per process; the dispatcher asks it which keys to try, in order, and reports what happened.

Rotation strategies (`KEY_STRATEGIES`), all applied to the usable keys only:
- round_robin: each request starts one key further on, so consecutive requests spread evenly.
- least_used: fewest attempts (`used`) first. Ties go by position counted from a rotating
  start, so concurrent requests that arrive before any attempt is recorded still spread.
- random: a fresh shuffle per request; uneven in the short run, but it needs no shared
  state to avoid herding when several processes rotate the same keys in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

KEY_STRATEGIES = ("round_robin", "least_used", "random")


@dataclass
class KeyState:
    key: str = field(repr=False)
    cooldown_until: float = 0.0
    disabled: bool = False
    used: int = 0
    succeeded: int = 0
    rate_limited: int = 0
    failed: int = 0
    #: How often the key was disabled (an upstream refused it); above 1, `enable` brought it back.
    disabled_count: int = 0
    last_used: float | None = None

    def usable(self, now: float) -> bool:
        return not self.disabled and self.cooldown_until <= now


class KeyObserver(Protocol):
    """Told when a key is put to rest or refused here (app/shared_state.py passes it on to the
    other processes and instances). Called on the request path: it must only queue."""

    def key_cooled(self, index: int, until: float) -> None: ...

    def key_disabled(self, index: int) -> None: ...


class KeyRing:
    """Keys of one worker. A worker without keys (a local server) has one keyless slot."""

    #: Set by app/shared_state.py when state is shared; None: nobody is told.
    observer: KeyObserver | None = None

    def __init__(self, keys: tuple[str, ...], strategy: str = "round_robin", rng: random.Random | None = None) -> None:
        if strategy not in KEY_STRATEGIES:
            raise ValueError(f"unknown key strategy {strategy!r} (known: {', '.join(KEY_STRATEGIES)})")
        self.strategy = strategy
        self._states = [KeyState(k) for k in keys]
        self._cursor = 0
        self._rng = rng if rng is not None else random.Random()

    def __len__(self) -> int:
        return len(self._states)

    @property
    def keyless(self) -> bool:
        return not self._states

    def key(self, index: int | None) -> str | None:
        return None if index is None else self._states[index].key

    def candidates(self, now: float) -> list[int | None]:
        """Usable key indexes in the order to try them (by the ring's strategy); [None] for a
        keyless worker, [] when every key is cooling down or disabled."""
        if not self._states:
            return [None]
        count = len(self._states)
        if self.strategy == "random":
            order = list(range(count))
            self._rng.shuffle(order)
        else:
            start = self._cursor
            self._cursor = (start + 1) % count
            order = [(start + i) % count for i in range(count)]
            if self.strategy == "least_used":
                order.sort(key=lambda i: self._states[i].used)  # stable: ties keep the rotation
        return [i for i in order if self._states[i].usable(now)]

    def first_usable(self, now: float) -> str | None:
        """A usable key without moving the rotation (for health probes); None if keyless or none."""
        return next((s.key for s in self._states if s.usable(now)), None)

    def record_attempt(self, index: int | None, now: float) -> None:
        if index is not None:
            state = self._states[index]
            state.used += 1
            state.last_used = now

    def record_success(self, index: int | None) -> None:
        if index is not None:
            self._states[index].succeeded += 1

    def record_failure(self, index: int | None) -> None:
        if index is not None:
            self._states[index].failed += 1

    def cool_down(self, index: int | None, now: float, seconds: float) -> None:
        """Rest a key after a 429. A later 429 never shortens an existing cooldown."""
        if index is None:
            return
        state = self._states[index]
        state.rate_limited += 1
        state.cooldown_until = max(state.cooldown_until, now + seconds)
        if self.observer is not None:
            self.observer.key_cooled(index, state.cooldown_until)

    def disable(self, index: int | None) -> None:
        """A key the upstream refused (401/403) stays out until an operator enables it (the admin
        API) or its worker's configuration changes (a reload keeps an unchanged worker's ring)."""
        if index is not None and not self._states[index].disabled:
            self._states[index].disabled = True
            self._states[index].disabled_count += 1
            if self.observer is not None:
                self.observer.key_disabled(index)

    def enable(self, index: int | None) -> None:
        """An operator vouches for the key again: back in rotation at once, without its cooldown."""
        if index is not None:
            state = self._states[index]
            state.disabled = False
            state.cooldown_until = 0.0

    # --- what another process or instance saw (app/shared_state.py); the observer is not told

    def hold(self, index: int, until: float) -> None:
        """Another process cooled this key until `until`: never shortens a cooldown seen here."""
        state = self._states[index]
        state.cooldown_until = max(state.cooldown_until, until)

    def refuse(self, index: int) -> None:
        """Another process saw the upstream refuse this key: out of rotation here too (not
        counted in `disabled_count`, which is what this process saw)."""
        self._states[index].disabled = True

    def available_at(self, now: float) -> float | None:
        """None if a key is usable now; else when the earliest cooling key returns
        (inf when every key is disabled)."""
        if not self._states or any(s.usable(now) for s in self._states):
            return None
        cooling = [s.cooldown_until for s in self._states if not s.disabled]
        return min(cooling) if cooling else float("inf")

    def stats(self, now: float) -> list[dict[str, object]]:
        """Per-key counters with the key masked, for operators."""
        from providers.http import mask_key

        return [
            {
                "key": mask_key(s.key),
                "state": "disabled" if s.disabled else ("cooling" if s.cooldown_until > now else "ready"),
                "cooldown_remaining": max(0.0, round(s.cooldown_until - now, 3)),
                "used": s.used,
                "succeeded": s.succeeded,
                "rate_limited": s.rate_limited,
                "failed": s.failed,
                "disabled_count": s.disabled_count,
                "last_used": s.last_used,
            }
            for s in self._states
        ]
