"""Shared state through Redis (REDIS_URL): what one process learns about keys and circuits, every
process of every instance learns within about a second.

Shared: a key put to rest after a 429 (until when), a key the upstream refused (disabled), and
each worker's open circuit (until when). The client limits and the upstream quotas are shared
by their own store (app/limit_storage.py: REDIS_URL unless RATELIMIT_STORAGE_URI is set).

Not on the request path: the dispatcher keeps reading this process's own `KeyRing` and
`Circuit`, so a request never waits on Redis, and a slow or gone Redis costs it nothing. They
tell their observer (one `_Link` per worker) of every change, which only queues it; a greenlet
writes the queue and another one applies what the other processes publish:

    request here:  KeyRing.cool_down -> _Link.key_cooled -> outbox (no I/O)
    writer:        SET cortex:cool:<worker>:<fingerprint> <until> PX <ms> (only if later); PUBLISH
    listener:      (every other process) -> KeyRing.hold(index, until): the later of the two

Redis keys hold the state for a process that starts (or reconnects) later and reads it with a
SCAN; the channel carries the changes. A key is named by its fingerprint (the first 16 hex
digits of its SHA-256), never by itself: no key reaches Redis, a log or a metric.

    cortex:cool:<worker>:<fp>      "<until>"   expires at until
    cortex:disabled:<worker>:<fp>  "1"         expires after DISABLED_TTL (the admin API's enable deletes it)
    cortex:circuit:<worker>        "<until>"   expires at until (a success anywhere deletes it)
    PUBLISH cortex:events {"o":"gw-a/4242","e":"cool","w":"groq","f":"9f86d081884c7d65","u":1764000030.5}

`e` is cool | disable | enable | open | close; `o` (instance id and pid) lets a process skip
its own events. Times are wall-clock epoch seconds, as instances run on different machines
(whose clocks NTP keeps well within a second); applying one takes the later time, so a
shorter cooldown seen elsewhere never shortens one seen here.

Redis down, or unreachable when the process starts: one warning per outage, the
`cortex_shared_state_up` gauge at 0 and `cortex_shared_state_errors_total` counting; the
process serves on its own state meanwhile (as without REDIS_URL) and keeps its changes
queued (the latest OUTBOX of them). It reconnects with a growing backoff, then writes the
queue, reads the shared state again and logs that it is back. A blackholed Redis is noticed
by the writer's heartbeat (a PING every HEARTBEAT seconds, TIMEOUT to answer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import gevent
from gevent.event import Event

from app.limit_storage import describe

if TYPE_CHECKING:
    import redis
    from redis.client import PubSub

    from app.edge_settings import Edges
    from app.keys import KeyRing
    from app.pool import WorkerPool

log = logging.getLogger("cortex.shared")

CHANNEL = "cortex:events"
PREFIX = "cortex:"
KINDS = ("cool", "disable", "enable", "open", "close")
#: Seconds to connect to, and wait for, Redis (a blackholed one must not hold a greenlet long).
TIMEOUT = 1.0
#: The writer pings this often when it has nothing to write, to notice an outage.
HEARTBEAT = 1.0
#: Reconnection backoff: from the first to the last delay, doubling (seconds).
BACKOFF = (0.25, 5.0)
#: How long a disabled key stays in Redis for processes that start later (seconds). Processes
#: that saw it keep it disabled until an enable, as without Redis.
DISABLED_TTL = 24 * 3600.0
#: Changes kept while Redis is unreachable (the newest ones).
OUTBOX = 1024

#: SET KEYS[1] to ARGV[1] (a time) for ARGV[2] ms, unless it holds a later time already.
_SET_LATER = """
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def fingerprint(key: str) -> str:
    """How a key is named outside this process: 64 bits of its SHA-256, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def instance_name(edges: Edges, environ: Mapping[str, str]) -> str:
    """INSTANCE_ID, else this host's name and the port gunicorn listens on."""
    return edges.instance_id or f"{socket.gethostname()}:{environ.get('PORT', '').strip() or '4000'}"


