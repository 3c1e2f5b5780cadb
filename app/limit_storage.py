"""Where rate-limit counters live, and the SQLite store that lets one machine's gunicorn worker
processes share them without Redis (FIELD-NOTES 12: per-process counters let a 100 RPM limit
through several times over).

    RATELIMIT_STORAGE_URI set        -> that (memory://, redis://..., shared by every instance)
    else REDIS_URL set                -> REDIS_URL (the shared state's Redis, app/shared_state.py)
    else a state dir (under gunicorn) -> cortex+sqlite://<state dir>/limits.sqlite3
    else                              -> memory:// (one process: the Flask test client, scripts)

`SQLiteStorage` is a `limits` storage for the fixed-window strategy. Each counter is one row;
an increment is one UPSERT in one `BEGIN IMMEDIATE` transaction, so two processes can never
both read 4 and write 5. The first hit of a window sets its expiry; a hit on an expired row
restarts the window at 1. The file is in WAL mode with synchronous=OFF: readers never
block the writer, and a commit is not an fsync (counters of one run need no durability).

SQLite's calls block the process while they run, also under gevent; a write transaction here
holds the lock for microseconds, and a waiting process spins in SQLite's busy handler for at
most `timeout` seconds. Nothing is opened before the first use, and a forked child opens its
own connection (SQLite connections must not cross a fork).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from greenlet import getcurrent
from limits.storage import Storage

from app.edge_settings import Edges

SCHEME = "cortex+sqlite"
FILENAME = "limits.sqlite3"
#: Rows whose window ended are deleted at most this often (seconds), by whichever process
#: increments first after that.
PRUNE_INTERVAL = 60.0
#: Increments remembered for reading back (one per request in flight; cleared when full).
HITS_KEPT = 16384

_SCHEMA = "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL)"
_INCR = """
INSERT INTO counters (key, value, expires_at) VALUES (:key, :amount, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN counters.expires_at <= :now THEN :amount ELSE counters.value + :amount END,
    expires_at = CASE WHEN counters.expires_at <= :now THEN :expires_at ELSE counters.expires_at END
RETURNING value, expires_at
"""


def storage_uri(edges: Edges) -> str:
    """The storage both the client limits and the upstream quota use (see the module docstring)."""
    if edges.ratelimit_storage_uri:
        return edges.ratelimit_storage_uri
    if edges.redis_url:
        return edges.redis_url
    if edges.state_dir:
        # Absolute: in scheme://relative/path the first part would be read as a host.
        return f"{SCHEME}://{quote(str(Path(edges.state_dir, FILENAME).absolute()))}"
    return "memory://"


#: Schemes whose client takes socket timeouts (redis.Redis); sentinel and cluster differ.
_PLAIN_REDIS = ("redis", "rediss", "redis+unix")
#: Seconds to connect to, and wait for, Redis before the limiter falls back to memory. Without
#: them an unreachable (not refusing) Redis would hold requests for the OS's connect timeout.
#: Options in the URI's query (`?socket_timeout=5`) take precedence.
REDIS_TIMEOUT = 1.0


def storage_options(uri: str) -> dict[str, float | str | bool]:
    """Keyword arguments for the storage of `uri` (limits' storage_from_string / flask-limiter)."""
    if urlsplit(uri).scheme in _PLAIN_REDIS:
        return {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT}
    return {}


def describe(uri: str) -> str:
    """A storage URI as safe to log: scheme, host and port or path, never a user or password."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path if parts.scheme == SCHEME else ''}"


class SQLiteStorage(Storage):
    """Fixed-window counters in one SQLite file shared by the processes of one machine."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: float | str | bool) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        path = unquote(urlsplit(uri or "").path)
        if not path:
            raise ValueError(f"{SCHEME}:// needs a file path, e.g. {SCHEME}:///run/cortex/{FILENAME}")
        self.path = path
        self.timeout = float(options.get("timeout", 5.0))
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._next_prune = 0.0
        #: (key, greenlet id) -> (the greenlet, value, expires_at) of its last increment: see `_row`.
        self._hits: dict[tuple[str, int], tuple[weakref.ref[object], int, float]] = {}

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # isolation_level=None: no implicit transactions; each one below is explicit.
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # The counters are emptied at every start (app/state_dir.py): no fsync buys anything.
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(_INCR, {"key": key, "amount": amount, "now": now, "expires_at": now + expiry})
                value, expires_at = rows.fetchall()[0]
                if now >= self._next_prune:
                    self._next_prune = now + PRUNE_INTERVAL
                    conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
        if len(self._hits) >= HITS_KEPT:
            self._hits.clear()
        current = getcurrent()
        self._hits[key, id(current)] = (weakref.ref(current), int(value), float(expires_at))
        return int(value)

    def _row(self, key: str) -> tuple[int, float] | None:
        """The counter and its expiry. Right after an increment, in the greenlet that made it
        (flask-limiter reads both back for the X-RateLimit headers and a 429's Retry-After),
        they are the values the increment returned: what this request was counted as, without
        two more queries per request."""
        current = getcurrent()
        hit = self._hits.get((key, id(current)))
        if hit is not None and hit[0]() is current:
            return (hit[1], hit[2]) if hit[2] > time.time() else None
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT value, expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, time.time()))
                .fetchone()
            )
        return None if row is None else (int(row[0]), float(row[1]))

    def get(self, key: str) -> int:
        row = self._row(key)
        return 0 if row is None else row[0]

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return time.time() if row is None else row[1]

    def check(self) -> bool:
        try:
            with self._lock:
                self._connection().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        self._hits.clear()
        with self._lock:
            return self._connection().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        for entry in [entry for entry in self._hits if entry[0] == key]:
            del self._hits[entry]
        with self._lock:
            self._connection().execute("DELETE FROM counters WHERE key = ?", (key,))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
