"""A tiny HTTP/1.1 server for fakes, written on raw sockets so every byte on the wire is ours:
status line, headers, chunked framing, and broken framing when a test wants it.

Runs in threads of the pytest process (which is not gevent-patched), on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import select
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class PeerClosed(Exception):
    """The client (the gateway) closed its end of the connection."""


@dataclass
class Exchange:
    """One request being answered: helpers to write a response byte by byte."""

    sock: socket.socket
    request: Request
    closed_by_peer: threading.Event = field(default_factory=threading.Event)
    keep_alive: bool = True
    #: Write `chunk()` data as is, without chunked framing (for close-delimited bodies).
    raw_body: bool = False

    def send(self, data: bytes) -> None:
        if self.peer_closed():
            raise PeerClosed
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed_by_peer.set()
            raise PeerClosed from None

    def peer_closed(self) -> bool:
        """True once the peer has closed (EOF or reset), checked without blocking."""
        if self.closed_by_peer.is_set():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable and self.sock.recv(1, socket.MSG_PEEK) == b"":
                self.closed_by_peer.set()
        except OSError:
            self.closed_by_peer.set()
        return self.closed_by_peer.is_set()

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"] + [f"{k}: {v}" for k, v in headers]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk (RFC 9112 section 7.1)."""
        if data:
            self.send(data if self.raw_body else b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self) -> None:
        if not self.raw_body:
            self.send(b"0\r\n\r\n")

    def respond(self, status: int, body: bytes, content_type: str = "application/json",
                extra_headers: list[tuple[str, str]] | None = None) -> None:  # fmt: skip
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))] + (extra_headers or [])
        self.start(status, headers)
        self.send(body)

    def wait_for_close(self, timeout: float) -> bool:
        """Block until the peer closes the connection (or timeout)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if readable and self.sock.recv(1, socket.MSG_PEEK) == b"":
                self.closed_by_peer.set()
        except OSError:
            self.closed_by_peer.set()
        return self.closed_by_peer.is_set()


Handler = Callable[[Exchange], None]


def _read_request(rfile) -> Request | None:  # type: ignore[no-untyped-def]
    line = rfile.readline(65537)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = rfile.read(length) if length else b""
    return Request(method, path, headers, body)


class FakeHTTPServer:
    """Serve `handler(exchange)` for every request, keep-alive included, until `stop()`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        outer = self

        class _Handler(socketserver.StreamRequestHandler):
            # A response is several small writes (status and headers, then the body, then
            # each chunk): with Nagle's algorithm each write after the first waits for the
            # client's delayed ACK, some 40 ms, as no real provider makes its clients wait.
            disable_nagle_algorithm = True

            def handle(self) -> None:
                outer._connections_opened.inc()
                outer._live.add(self.connection)
                try:
                    while True:
                        request = _read_request(self.rfile)
                        if request is None:
                            return
                        exchange = Exchange(self.connection, request)
                        try:
                            outer.handler(exchange)
                        except PeerClosed:
                            return
                        if not exchange.keep_alive:
                            return
                except (ConnectionError, OSError, ValueError):
                    return
                finally:
                    outer._live.discard(self.connection)
                    outer._connections_closed.inc()

        class _Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            block_on_close = False

        self._live: set[socket.socket] = set()
        self._connections_opened = _Counter()
        self._connections_closed = _Counter()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections_opened(self) -> int:
        """Connections accepted since the start."""
        return self._connections_opened.value

    @property
    def open_connections(self) -> int:
        return self._connections_opened.value - self._connections_closed.value

    def start(self) -> FakeHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a dead server: stop listening and drop every open connection."""
        kill_server(self._server, self._live, self._thread)


def kill_server(server: socketserver.BaseServer, live: set[socket.socket], thread: threading.Thread) -> None:
    """Stop `server` like a dead one: stop listening, drop its open connections `live`, and
    wait for its serving `thread`."""
    server.shutdown()
    server.server_close()  # type: ignore[attr-defined]
    for conn in list(live):
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    thread.join(timeout=5)


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def inc(self) -> None:
        with self._lock:
            self.value += 1


def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll a condition the fake's server thread sets after its last write: the client can
    have read every byte before that thread gets to run again."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
