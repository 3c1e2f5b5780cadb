"""The instance's state directory: files shared by the worker processes of one gunicorn master.

gunicorn forks several worker processes; what an operator expects to be one gateway (one
rate limit, one admin change, one set of metrics) must therefore live outside any single
process. On one machine that is a private directory, prepared by the master before it forks
(`prepare`, called from gunicorn.conf.py) and named to the workers by CORTEX_STATE_DIR:

    <state dir>/
        metrics/          prometheus_client multiprocess files (PROMETHEUS_MULTIPROC_DIR)
        admin.journal     admin changes, replayed by every worker process (app/admin_bus.py)
        limits.sqlite3    rate-limit counters unless RATELIMIT_STORAGE_URI names Redis

Everything in it describes one run, so `prepare` empties it: stale metric files would add a
previous run's counts to this one's, and an old journal would replay old admin changes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

METRICS = "metrics"
#: Files of one run, removed by `prepare`; each module that writes one names it here.
RUN_FILES = ("admin.journal", "limits.sqlite3", "limits.sqlite3-wal", "limits.sqlite3-shm", "limits.sqlite3-journal")


def prepare(env: MutableMapping[str, str]) -> tuple[Path, bool]:
    """Create (or empty) the state directory and export its paths to the workers through
    `env`. Returns the directory and whether we created it (then `remove` it at exit)."""
    named = env.get("CORTEX_STATE_DIR", "").strip()
    if named:
        path, created = Path(named), False
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        path, created = Path(tempfile.mkdtemp(prefix="cortex-state-")), True
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    metrics = Path(env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or path / METRICS)
    metrics.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in metrics.glob("*.db"):  # only prometheus_client's files, in case it is shared
        stale.unlink(missing_ok=True)
    env["CORTEX_STATE_DIR"] = str(path)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    return path, created


#: prometheus_client's multiprocess modes whose files belong to one live process.
LIVE_GAUGE_MODES = ("liveall", "livemin", "livemax", "livesum", "livemostrecent")


def drop_live_gauges(env: Mapping[str, str], pid: int) -> None:
    """A worker process ended: remove its live gauges' files, as prometheus_client's
    `mark_process_dead` does (kept import-free for gunicorn's master)."""
    directory = env.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if directory:
        for mode in LIVE_GAUGE_MODES:
            (Path(directory) / f"gauge_{mode}_{pid}.db").unlink(missing_ok=True)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
