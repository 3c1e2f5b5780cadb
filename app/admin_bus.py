"""Admin changes reach every worker process: an append-only journal in the state directory.

gunicorn forks several worker processes and an admin request reaches one of them, but an
operator means the gateway. So every admin change is an `AdminOp`, appended as one JSON line
to `<state dir>/admin.journal` (mode 0600 in a 0700 directory: a journalled worker may carry
its keys), and every process applies the journal's entries in file order:

    {"op": "add", "worker": {"name": "groq-2", "preset": "groq", "api_keys": ["..."]}, "pid": 4711, "at": 1764...}
    {"op": "enable_key", "name": "groq-2", "key": 1, "pid": 4712, "at": 1764...}
    {"op": "reload", "config": "<the TOML text that was read>", "pid": 4711, "at": 1764...}

- Writing: under an exclusive flock the writer first applies what it has not seen yet, then
  validates the op against that state (so two processes cannot both add a name), appends it
  in one write(), and applies it itself; the response is built after that.
- Reading: `sync()` costs one os.stat when nothing is new. It runs before every request (a
  process never answers from a state older than the journal when the request arrived) and
  every `FOLLOW_INTERVAL` in a background greenlet (idle processes catch up too). Readers
  take no lock: only whole lines (ending in a newline) are read.
- A process that starts later (gunicorn replaced a worker) replays from the last `reload`
  entry: the file it read at start-up may differ from the one the others reloaded, and the
  entry carries the text they used. A garbled line (a writer killed mid-write) is skipped
  with a warning; the next writer starts on a fresh line.

Without a state directory (Flask's test client, create_app outside gunicorn) there is one
process, and `submit` applies the op directly: the same interface, no file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.lock

from app.errors import ServiceUnavailable

log = logging.getLogger("cortex.admin")

JOURNAL = "admin.journal"  # listed in app/state_dir.RUN_FILES
ADD, REMOVE, ENABLE_KEY, RELOAD, HEALTH_CHECK = "add", "remove", "enable_key", "reload", "health_check"
KINDS = (ADD, REMOVE, ENABLE_KEY, RELOAD, HEALTH_CHECK)
#: Seconds between an idle process's looks at the journal.
FOLLOW_INTERVAL = 0.5
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


class Journal:
    """The file: appends under an exclusive flock, reads of whole lines without one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    @contextmanager
    def locked(self) -> Iterator[int]:
        """An fd open for appending, holding the exclusive lock. Waits without blocking the
        event loop (LOCK_NB and a short sleep), at most LOCK_WAIT."""
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
                        raise ServiceUnavailable("the admin journal is busy; try again", retry_after=1) from None
                    gevent.sleep(0.005)
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


class Target(Protocol):
    """What the bus applies ops to (the Gateway)."""

    def prepare(self, op: AdminOp) -> AdminOp:
        """Validate `op` against the current state (raise an ApiError), fill in what every
        process must use alike (a reload's file text); returns the op to journal."""
        ...

    def apply(self, op: AdminOp, own: bool) -> object:
        """Carry `op` out; `own` when this process submitted it. Returns the outcome."""
        ...


class AdminBus:
    def __init__(self, target: Target, journal: Journal | None) -> None:
        self.target = target
        self.journal = journal
        #: Bytes of the journal applied here; None until the first sync replays it.
        self._offset: int | None = None
        self._mutex = gevent.lock.RLock()
        self._follower: gevent.Greenlet | None = None

    @classmethod
    def for_state_dir(cls, target: Target, state_dir: str | None) -> AdminBus:
        return cls(target, Journal(Path(state_dir) / JOURNAL) if state_dir else None)

    def submit(self, op: AdminOp) -> object:
        """Validate, journal and apply `op` here; other processes apply it when they sync.
        Returns what applying it returned. Raises the ApiError validation raised."""
        with self._mutex:
            if self.journal is None:
                return self.target.apply(self.target.prepare(op), True)
            with self.journal.locked() as fd:
                self._catch_up()
                op = self.target.prepare(op)
                self._offset = self.journal.append(fd, op)
                return self._apply(op, own=True)

    def sync(self) -> None:
        """Apply what other processes journalled since the last look; one os.stat if nothing."""
        if self.journal is None or (self._offset is not None and self.journal.size() <= self._offset):
            return
        with self._mutex:
            self._catch_up()

    def start(self) -> None:
        """Replay the journal, then follow it in a greenlet (no-op without a journal)."""
        if self.journal is not None and self._follower is None:
            self.sync()
            self._follower = gevent.spawn(self._follow)

    def stop(self) -> None:
        if self._follower is not None:
            self._follower.kill(block=False)
            self._follower = None

    def _catch_up(self) -> None:
        assert self.journal is not None
        if self._offset is None:
            ops, end = self.journal.read(0)
            start = max((i for i, op in enumerate(ops) if op.kind == RELOAD), default=0)
            ops = ops[start:]
            if ops:
                log.info("admin journal: replaying %d change(s)", len(ops))
        else:
            ops, end = self.journal.read(self._offset)
        self._offset = end
        for op in ops:
            self._apply(op, own=False)

    def _apply(self, op: AdminOp, own: bool) -> object:
        try:
            return self.target.apply(op, own)
        except Exception:
            if own:
                raise
            # Another process validated it; a failure here would be a difference between
            # processes (an environment variable?). Skip it rather than stop following.
            log.exception("admin journal: could not apply %s", op.describe())
            return None

    def _follow(self) -> None:
        while True:
            gevent.sleep(FOLLOW_INTERVAL)
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - the follower must survive a bad entry
                log.exception("admin journal: sync failed")
