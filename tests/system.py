"""System programs the tests start (redis-server, nginx), which `make test` installs with apt-get
when missing. Elsewhere a test that needs one is skipped, except in CI (CI=true), where a
missing program is an error: a skipped test there would hide that the behaviour was never checked.
`serving` runs one for the length of a block."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def system_binary(name: str, debian_path: str, package: str) -> str:
    """The path of `name` (on PATH, else where Debian's package puts it), or skip / fail."""
    found = shutil.which(name) or (debian_path if Path(debian_path).exists() else None)
    if found is None:
        message = f"{name} is not installed (make test installs it: apt-get install {package})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextmanager
def serving(command: Sequence[str], output: Path, ready: Callable[[], bool], timeout: float,
            logs: Sequence[Path] = ()) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """Run a server (its stdout and stderr to `output`) until the block ends: wait until
    `ready()`, failing with its logs if it exits or is not ready within `timeout`; then
    SIGTERM (both redis-server and nginx close their connections and exit on it), SIGKILL
    after 5 s."""
    with open(output, "wb") as sink:
        process = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    text = "\n".join(p.read_text(errors="replace") for p in (output, *logs) if p.exists())
                    raise RuntimeError(f"{Path(command[0]).name} did not start:\n{text}")
                time.sleep(0.02)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
