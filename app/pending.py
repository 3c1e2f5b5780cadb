"""A dispatch running in its own greenlet, so the request's greenlet can wait on it with a
bound: to send keep-alives while the first token is slow (FIELD-NOTES 4), and to abandon it
the moment the client is gone (FIELD-NOTES 5).

Failures are captured, not raised inside the greenlet: gevent prints the traceback of any
greenlet that dies of an exception, and a 503 is an answer, not a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent

from app.dispatcher import Dispatch

log = logging.getLogger("cortex.dispatch")


class PendingDispatch:
    __slots__ = ("_greenlet", "_value", "_error", "_taken")

    def __init__(self, open_stream: Callable[[], Dispatch]) -> None:
        self._value: Dispatch | None = None
        self._error: Exception | None = None
        self._taken = False
        self._greenlet = gevent.spawn(self._run, open_stream)

    def _run(self, open_stream: Callable[[], Dispatch]) -> None:
        try:
            self._value = open_stream()
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request by result()
            self._error = exc

    def wait(self, timeout: float | None) -> bool:
        """True once the dispatch has committed or failed (False: still waiting)."""
        self._greenlet.join(timeout)
        return self._greenlet.dead

    def result(self) -> Dispatch:
        """The committed dispatch (the caller now owns it), or the dispatch's exception."""
        if self._error is not None:
            raise self._error
        assert self._value is not None, "result() before the dispatch finished"
        self._taken = True
        return self._value

    def cancel(self) -> None:
        """Abandon the dispatch: kill the greenlet (its attempt closes the upstream on the way
        out) and close a dispatch that committed but was never taken."""
        if not self._greenlet.dead:
            self._greenlet.kill(block=True, timeout=1)
        if self._value is not None and not self._taken:
            self._taken = True
            self._value.close()
