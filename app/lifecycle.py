"""A worker process that stops ends every stream explicitly, never by a silent cut.

What gunicorn 27's gevent worker does on SIGTERM (a `kill -TERM` of the master, or the old
workers of a SIGHUP restart): its handler only sets `alive = False`; within a second the
worker closes its listener and then waits, checking once a second, until every connection
handler has finished, for at most GRACEFUL_TIMEOUT. Past that it kills the handlers
(`server.stop(timeout=1)`: a GreenletExit wherever each is blocked), and the master, which
counts GRACEFUL_TIMEOUT from the moment it sent the signal, SIGKILLs whatever is left. Either
way a stream still running would simply stop: a client could not tell it from a complete one.

So each request this process serves is registered here (`InFlight`) for as long as it runs.
When the SIGTERM arrives (`on_sigterm`, installed by gunicorn's post_worker_init hook), a
greenlet waits until shortly before the deadline (`notice_at`) and then throws
`GatewayStopping` into every request still registered. The relay turns it into the format's
explicit error marker (code `shutting_down`: "the gateway is restarting; retry the request")
and ends its response; a request still waiting for its first token gets a 503 with
Retry-After instead. Streams that end before the notice are untouched. A quick shutdown
(SIGINT, SIGQUIT: gunicorn's worker_int hook) gives the notice at once.

`GatewayStopping` is a `GreenletExit`, like `ClientGone`: code that catches `Exception`
(the dispatcher, requests, urllib3) lets it through, and gunicorn's gevent worker ends the
connection quietly if it lands outside our code (a write to a client that is not reading).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import gevent
from gevent import Greenlet, GreenletExit

from app.errors import ServiceUnavailable

log = logging.getLogger("cortex.lifecycle")

#: The message of the marker (and of the 503): what a client should do about it.
MESSAGE = "the gateway is restarting; retry the request"
#: The Retry-After of a request refused because the process stops (another one is serving).
RETRY_AFTER = 1.0


class GatewayStopping(GreenletExit):
    """Thrown into a request still running when its worker process must stop."""


class ShuttingDown(ServiceUnavailable):
    code, title = "shutting_down", "Shutting down"

    def __init__(self) -> None:
        super().__init__(MESSAGE, retry_after=RETRY_AFTER)


def notice_at(graceful_timeout: float) -> float:
    """Seconds after the SIGTERM at which unfinished requests are told to stop: one second
    before gunicorn's deadline (a quarter of GRACEFUL_TIMEOUT when that is under 4 s), so the
    markers are written and flushed before the master's SIGKILL."""
    return max(0.0, graceful_timeout - min(1.0, graceful_timeout / 4))


class InFlight:
    """The requests this process is serving, by the greenlet that serves each one."""

    __slots__ = ("_greenlets", "stopping", "notified", "_drainer")

    def __init__(self) -> None:
        self._greenlets: set[Greenlet] = set()
        #: A SIGTERM arrived: the process ends once its requests have.
        self.stopping = False
        #: The notice was given: what is still running, or starts now, is refused.
        self.notified = False
        self._drainer: Greenlet | None = None

    def __len__(self) -> int:
        return len(self._greenlets)

    def enter(self) -> Greenlet:
        """Register the current request; a request that starts after the notice (a keep-alive
        connection's next one) is refused at once."""
        if self.notified:
            raise ShuttingDown()
        current = gevent.getcurrent()
        self._greenlets.add(current)
        return current

    def leave(self, greenlet: Greenlet) -> None:
        """The request ended (safe to call twice)."""
        self._greenlets.discard(greenlet)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """A whole-answer request (`stream: false`): registered while it runs; stopped before
        its answer, it is a 503 the client may retry."""
        greenlet = self.enter()
        try:
            yield
        except GatewayStopping:
            raise ShuttingDown() from None
        finally:
            self.leave(greenlet)

    # --- shutdown --------------------------------------------------------------------------

    def shutdown(self, graceful_timeout: float) -> None:
        """The process will stop: let requests run until the notice, then stop them. Called
        from a signal handler, so it only spawns; the greenlet does the rest."""
        if not self.stopping:
            self.stopping = True
            self._drainer = gevent.spawn(self._drain_later, notice_at(graceful_timeout))

    def _drain_later(self, notice: float) -> None:
        log.info("worker stopping: %d request(s) in flight get %.1fs to finish (GRACEFUL_TIMEOUT)", len(self), notice)
        gevent.sleep(notice)
        self.stop_now()

    def stop_now(self, flush: float = 0.0) -> int:
        """Throw GatewayStopping into every request still running; wait up to `flush` seconds
        for them to write their markers. Returns how many were stopped."""
        self.stopping = self.notified = True
        running = [g for g in self._greenlets if not g.dead and g is not gevent.getcurrent()]
        if running:
            log.warning("worker stopping: ending %d unfinished request(s) with an error marker", len(running))
        for greenlet in running:
            greenlet.kill(GatewayStopping, block=False)
        deadline = time.monotonic() + flush
        while self._greenlets and time.monotonic() < deadline:
            gevent.sleep(0.02)
        return len(running)


def on_sigterm(
    handle_exit: Callable[[int, FrameType | None], Any], in_flight: InFlight, graceful_timeout: float
) -> None:
    """Wrap the worker's SIGTERM handler (`handle_exit`, which stops the accept loop) so that
    the in-flight requests are stopped explicitly before GRACEFUL_TIMEOUT runs out."""

    def handler(signum: int, frame: FrameType | None) -> None:
        handle_exit(signum, frame)
        in_flight.shutdown(graceful_timeout)

    signal.signal(signal.SIGTERM, handler)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it
    log.info("worker ready (pid %d); on SIGTERM, requests still running after %gs end with an error marker",
             os.getpid(), notice_at(graceful_timeout))  # fmt: skip
