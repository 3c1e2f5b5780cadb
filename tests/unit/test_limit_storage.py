"""The SQLite rate-limit store: counts, windows, expiry, and increments that stay exact when
several processes hit one counter at once (FIELD-NOTES 12)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gevent
import gevent.event
import pytest
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.edge_settings import Edges
from app.limit_storage import SCHEME, SQLiteStorage, describe, storage_options, storage_uri

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    storage = SQLiteStorage(f"{SCHEME}://{tmp_path / 'limits.sqlite3'}")
    yield storage
    storage.close()


def test_the_scheme_is_registered_with_limits(tmp_path: Path) -> None:
    storage = storage_from_string(f"{SCHEME}://{tmp_path / 'x.sqlite3'}")
    assert isinstance(storage, SQLiteStorage)
    assert storage.check()
    storage.close()


def test_incr_counts_within_a_window_and_restarts_after_it(store: SQLiteStorage) -> None:
    assert [store.incr("k", 1) for _ in range(3)] == [1, 2, 3]
    assert store.get("k") == 3
    assert store.incr("other", 1, amount=5) == 5
    expiry = store.get_expiry("k")
    assert time.time() < expiry <= time.time() + 1
    time.sleep(1.05)
    assert store.get("k") == 0
    assert store.incr("k", 1) == 1  # a new window starts at 1, not at 4


def test_the_window_is_set_by_the_first_hit_only(store: SQLiteStorage) -> None:
    store.incr("k", 60)
    first = store.get_expiry("k")
    time.sleep(0.02)
    store.incr("k", 60)
    assert store.get_expiry("k") == first


def test_clear_and_reset(store: SQLiteStorage) -> None:
    store.incr("a", 60)
    store.incr("b", 60)
    store.clear("a")
    assert store.get("a") == 0 and store.get("b") == 1
    assert store.reset() == 1
    assert store.get("b") == 0


def test_a_fixed_window_limiter_over_it(store: SQLiteStorage) -> None:
    limiter = FixedWindowRateLimiter(store)
    item = RateLimitItemPerSecond(2)
    assert [limiter.hit(item, "client") for _ in range(3)] == [True, True, False]
    reset, remaining = limiter.get_window_stats(item, "client")
    assert remaining == 0 and reset > time.time()


def test_two_connections_share_one_counter(tmp_path: Path) -> None:
    uri = f"{SCHEME}://{tmp_path / 'limits.sqlite3'}"
    one, two = SQLiteStorage(uri), SQLiteStorage(uri)
    assert [one.incr("k", 60), two.incr("k", 60), one.incr("k", 60)] == [1, 2, 3]
    # Read from another greenlet: the stored counter, whoever incremented it.
    assert gevent.spawn(two.get, "k").get() == 3
    one.close()
    two.close()


def test_a_request_reads_back_what_its_own_increment_returned(tmp_path: Path) -> None:
    """flask-limiter reads the counter and its expiry back for the X-RateLimit headers right
    after its hit: in that greenlet the values are the hit's own, with no query; elsewhere,
    and once the window has expired, they come from the file."""
    uri = f"{SCHEME}://{tmp_path / 'limits.sqlite3'}"
    store, other = SQLiteStorage(uri), SQLiteStorage(uri)
    assert store.incr("k", 60) == 1
    expiry = store.get_expiry("k")
    assert gevent.spawn(other.incr, "k", 60).get() == 2
    assert (store.get("k"), store.get_expiry("k")) == (1, expiry)  # this request was the first
    assert gevent.spawn(store.get, "k").get() == 2
    store.close()
    other.close()


def test_concurrent_requests_of_one_client_each_read_back_their_own(tmp_path: Path) -> None:
    """A thousand streams of one client key interleave their increments and reads: each
    request still reads its own increment, and none of them queries the file for it."""
    store = SQLiteStorage(f"{SCHEME}://{tmp_path / 'limits.sqlite3'}")
    queries: list[str] = []
    store._connection().set_trace_callback(queries.append)
    counted = gevent.event.Event()

    def request() -> tuple[int, int]:
        mine = store.incr("client", 60)
        counted.wait()  # every request counted before any reads back
        return mine, store.get("client")

    requests = [gevent.spawn(request) for _ in range(20)]
    gevent.sleep(0)
    counted.set()
    assert sorted(r.get() for r in requests) == [(n, n) for n in range(1, 21)]
    assert not [q for q in queries if q.lstrip().startswith("SELECT")]
    store.close()


WORKER = """
import json, sys
from app.limit_storage import SQLiteStorage
store = SQLiteStorage(sys.argv[1])
print(json.dumps([store.incr("shared", 60) for _ in range(int(sys.argv[2]))]))
"""


def test_increments_from_concurrent_processes_are_atomic(tmp_path: Path) -> None:
    """Four processes increment one counter at once: every value 1..N is returned exactly once."""
    uri, per_process, processes = f"{SCHEME}://{tmp_path / 'limits.sqlite3'}", 300, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, uri, str(per_process)], cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(processes)
    ]
    seen: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        seen += json.loads(out)
    assert sorted(seen) == list(range(1, per_process * processes + 1))


def test_storage_uri_and_description() -> None:
    assert storage_uri(Edges()) == "memory://"
    assert storage_uri(Edges(state_dir="/run/c")) == f"{SCHEME}:///run/c/limits.sqlite3"
    assert storage_uri(Edges(ratelimit_storage_uri="redis://h:6379", state_dir="/run/c")) == "redis://h:6379"
    relative = storage_uri(Edges(state_dir="state"))
    assert relative == f"{SCHEME}://{Path.cwd() / 'state' / 'limits.sqlite3'}"
    assert SQLiteStorage(relative).path == str(Path.cwd() / "state" / "limits.sqlite3")
    odd = storage_uri(Edges(state_dir="/tmp/a dir#1?x%20"))
    assert SQLiteStorage(odd).path == "/tmp/a dir#1?x%20/limits.sqlite3"
    assert describe("redis://user:s3cret@cache.internal:6380/2") == "redis://cache.internal:6380"
    assert describe("redis://:s3cret@cache.internal") == "redis://cache.internal"
    assert describe(f"{SCHEME}:///run/c/limits.sqlite3") == f"{SCHEME}:///run/c/limits.sqlite3"


def test_redis_gets_socket_timeouts_so_an_unreachable_one_cannot_hold_requests() -> None:
    for uri in ("redis://h:6379", "rediss://h:6380/1", "redis+unix:///run/redis.sock"):
        assert storage_options(uri) == {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    for uri in ("memory://", f"{SCHEME}:///x", "redis+sentinel://h:26379/m"):
        assert storage_options(uri) == {}
    redis = storage_from_string("redis://127.0.0.1:1/0", **storage_options("redis://127.0.0.1:1/0"))
    kwargs = redis.storage.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert kwargs["socket_connect_timeout"] == 1.0 and kwargs["socket_timeout"] == 1.0
