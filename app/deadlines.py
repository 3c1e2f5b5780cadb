"""Deadlines as gevent timeouts that surface as `UpstreamError(TIMEOUT)`.

`gevent.Timeout` is a BaseException raised wherever the greenlet is blocked (here: inside a
socket read of requests). Each helper owns its timer and re-raises any other Timeout, so a
deadline set further out is never mistaken for ours. The timers are cancelled before control
returns to the caller, so a timeout never fires while the WSGI server writes to the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

import gevent

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


def next_within(iterator: Iterator[T], seconds: float, message: str) -> T | object:
    """next(iterator) bounded in time; returns `END` when the iterator is exhausted."""
    with deadline(seconds, message):
        return next(iterator, END)


END = object()
