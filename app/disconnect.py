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

The same greenlet releases a client that stays connected but stops reading a stream. The
server's write to it blocks (gevent's `sendall` on a blocking socket waits forever), the relay
stops pulling from the upstream, and the upstream's TCP window fills: memory stays bounded,
but the request, its upstream connection and a slot of WORKER_CONNECTIONS are held for as
long as the client likes. So the streamed body marks when it handed a chunk to the server
(`handed`) and when the server came back for the next (`taken`); a chunk not taken within
CLIENT_SEND_TIMEOUT seconds means the client has not read for that long, and the watch shuts
the socket down: the blocked write fails at once (EPIPE, which gunicorn ignores quietly) and
the relay's `finally` releases the upstream.
"""

from __future__ import annotations

import _socket
import logging
import select
import socket
import time
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


def shut_down(sock: socket.socket) -> None:
    """Shut the connection down in the kernel, so that a greenlet blocked writing to it fails
    with EPIPE (which gunicorn ignores quietly). Not gevent's `sock.shutdown`: that wakes the
    writer with its own cancel_wait_ex (EBADF), which gunicorn logs with a traceback."""
    fileno = sock.fileno()
    if fileno < 0:  # the server has closed it already
        return
    raw = _socket.socket(fileno=fileno)
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        raw.detach()


class ClientWatch:
    __slots__ = ("_sock", "_target", "_greenlet", "_stopped", "_send_timeout", "_handed_at")

    def __init__(self, sock: socket.socket, send_timeout: float = 0.0) -> None:
        self._sock = sock
        self._target = gevent.getcurrent()
        self._stopped = False
        #: CLIENT_SEND_TIMEOUT (0: none); `_handed_at`: when the chunk being written was handed over.
        self._send_timeout = send_timeout
        self._handed_at: float | None = None
        self._greenlet = gevent.spawn(self._run)

    @classmethod
    def start(cls, environ: Mapping[str, Any], send_timeout: float = 0.0) -> ClientWatch | None:
        sock = environ.get("gunicorn.socket")
        return cls(sock, send_timeout) if isinstance(sock, socket.socket) else None

    def handed(self) -> None:
        """A chunk was handed to the server to write to the client."""
        self._handed_at = time.monotonic()

    def taken(self) -> None:
        """The server asked for the next chunk: the previous one is written."""
        self._handed_at = None

    def _stalled(self) -> bool:
        handed = self._handed_at
        return self._send_timeout > 0 and handed is not None and time.monotonic() - handed > self._send_timeout

    def _run(self) -> None:
        while True:
            gevent.sleep(INTERVAL)
            if self._stopped:
                return
            if self._stalled():
                log.info("client read nothing for %gs (CLIENT_SEND_TIMEOUT); closing its stream", self._send_timeout)
                shut_down(self._sock)
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