@dataclass(frozen=True, slots=True)
class StateEvent:
    """One change: a key (by fingerprint) cooled until / disabled / enabled, a circuit opened
    until / closed."""

    kind: str
    worker: str
    fingerprint: str | None = None
    until: float | None = None
    origin: str = ""

    @property
    def record(self) -> str:
        """The Redis key that holds this state."""
        if self.kind in ("open", "close"):
            return f"{PREFIX}circuit:{self.worker}"
        return f"{PREFIX}{'cool' if self.kind == 'cool' else 'disabled'}:{self.worker}:{self.fingerprint}"


def encode(event: StateEvent) -> str:
    doc = {"o": event.origin, "e": event.kind, "w": event.worker, "f": event.fingerprint, "u": event.until}
    return json.dumps(doc, separators=(",", ":"))


def decode(data: str | bytes) -> StateEvent | None:
    """An event from the channel; None for anything malformed (logged by the caller)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    kind, worker, fp, until, origin = (doc.get(k) for k in ("e", "w", "f", "u", "o"))
    if kind not in KINDS or not isinstance(worker, str) or not isinstance(origin, str):
        return None
    if kind in ("cool", "disable", "enable") and not isinstance(fp, str):
        return None
    if kind in ("cool", "open"):
        if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
            return None
        until = float(until)
    else:
        until = None
    return StateEvent(kind, worker, fp if kind not in ("open", "close") else None, until, origin)


def from_record(name: str, value: str | bytes | None) -> StateEvent | None:
    """The state a Redis key holds, as the event that would set it (for a resync)."""
    if value is None or not name.startswith(PREFIX):
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    parts = name[len(PREFIX) :].split(":")
    try:
        if parts[0] == "cool" and len(parts) == 3:
            return StateEvent("cool", parts[1], parts[2], float(value))
        if parts[0] == "disabled" and len(parts) == 3:
            return StateEvent("disable", parts[1], parts[2])
        if parts[0] == "circuit" and len(parts) == 2:
            return StateEvent("open", parts[1], None, float(value))
    except ValueError:
        return None
    return None


def _index_of(ring: KeyRing, fp: str | None) -> int | None:
    for index in range(len(ring)):
        key = ring.key(index)
        if key is not None and fingerprint(key) == fp:
            return index
    return None


def apply(pool: WorkerPool, event: StateEvent, now: float) -> bool:
    """Make another process's change ours; False when it names nothing here (another
    configuration) or has expired. Never shortens a cooldown or an open state of our own."""
    worker = pool.get(event.worker)
    if worker is None:
        return False
    if event.kind == "open":
        if event.until is None or event.until <= now:
            return False
        worker.circuit.hold_open(event.until)
        return True
    if event.kind == "close":
        worker.circuit.close()
        return True
    index = _index_of(worker.keys, event.fingerprint)
    if index is None:
        return False
    if event.kind == "cool":
        if event.until is None or event.until <= now:
            return False
        worker.keys.hold(index, event.until)
    elif event.kind == "disable":
        worker.keys.refuse(index)
    else:
        worker.keys.enable(index)
    return True


class SharedStateObserver(Protocol):
    """Told when Redis becomes reachable or not, and of each failure (app/metrics.py)."""

    def shared_state_reachable(self, up: bool) -> None: ...

    def shared_state_error(self) -> None: ...


class _NoObserver:
    def shared_state_reachable(self, up: bool) -> None:
        pass

    def shared_state_error(self) -> None:
        pass


class _Link:
    """One worker's KeyRing and Circuit observer: each change becomes a queued event."""

    __slots__ = ("_state", "_worker", "_ring")

    def __init__(self, state: SharedState, worker: str, ring: KeyRing) -> None:
        self._state, self._worker, self._ring = state, worker, ring

    def _key(self, kind: str, index: int, until: float | None = None) -> None:
        key = self._ring.key(index)
        if key is not None:
            self._state.queue(StateEvent(kind, self._worker, fingerprint(key), until))

    def key_cooled(self, index: int, until: float) -> None:
        self._key("cool", index, until)

    def key_disabled(self, index: int) -> None:
        self._key("disable", index)

    def circuit_opened(self, until: float) -> None:
        self._state.queue(StateEvent("open", self._worker, None, until))

    def circuit_closed(self) -> None:
        self._state.queue(StateEvent("close", self._worker))


