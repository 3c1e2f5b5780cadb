"""A real redis-server for the tests that share rate limits between gateways: a private one on
a free loopback port, without persistence, stopped at teardown.

`make test` installs redis-server when /usr/bin/redis-server is missing. Elsewhere a test that
needs it is skipped, except in CI (CI=true), where a missing server is an error: a skipped
test there would hide that the shared limit was never checked.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.gateway_process import free_port
from tests.system import serving, system_binary


def redis_binary() -> str:
    return system_binary("redis-server", "/usr/bin/redis-server", "redis-server")


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path, timeout: float = 10.0, port: int | None = None) -> Iterator[str]:
    """Yield the URI (redis://127.0.0.1:<port>/0) of a fresh redis-server; on `port` when given
    (a test that restarts Redis where its clients expect it)."""
    binary = redis_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(workdir), "--protected-mode", "yes"]  # fmt: skip
    with serving(command, workdir / "redis.log", lambda: ping(port), timeout):
        yield f"redis://127.0.0.1:{port}/0"
