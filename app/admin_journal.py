"""The admin journal's format: one `AdminOp` per JSON line in `<state dir>/admin.journal`.

    {"op": "add", "worker": {"name": "groq-2", "preset": "groq", "api_keys": ["..."]}, "pid": 4711, "at": 1764...}
    {"op": "enable_key", "name": "groq-2", "key": 1, "pid": 4712, "at": 1764...}
    {"op": "reload", "config": "<the TOML text that was read>", "pid": 4711, "at": 1764...}

Appends hold an exclusive flock and write a whole line at once; a line a killed writer left
unfinished is closed by the next writer, so it stays one garbled line, which readers skip with
a warning. Readers take no lock and read only whole lines. The file is mode 0600 in a 0700
directory: a journalled worker may carry its keys. How processes use it: app/admin_bus.py.

Standard library only, so gunicorn's master can record a restart (`record_restart`) without
importing what gevent must patch first.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("cortex.admin")

JOURNAL = "admin.journal"  # listed in app/state_dir.RUN_FILES
ADD, REMOVE, ENABLE_KEY, RELOAD, HEALTH_CHECK = "add", "remove", "enable_key", "reload", "health_check"
KINDS = (ADD, REMOVE, ENABLE_KEY, RELOAD, HEALTH_CHECK)
#: How long a writer waits for another process's append before answering 503.
LOCK_WAIT = 5.0


@dataclass(frozen=True)
class AdminOp:
    """One admin change. `worker` is a `[[workers]]` table as JSON (keys included, so never in
    a repr or a log); `config` is the TOML text a reload read (also secret-bearing)."""

    kind: str
    name: str | None = None
    key: int | None = None
    worker: Mapping[str, Any] | None = field(default=None, repr=False)
    config: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """For logs: names and positions only."""
        if self.kind == ADD:
            return f"add worker {self.name}"
        if self.kind == REMOVE:
            return f"remove worker {self.name}"
        if self.kind == ENABLE_KEY:
            return f"enable key {self.key} of worker {self.name}"
        return "reload configuration" if self.kind == RELOAD else "health check"

    def to_line(self) -> bytes:
        doc: dict[str, Any] = {"op": self.kind}
        for attr in ("name", "key", "worker", "config"):
            if getattr(self, attr) is not None:
                doc[attr] = getattr(self, attr)
        doc.update(pid=os.getpid(), at=round(time.time(), 3))
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> AdminOp:
        """Raises ValueError for anything that is not an op this version writes."""
        doc = json.loads(line)
        if not isinstance(doc, dict) or doc.get("op") not in KINDS:
            raise ValueError("not an admin op")
        name, key, worker, config = (doc.get(k) for k in ("name", "key", "worker", "config"))
        if not (
            (name is None or isinstance(name, str))
            and (key is None or (isinstance(key, int) and not isinstance(key, bool)))
            and (worker is None or isinstance(worker, dict))
            and (config is None or isinstance(config, str))
        ):
            raise ValueError("an admin op field has the wrong type")
        return cls(doc["op"], name, key, worker, config)


class JournalBusy(Exception):
    """Another process held the journal's lock for longer than LOCK_WAIT."""


class Journal:
    """The file: appends under an exclusive flock, reads of whole lines without one. `sleep`
    waits between tries for the lock (gevent.sleep in a worker process, so the event loop
    keeps serving)."""

    def __init__(self, path: Path, sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = path
        self.sleep = sleep

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    @contextmanager
    def locked(self) -> Iterator[int]:
        """An fd open for appending, holding the exclusive lock. Tries without blocking
        (LOCK_NB) and sleeps briefly between tries, at most LOCK_WAIT; then JournalBusy."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            give_up = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > give_up:
                        raise JournalBusy(str(self.path)) from None
                    self.sleep(0.005)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def append(fd: int, op: AdminOp) -> int:
        """Append one line through a `locked()` fd; returns the file's new size. A line left
        unfinished by a writer that died is closed first, so it stays one garbled line."""
        size = os.fstat(fd).st_size
        data = op.to_line()
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return os.fstat(fd).st_size

    def read(self, offset: int) -> tuple[list[AdminOp], int]:
        """The ops in whole lines from `offset`, and the offset after the last whole line."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        ops, position = [], offset
        for line in data[:end].split(b"\n")[:-1]:
            if line.strip():
                try:
                    ops.append(AdminOp.from_line(line))
                except ValueError:  # JSONDecodeError and UnicodeDecodeError included
                    log.warning("admin journal: skipping a garbled entry at byte %d of %s", position, self.path)
            position += len(line) + 1
        return ops, offset + end


def record_restart(env: Mapping[str, str]) -> None:
    """gunicorn's SIGHUP restarts the worker processes, which read the configuration afresh:
    journal that as a reload of the file as it is now, so the new processes (which replay from
    the last reload) do not replay older changes over it, and the old ones follow it while
    they finish. Called in the master (gunicorn.conf.py's on_reload); imports nothing that
    gevent must patch first."""
    state_dir = env.get("CORTEX_STATE_DIR", "").strip()
    if not state_dir:
        return
    from app.config_values import ConfigError
    from app.settings import read_config

    try:
        config = read_config(env)
    except ConfigError as exc:
        log.warning("admin journal: not recording the restart: %s", exc)
        return
    journal = Journal(Path(state_dir) / JOURNAL)
    with journal.locked() as fd:
        journal.append(fd, AdminOp(RELOAD, config=config))
