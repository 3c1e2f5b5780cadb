"""Cortex running for real: gunicorn with gevent workers, in a subprocess, on a loopback port,
configured through its TOML file and environment exactly as an operator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
QUICK_STOP = signal.SIGQUIT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    def __init__(self, workdir: Path, *, toml: str, env: dict[str, str], workers: int = 1) -> None:
        self.workdir = workdir
        self.toml = toml
        self.extra_env = env
        self.workers = workers
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "cortex.toml"
        config.write_text(self.toml)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEYS", "_URLS"))}
        env.update({
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(self.workers),
            "CORTEX_CONFIG": str(config),
            "DEMO_PROVIDER": "off",
            "HEALTH_CHECK_INTERVAL": "0",
            "GRACEFUL_TIMEOUT": "5",
            # gunicorn's gevent worker holds SIGTERM for up to KEEPALIVE seconds while an idle
            # keep-alive connection is open; short here so teardown stays quick.
            "KEEPALIVE": "1",
            "LOG_LEVEL": "info",
        })  # fmt: skip
        env.update(self.extra_env)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            try:
                with requests.get(self.url + "/api/health", timeout=1) as response:
                    if response.status_code in (200, 503):
                        return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a busy machine
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not become ready in {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        """The gunicorn master's pid."""
        assert self.process is not None, "not started"
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The master's live worker processes (children of its pid, from /proc), oldest first."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:  # it ended while we looked
                    continue
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[1]) == self.pid and fields[0] != "Z":
                    pids.append((int(fields[19]), int(entry.name)))  # (start time, pid)
        return [pid for _, pid in sorted(pids)]

    def signal(self, signum: int) -> None:
        """Send `signum` to the master (SIGTERM: stop gracefully; SIGHUP: restart the workers)."""
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """The master's exit code, once it exits within `timeout` (else TimeoutExpired)."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout=timeout)

    def problems(self) -> list[str]:
        """Lines of the log that must never appear: tracebacks and gevent patching warnings."""
        bad = ("Traceback (most recent call last)", "MonkeyPatchWarning", "Worker failed to boot")
        return [line for line in self.log().splitlines() if any(b in line for b in bad)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = QUICK_STOP) -> None:
        """Stop the gateway. By default a quick stop (SIGQUIT, as Ctrl-C), which ends what is
        still running at once: a graceful SIGTERM waits for keep-alive connections and polls
        once a second, over a second per test for nothing; the tests of graceful stops send
        SIGTERM themselves."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._log.close()
        self.process = None


@contextmanager
def gateway_factory(root: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Yield `make(toml, env, workers)`, which starts one gateway in a directory under `root`;
    on exit, stop them all and fail if a log shows a traceback or a patching warning."""
    started: list[GatewayProcess] = []

    def make(toml: str = "", env: dict[str, str] | None = None, workers: int = 1) -> GatewayProcess:
        process = GatewayProcess(root / f"gateway-{len(started)}", toml=toml, env=env or {}, workers=workers)
        started.append(process)
        process.start()
        return process

    try:
        yield make
    finally:
        for process in started:
            process.stop()
    for process in started:
        assert not process.problems(), f"gateway log has problems:\n{process.log()}"
