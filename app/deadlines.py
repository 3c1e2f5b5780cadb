"""Deadlines as gevent timeouts that surface as `UpstreamError(TIMEOUT)`.

`gevent.Timeout` is a BaseException raised wherever the greenlet is blocked (here: inside a
socket read of requests). Each helper owns its timer and re-raises any other Timeout, so a
deadline set further out is never mistaken for ours. The timers are cancelled before control
returns to the caller, so a timeout never fires while the WSGI server writes to the client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import gevent
from gevent import get_hub, getcurrent

from providers.errors import ErrorKind, UpstreamError

T = TypeVar("T")


class deadline:  # noqa: N801 - used like a function: `with deadline(5, "why"):`
    """Raise UpstreamError(TIMEOUT, message) if the block is still running after `seconds`.

    A class rather than a generator-based context manager: it runs once per streamed event,
    and this form costs a third as much.
    """

    __slots__ = ("_timer", "_message")

    def __init__(self, seconds: float, message: str) -> None:
        self._timer = gevent.Timeout(seconds)
        self._message = message

    def __enter__(self) -> None:
        self._timer.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.close()
        if exc is not None and exc is self._timer:
            raise UpstreamError(ErrorKind.TIMEOUT, self._message) from None


END = object()


class _Expired(BaseException):
    """Thrown by a Watchdog into the greenlet it guards (a BaseException, as gevent.Timeout is,
    so no `except Exception` on the way swallows it)."""

    def __init__(self, watchdog: Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog


class Watchdog:
    """next(iterator) bounded in time, for a whole stream, with one timer instead of one per event.

    A stream of 20 events each waited on with a `deadline` creates, starts and closes 20 timers,
    although nearly every event is already in the buffer or arrives within milliseconds. The
    watchdog keeps one timer, armed for the first wait: when it fires, a wait still running
    past its due time is ended (the greenlet gets `_Expired`, which becomes the UpstreamError),
    and otherwise it re-arms for what is left of the current wait, or sleeps until the next
    one. So a stream costs one timer wake-up per IDLE_TIMEOUT, not a timer per event. Like
    `deadline`, it only ever interrupts the wait itself, never the caller's writes.
    """

    __slots__ = ("_greenlet", "_timer", "_fires_at", "_due", "_message")

    def __init__(self) -> None:
        self._greenlet: Any = None
        self._timer: Any = None
        self._fires_at = 0.0
        #: While waiting: when the wait must end (monotonic); else None.
        self._due: float | None = None
        self._message = ""

    def next(self, iterator: Iterator[T], seconds: float, message: str) -> T | object:
        """next(iterator) bounded by `seconds`; returns `END` when the iterator is exhausted."""
        due = time.monotonic() + seconds
        self._greenlet = getcurrent()
        self._message = message
        if self._timer is None or self._fires_at > due:  # none yet, or this wait is shorter
            self._arm(seconds)
        self._due = due
        try:
            return next(iterator, END)
        except _Expired as exc:
            if exc.watchdog is not self:
                raise
            raise UpstreamError(ErrorKind.TIMEOUT, self._message) from None
        finally:
            self._due = None

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._fires_at = time.monotonic() + seconds
        self._timer = get_hub().loop.timer(max(seconds, 0.001))
        self._timer.start(self._fire)

    def _fire(self) -> None:
        """Event-loop callback: the guarded greenlet is suspended, inside `next` if `_due` is set."""
        self._timer.close()
        self._timer = None
        due = self._due
        if due is None:
            return  # between waits: the next wait arms again
        left = due - time.monotonic()
        if left > 0:
            self._arm(left)
        else:
            self._greenlet.throw(_Expired(self))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
