"""Admin changes reach every worker process: an append-only journal in the state directory.

gunicorn forks several worker processes and an admin request reaches one of them, but an
operator means the gateway. So every admin change is an `AdminOp`, appended as one JSON line
to `<state dir>/admin.journal` (the format: app/admin_journal.py), and every process applies
the journal's entries in file order.

- Writing: under an exclusive flock the writer first applies what it has not seen yet, then
  validates the op against that state (so two processes cannot both add a name), appends it
  in one write(), and applies it itself; the response is built after that.
- Reading: `sync()` costs one os.stat when nothing is new. It runs before every request (a
  process never answers from a state older than the journal when the request arrived) and
  every `FOLLOW_INTERVAL` in a background greenlet (idle processes catch up too). Readers
  take no lock: only whole lines (ending in a newline) are read.
- A process that starts later (gunicorn replaced a worker) replays from the last `reload`
  entry: the file it read at start-up may differ from the one the others reloaded, and the
  entry carries the text they used. gunicorn's SIGHUP (a graceful restart) journals a reload
  of the file as it is then (`record_restart`), so new processes start from the file.

Without a state directory (Flask's test client, create_app outside gunicorn) there is one
process, and `submit` applies the op directly: the same interface, no file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import gevent
import gevent.lock

from app.admin_journal import ADD, ENABLE_KEY, HEALTH_CHECK, JOURNAL, RELOAD, REMOVE, AdminOp, Journal, JournalBusy
from app.errors import ServiceUnavailable

__all__ = ["ADD", "ENABLE_KEY", "HEALTH_CHECK", "RELOAD", "REMOVE", "AdminBus", "AdminOp", "Journal", "Target"]

log = logging.getLogger("cortex.admin")

#: Seconds between an idle process's looks at the journal.
FOLLOW_INTERVAL = 0.5


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
        return cls(target, Journal(Path(state_dir) / JOURNAL, gevent.sleep) if state_dir else None)

    def submit(self, op: AdminOp) -> object:
        """Validate, journal and apply `op` here; other processes apply it when they sync.
        Returns what applying it returned. Raises the ApiError validation raised."""
        with self._mutex:
            if self.journal is None:
                return self.target.apply(self.target.prepare(op), True)
            try:
                with self.journal.locked() as fd:
                    self._catch_up()
                    op = self.target.prepare(op)
                    self._offset = self.journal.append(fd, op)
                    return self._apply(op, own=True)
            except JournalBusy:
                raise ServiceUnavailable("the admin journal is busy; try again", retry_after=1) from None

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
