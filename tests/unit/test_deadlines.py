"""The stream watchdog: one timer per stream that ends a wait running past its due time,
and never interrupts the caller between waits."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from app.deadlines import END, Watchdog
from providers.errors import ErrorKind, UpstreamError


def paced(*pauses: float) -> Iterator[int]:
    for index, pause in enumerate(pauses):
        gevent.sleep(pause)
        yield index


def test_events_within_their_wait_pass_and_the_end_is_reported() -> None:
    watchdog = Watchdog()
    events = paced(0.0, 0.05, 0.05)
    try:
        assert [watchdog.next(events, 1.0, "idle") for _ in range(4)] == [0, 1, 2, END]
    finally:
        watchdog.close()


def test_a_wait_past_its_due_time_ends_with_the_message_of_that_wait() -> None:
    watchdog = Watchdog()
    events = paced(0.0, 5.0)
    try:
        assert watchdog.next(events, 0.2, "first") == 0
        with pytest.raises(UpstreamError) as caught:
            watchdog.next(events, 0.2, "silent for 0.2s")
        assert caught.value.kind is ErrorKind.TIMEOUT and caught.value.message == "silent for 0.2s"
    finally:
        watchdog.close()


def test_time_spent_between_waits_is_not_counted() -> None:
    """The timer armed for the first wait fires while the caller is busy elsewhere (a slow
    client write): nothing is thrown, and the next wait gets its whole allowance."""
    watchdog = Watchdog()
    events = paced(0.0, 0.15)
    try:
        assert watchdog.next(events, 0.2, "idle") == 0
        gevent.sleep(0.4)  # the caller writes to a slow client; the first timer fires meanwhile
        assert watchdog.next(events, 0.2, "idle") == 1
    finally:
        watchdog.close()


def test_a_shorter_wait_than_the_armed_timer_is_still_kept() -> None:
    """The total budget can make a wait shorter than the idle timeout armed before it."""
    watchdog = Watchdog()
    events = paced(0.0, 5.0)
    try:
        assert watchdog.next(events, 30.0, "idle") == 0
        with pytest.raises(UpstreamError, match="budget"):
            with gevent.Timeout(3, AssertionError("the shorter wait was not enforced")):
                watchdog.next(events, 0.2, "budget")
    finally:
        watchdog.close()


def test_another_watchdogs_expiry_passes_through() -> None:
    outer, inner = Watchdog(), Watchdog()

    def nested() -> Iterator[int]:
        yield int(inner.next(paced(5.0), 30.0, "inner"))  # type: ignore[call-overload]

    try:
        with pytest.raises(UpstreamError, match="outer"):
            outer.next(nested(), 0.2, "outer")
    finally:
        outer.close()
        inner.close()