def redis_py_url(url: str) -> str:
    """REDIS_URL as redis-py reads it: `limits` writes a socket as redis+unix://, redis-py unix://."""
    return "unix://" + url[len("redis+unix://") :] if url.startswith("redis+unix://") else url


class SharedState:
    """The process's link to Redis; without a URL, a no-op (each process keeps its own state)."""

    def __init__(self, url: str | None, instance: str, pool: WorkerPool, clock: Callable[[], float]) -> None:
        self.url = url
        self.instance = instance
        self.pool = pool
        self.clock = clock
        #: Replaced by create_app with the app's metrics.
        self.observer: SharedStateObserver = _NoObserver()
        self.reachable = False
        self.origin = f"{instance}/{os.getpid()}"
        self._outbox: deque[StateEvent] = deque(maxlen=OUTBOX)
        self._wake = Event()
        self._client: redis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._script: Any = None
        self._greenlet: gevent.Greenlet | None = None
        self._listener: gevent.Greenlet | None = None
        self._attached = False
        self._warned = False
        self._resync_wanted = False

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def describe(self) -> dict[str, object]:
        """For /api/health: where shared state lives, and whether this process reaches it."""
        if not self.enabled:
            return {"backend": "local", "reachable": True}
        return {"backend": "redis", "reachable": self.reachable}

    # --- the request side: queue only -----------------------------------------------------

    def queue(self, event: StateEvent) -> None:
        self._outbox.append(event)
        self._wake.set()

    def key_enabled(self, worker: str, index: int) -> None:
        """The admin API enabled a key here: enable it everywhere."""
        found = self.pool.get(worker)
        key = found.keys.key(index) if found is not None else None
        if self._attached and key is not None:
            self.queue(StateEvent("enable", worker, fingerprint(key)))

    def attach(self) -> None:
        """Observe every worker of the pool; after the pool was swapped (a reload, the admin
        API) also read the shared state again, which a new worker's fresh ring lacks."""
        if not self.enabled or not self._attached:
            return
        for worker in self.pool:
            link = _Link(self, worker.name, worker.keys)
            worker.keys.observer = link
            worker.circuit.observer = link
        if self._greenlet is not None:
            self._resync_wanted = True
            self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._greenlet is not None:
            return
        self.origin = f"{self.instance}/{os.getpid()}"  # the worker process's pid, after the fork
        self._attached = True
        self.attach()
        self.observer.shared_state_reachable(False)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._attached = False
        for worker in self.pool:
            worker.keys.observer = None
            worker.circuit.observer = None
        for greenlet in (self._greenlet, self._listener):
            if greenlet is not None:
                greenlet.kill(block=False)
        self._greenlet = self._listener = None
        self._disconnect()

    # --- the background side -------------------------------------------------------------------

    def _run(self) -> None:
        """Connect, then write and heartbeat until something fails; back off; again."""
        delay = BACKOFF[0]
        while True:
            try:
                self.connect()
                delay = BACKOFF[0]
                self._listener = gevent.spawn(self._listen)
                self._listener.link(lambda _: self._wake.set())  # its end wakes this loop at once
                while not self._listener.dead:
                    self._wake.wait(HEARTBEAT)
                    self._wake.clear()
                    if self._resync_wanted:
                        self._resync_wanted = False
                        self.resync()
                    if not self.flush():
                        self._ping()
                raise self._listener.value or ConnectionError("the listener ended")
            except Exception as exc:  # noqa: BLE001 - any failure of Redis: serve locally, retry
                self._lost(exc)
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])

    def _listen(self) -> Exception:
        """Apply events until the connection fails; returns the failure (a greenlet that
        raised would print a traceback: an outage is a warning, logged once by `_lost`)."""
        try:
            while True:
                self.poll(HEARTBEAT)
        except Exception as exc:  # noqa: BLE001 - handed to the loop, which reconnects
            return exc

    def connect(self) -> int:
        """Open the connections, subscribe, write what was queued, read the shared state.
        Returns how many shared entries applied here."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert self.url is not None
        self._disconnect()
        client = redis.Redis.from_url(
            redis_py_url(self.url), socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT,
            decode_responses=True, retry=Retry(NoBackoff(), 0), max_connections=2,
        )  # fmt: skip
        self._client = client
        self._script = client.register_script(_SET_LATER)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        pubsub.subscribe(CHANNEL)
        self.flush()
        applied = self.resync()
        self.reachable = True
        self.observer.shared_state_reachable(True)
        if self._warned:
            log.warning("shared state: Redis at %s is reachable again; %d shared entries applied here",
                        describe(self.url), applied)  # fmt: skip
        else:
            log.info("shared state: Redis at %s (instance %s), %d shared entries applied here",
                     describe(self.url), self.instance, applied)  # fmt: skip
        self._warned = False
        return applied

    def resync(self) -> int:
        """Read every shared entry (a SCAN) and apply it: a process that starts or reconnects
        later catches up."""
        assert self._client is not None
        names = list(self._client.scan_iter(match=f"{PREFIX}*", count=500))
        applied = 0
        now = self.clock()
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            for name, value in zip(batch, self._client.mget(batch), strict=True):
                event = from_record(name, value)
                if event is not None and apply(self.pool, event, now):
                    applied += 1
        return applied

    def flush(self) -> bool:
        """Write and publish the queued changes in one round trip; False when there were none."""
        if not self._outbox:
            return False
        assert self._client is not None
        events = list(self._outbox)
        now = self.clock()
        pipe = self._client.pipeline(transaction=False)
        for event in events:
            self._write(pipe, event, now)
        pipe.execute()
        for _ in events:
            self._outbox.popleft()
        return True

    def _write(self, pipe: Any, event: StateEvent, now: float) -> None:
        event = StateEvent(event.kind, event.worker, event.fingerprint, event.until, self.origin)
        if event.kind in ("cool", "open"):
            assert event.until is not None
            ttl = int((event.until - now) * 1000)
            if ttl <= 0:
                return
            self._script(keys=[event.record], args=[repr(event.until), ttl], client=pipe)
        elif event.kind == "disable":
            pipe.set(event.record, "1", px=int(DISABLED_TTL * 1000))
        elif event.kind == "enable":
            pipe.delete(event.record, StateEvent("cool", event.worker, event.fingerprint).record)
        else:
            pipe.delete(event.record)
        pipe.publish(CHANNEL, encode(event))

    def poll(self, timeout: float) -> int:
        """Apply what other processes published, waiting up to `timeout` for the first message."""
        assert self._pubsub is not None
        applied = 0
        message = self._pubsub.get_message(timeout=timeout)
        while message is not None:
            if message.get("type") == "message":
                applied += self.receive(message["data"])
            message = self._pubsub.get_message(timeout=0)
        return applied

    def receive(self, data: str | bytes) -> int:
        event = decode(data)
        if event is None:
            log.warning("shared state: a malformed event on %s was ignored", CHANNEL)
            return 0
        if event.origin == self.origin:
            return 0
        return int(apply(self.pool, event, self.clock()))

    def _ping(self) -> None:
        assert self._client is not None
        self._client.ping()

    def _lost(self, exc: BaseException) -> None:
        self.observer.shared_state_error()
        if self.reachable or not self._warned:
            assert self.url is not None
            log.warning(
                "shared state: Redis at %s is unreachable (%s); serving on this process's own state "
                "and reconnecting", describe(self.url), type(exc).__name__,
            )  # fmt: skip
            self._warned = True
        self.reachable = False
        self.observer.shared_state_reachable(False)
        if self._listener is not None:
            self._listener.kill(block=False)
            self._listener = None
        self._disconnect()

    def _disconnect(self) -> None:
        for closing in (self._pubsub, self._client):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    log.debug("closing a Redis connection failed", exc_info=True)
        self._pubsub = self._client = None
