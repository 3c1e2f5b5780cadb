"""System programs the tests start (redis-server, nginx), which `make test` installs with apt-get
when missing. Elsewhere a test that needs one is skipped, except in CI (CI=true), where a
missing program is an error: a skipped test there would hide that the behaviour was never checked."""

from __future__ import annotations

import os
import shutil
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
