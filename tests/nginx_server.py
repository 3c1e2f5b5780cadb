"""A real nginx in front of gateways, for the scale-out tests: a private one on a free loopback
port, in the foreground, with its own prefix directory (configuration, pid file, logs, temp
files) under the test's tmp dir, stopped at teardown.

Its `location /` includes deploy/nginx/cortex-proxy.conf unchanged, so the tests prove the
proxy directives operators are told to use. `make test` installs nginx when /usr/sbin/nginx is
missing; elsewhere a test that needs it is skipped, except in CI (CI=true), where a missing
nginx is an error, as for tests/redis_server.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.gateway_process import ROOT, free_port
from tests.system import serving, system_binary

PROXY_CONF = ROOT / "deploy" / "nginx" / "cortex-proxy.conf"

CONF = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    upstream cortex {{
{servers}
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {proxy_conf};
        }}
    }}
}}
"""


def nginx_binary() -> str:
    return system_binary("nginx", "/usr/sbin/nginx", "nginx")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def nginx_server(workdir: Path, upstreams: Sequence[int], timeout: float = 10.0) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:<port>) of an nginx proxying to Cortex on `upstreams`."""
    binary = nginx_binary()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    # No `user`: started as root, nginx's worker runs as nobody, which cannot enter pytest's
    # private tmp dir; it needs none of it (the master opens the logs, and with
    # cortex-proxy.conf's buffering off no body goes to a temp file).
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams)
    conf = workdir / "nginx.conf"
    conf.write_text(CONF.format(prefix=workdir, servers=servers, port=port, proxy_conf=PROXY_CONF.resolve()))
    error_log = workdir / "error.log"
    command = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(error_log)]
    with serving(command, workdir / "stderr.log", lambda: _listening(port), timeout, logs=[error_log]):
        yield f"http://127.0.0.1:{port}"
