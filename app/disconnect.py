"""Cancel the upstream call within a second of the client leaving, whatever the request is
doing: waiting for a connection, for the first token, for the next chunk after a long pause,
or for a whole JSON answer (FIELD-NOTES 5).

A WSGI app only learns of a disconnect when a write fails, and a request that is waiting
writes nothing. So while a chat request is in progress, a small greenlet peeks at the
client's socket every `INTERVAL` seconds; when it reads end-of-file, it throws `ClientGone`
into the request's greenlet, wherever that is blocked. The `finally` blocks on the way out
(the attempt's, the relay's) close the upstream response, which closes its connection.

`ClientGone` is a `GreenletExit`, so gevent does not report it as a crash and gunicorn's
gevent worker ends the request quietly. Under Flask's test client there is no socket, and
no watch.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gevent
from gevent import GreenletExit

log = logging.getLogger("cortex.relay")

INTERVAL = 0.25


class ClientGone(GreenletExit):
    """The client closed its connection while its request was in progress."""


def peer_closed(sock: socket.socket) -> bool | None:
    """True: the peer closed (EOF or reset). False: still there, nothing to read. None: it sent
    more bytes (a pipelined request), so EOF cannot be seen any more, or the server has
    closed the socket itself (its fileno is -1), so there is nothing left to watch."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return True if sock.recv(1, socket.MSG_PEEK) == b"" else None
    except ValueError:
        return None
    except OSError:
        return True


class ClientWatch:
    __slots__ = ("_sock", "_target", "_greenlet", "_stopped")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._target = gevent.getcurrent()
        self._stopped = False
        self._greenlet = gevent.spawn(self._run)

    @classmethod
    def start(cls, environ: Mapping[str, Any]) -> ClientWatch | None:
        sock = environ.get("gunicorn.socket")
        return cls(sock) if isinstance(sock, socket.socket) else None

    def _run(self) -> None:
        while True:
            gevent.sleep(INTERVAL)
            if self._stopped:
                return
            closed = peer_closed(self._sock)
            if closed is None:
                return
            if closed:
                log.info("client disconnected; cancelling its request")
                gevent.kill(self._target, ClientGone)
                return

    def __enter__(self) -> ClientWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """The response is complete (or abandoned): stop watching. Safe to call twice."""
        if not self._stopped:
            self._stopped = True
            self._greenlet.kill(block=False)


@contextmanager
def watching(environ: Mapping[str, Any]) -> Iterator[None]:
    """Watch the client for the duration of a block (a whole JSON answer)."""
    watch = ClientWatch.start(environ)
    try:
        yield
    finally:
        if watch is not None:
            watch.stop()
