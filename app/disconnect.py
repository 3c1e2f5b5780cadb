"""Cancel the upstream call the moment the client leaves, whatever the request is doing:
waiting for a connection, for the first token, for the next chunk after a long pause, or for
a whole JSON answer (FIELD-NOTES 5).

A WSGI app only learns of a disconnect when a write fails, and a request that is waiting
writes nothing. So while a chat request is in progress, a read watcher of the event loop sits
on the client's socket (the request body has been read, so nothing else reads it); when the
socket turns readable and a peek finds end-of-file, it throws `ClientGone` into the request's
greenlet, wherever that is blocked. The `finally` blocks on the way out (the attempt's, the
relay's) close the upstream response, which closes its connection. An event rather than a
greenlet polling every quarter second: ten thousand open streams cost nothing while their
clients stay, where polling cost 40,000 wake-ups a second (bench/README.md, c10k).

`ClientGone` is a `GreenletExit`, so gevent does not report it as a crash and gunicorn's
gevent worker ends the request quietly. Under Flask's test client there is no socket, and
no watch.

The same watch releases a client that stays connected but stops reading a stream. The
server's write to it blocks (gevent's `sendall` on a blocking socket waits forever), the relay
stops pulling from the upstream, and the upstream's TCP window fills: memory stays bounded,
but the request, its upstream connection and a slot of WORKER_CONNECTIONS are held for as
long as the client likes. So the streamed body marks when it handed a chunk to the server
(`handed`) and when the server came back for the next (`taken`); a chunk not taken within
CLIENT_SEND_TIMEOUT seconds means the client has not read for that long, and the watch shuts
the socket down: the blocked write fails at once (EPIPE, which gunicorn ignores quietly) and
the relay's `finally` releases the upstream. One timer per stream checks that, due when the
chunk handed over longest ago would be late: once per CLIENT_SEND_TIMEOUT for a reading client.
"""

from __future__ import annotations

import _socket
import logging
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gevent
from gevent import GreenletExit

log = logging.getLogger("cortex.relay")


class ClientGone(GreenletExit):
    """The client closed its connection while its request was in progress."""


def peer_closed(sock: socket.socket) -> bool | None:
    """True: the peer closed (EOF or reset). False: still there, nothing to read. None: it sent
    more bytes (a pipelined request), so EOF cannot be seen any more, or the server has
    closed the socket itself (its fileno is -1), so there is nothing left to watch. Never
    blocks, and bypasses gevent's socket: it runs in an event-loop callback, where nothing may wait."""
    fileno = sock.fileno()
    if fileno < 0:
        return None
    raw = _socket.socket(fileno=fileno)
    try:
        data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        raw.detach()
    return True if data == b"" else None


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
    __slots__ = ("_sock", "_target", "_io", "_timer", "_stopped", "_send_timeout", "_handed_at")

    def __init__(self, sock: socket.socket, send_timeout: float = 0.0) -> None:
        self._sock = sock
        self._target = gevent.getcurrent()
        self._stopped = False
        #: CLIENT_SEND_TIMEOUT (0: none); `_handed_at`: when the chunk being written was handed over.
        self._send_timeout = send_timeout
        self._handed_at: float | None = None
        loop = gevent.get_hub().loop
        self._io: Any = loop.io(sock.fileno(), 1)  # 1: readable
        self._io.start(self._readable)
        self._timer: Any = None
        if send_timeout > 0:
            self._arm(send_timeout)

    @classmethod
    def start(cls, environ: Mapping[str, Any], send_timeout: float = 0.0) -> ClientWatch | None:
        sock = environ.get("gunicorn.socket")
        if not isinstance(sock, socket.socket) or sock.fileno() < 0:
            return None
        return cls(sock, send_timeout)

    def handed(self) -> None:
        """A chunk was handed to the server to write to the client."""
        self._handed_at = time.monotonic()

    def taken(self) -> None:
        """The server asked for the next chunk: the previous one is written."""
        self._handed_at = None

    def _readable(self) -> None:
        """The client's socket turned readable (event-loop callback: must not block)."""
        if self._stopped:
            return
        closed = peer_closed(self._sock)
        if closed is False:
            return
        self._io.stop()  # gone, or it sent more bytes: either way EOF can no longer be seen
        if closed:
            log.info("client disconnected; cancelling its request")
            self.stop()
            gevent.kill(self._target, ClientGone)

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = gevent.get_hub().loop.timer(max(seconds, 0.05))
        self._timer.start(self._check_send)

    def _check_send(self) -> None:
        """Timer callback: is the chunk handed over longest ago still unwritten?"""
        if self._stopped:
            return
        handed = self._handed_at
        if handed is None:
            self._arm(self._send_timeout)
            return
        late = time.monotonic() - handed
        if late < self._send_timeout:
            self._arm(self._send_timeout - late)
            return
        log.info("client read nothing for %gs (CLIENT_SEND_TIMEOUT); closing its stream", self._send_timeout)
        self.stop()
        shut_down(self._sock)

    def __enter__(self) -> ClientWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """The response is complete (or abandoned): stop watching. Safe to call twice."""
        if not self._stopped:
            self._stopped = True
            self._io.close()
            if self._timer is not None:
                self._timer.close()


@contextmanager
def watching(environ: Mapping[str, Any]) -> Iterator[None]:
    """Watch the client for the duration of a block (a whole JSON answer)."""
    watch = ClientWatch.start(environ)
    try:
        yield
    finally:
        if watch is not None:
            watch.stop()
