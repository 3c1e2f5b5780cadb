"""Deadlines as gevent timeouts that surface as `UpstreamError(TIMEOUT)`.

`gevent.Timeout` is a BaseException raised wherever the greenlet is blocked (here: inside a
socket read of requests). Each helper owns its timer and re-raises any other Timeout, so a
deadline set further out is never mistaken for ours. The timers are cancelled before control
returns to the caller, so a timeout never fires while the WSGI server writes to the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import gevent

from providers.errors import ErrorKind, UpstreamError

T = TypeVar("T")


@contextmanager
def deadline(seconds: float, message: str) -> Iterator[None]:
    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as fired:
        if fired is not timer:
            raise
        raise UpstreamError(ErrorKind.TIMEOUT, message) from None
    finally:
        timer.close()


def next_within(iterator: Iterator[T], seconds: float, message: str) -> T | object:
    """next(iterator) bounded in time; returns `END` when the iterator is exhausted."""
    with deadline(seconds, message):
        return next(iterator, END)


END = object()
