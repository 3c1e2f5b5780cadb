"""Shared state: events on the wire, applying another process's change (the later time wins),
the observers on the key ring and the circuit, the settings; and two processes' worth of
SharedState against a real redis-server, driven step by step (no greenlets: this process
is not gevent-patched)."""

from __future__ import annotations

import pytest

from app.circuit import CLOSED, HALF_OPEN, OPEN, Circuit
from app.config_values import ConfigError
from app.edge_settings import Edges
from app.keys import KeyRing
from app.limit_storage import storage_uri
from app.pool import Worker, WorkerPool
from app.settings import WorkerSpec, load_settings
from app.shared_state import (
    CHANNEL,
    SharedState,
    StateEvent,
    apply,
    decode,
    encode,
    fingerprint,
    from_record,
    instance_name,
    redis_py_url,
)

KEYS = ("sk-first-secret-key", "sk-second-secret-key")
NOW = 1_764_000_000.0


def pool(*names: str) -> WorkerPool:
    return WorkerPool([Worker(WorkerSpec(name, "openai_compat", "http://x", KEYS), None) for name in names])  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def key_cooled(self, index: int, until: float) -> None:
        self.calls.append(("cooled", index, until))

    def key_disabled(self, index: int) -> None:
        self.calls.append(("disabled", index))

    def circuit_opened(self, until: float) -> None:
        self.calls.append(("opened", until))

    def circuit_closed(self) -> None:
        self.calls.append(("closed",))


# --- the pure parts ------------------------------------------------------------------------


def test_a_fingerprint_is_short_stable_and_not_the_key():
    assert fingerprint(KEYS[0]) == fingerprint(KEYS[0]) != fingerprint(KEYS[1])
    assert len(fingerprint(KEYS[0])) == 16 and int(fingerprint(KEYS[0]), 16) >= 0
    assert "secret" not in fingerprint(KEYS[0])


@pytest.mark.parametrize(
    "event",
    [
        StateEvent("cool", "groq", "ab12", NOW + 30, "gw-a/1"),
        StateEvent("disable", "groq", "ab12", None, "gw-a/1"),
        StateEvent("enable", "groq", "ab12", None, "gw-a/1"),
        StateEvent("open", "groq", None, NOW + 5.5, "gw-b/7"),
        StateEvent("close", "groq", None, None, "gw-b/7"),
    ],
)
def test_events_round_trip(event):
    assert decode(encode(event)) == event
    assert decode(encode(event).encode()) == event


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"o":"a/1","e":"explode","w":"g","f":"ab","u":1}',
        '{"o":"a/1","e":"cool","w":"g","f":null,"u":1}',
        '{"o":"a/1","e":"cool","w":"g","f":"ab","u":true}',
        '{"o":"a/1","e":"cool","w":"g","f":"ab","u":NaN}',
        '{"o":"a/1","e":"open","w":"g","f":null,"u":"soon"}',
        '{"o":1,"e":"close","w":"g"}',
        '{"o":"a/1","e":"close","w":3}',
    ],
)
def test_malformed_events_are_none(text):
    assert decode(text) is None


def test_records_read_back_as_the_events_that_set_them():
    cool = StateEvent("cool", "groq", "ab12", NOW)
    assert from_record(cool.record, repr(NOW)) == cool
    assert cool.record == "cortex:cool:groq:ab12"
    disabled = StateEvent("disable", "groq", "ab12")
    assert disabled.record == "cortex:disabled:groq:ab12" == StateEvent("enable", "groq", "ab12").record
    assert from_record(disabled.record, "1") == disabled
    circuit = StateEvent("open", "groq", None, NOW)
    assert circuit.record == "cortex:circuit:groq" == StateEvent("close", "groq").record
    assert from_record(circuit.record, str(NOW).encode()) == circuit
    assert from_record("cortex:cool:groq:ab12", "later") is None
    assert from_record("LIMITS:LIMITER/cortex/x", "3") is None
    assert from_record("cortex:cool:groq:ab12", None) is None


def test_a_remote_cooldown_extends_but_never_shortens_a_local_one():
    p = pool("groq")
    ring = p.get("groq").keys  # type: ignore[union-attr]
    ring.cool_down(0, NOW, 60)
    fp = fingerprint(KEYS[0])
    assert apply(p, StateEvent("cool", "groq", fp, NOW + 10), NOW)
    assert ring.available_at(NOW) is None and ring.stats(NOW)[0]["cooldown_remaining"] == 60
    assert apply(p, StateEvent("cool", "groq", fp, NOW + 90), NOW)
    assert ring.stats(NOW)[0]["cooldown_remaining"] == 90
    assert ring.stats(NOW)[0]["rate_limited"] == 1  # what this process saw, not what it was told
    assert ring.candidates(NOW + 1) == [1]


def test_expired_unknown_and_foreign_events_change_nothing():
    p = pool("groq")
    fp = fingerprint(KEYS[0])
    assert not apply(p, StateEvent("cool", "groq", fp, NOW - 1), NOW)
    assert not apply(p, StateEvent("cool", "mistral", fp, NOW + 5), NOW)
    assert not apply(p, StateEvent("cool", "groq", fingerprint("another-key"), NOW + 5), NOW)
    assert not apply(p, StateEvent("open", "groq", None, NOW - 1), NOW)
    ring = p.get("groq").keys  # type: ignore[union-attr]
    assert sorted(i for i in ring.candidates(NOW) if i is not None) == [0, 1]


def test_disable_and_enable_by_fingerprint():
    p = pool("groq")
    ring = p.get("groq").keys  # type: ignore[union-attr]
    assert apply(p, StateEvent("disable", "groq", fingerprint(KEYS[1])), NOW)
    assert ring.candidates(NOW) == [0] and ring.stats(NOW)[1]["disabled_count"] == 0
    ring.cool_down(1, NOW, 30)
    assert apply(p, StateEvent("enable", "groq", fingerprint(KEYS[1])), NOW)
    assert sorted(i for i in ring.candidates(NOW) if i is not None) == [0, 1]


def test_a_remote_open_holds_the_circuit_open_and_a_remote_close_closes_it():
    p = pool("groq")
    circuit = p.get("groq").circuit  # type: ignore[union-attr]
    assert apply(p, StateEvent("open", "groq", None, NOW + 30), NOW)
    assert circuit.state(NOW) == OPEN and circuit.blocked(NOW)
    assert apply(p, StateEvent("open", "groq", None, NOW + 10), NOW)
    assert circuit.opened_until == NOW + 30
    assert circuit.state(NOW + 31) == HALF_OPEN and circuit.allow(NOW + 31)  # this process's trial
    assert apply(p, StateEvent("close", "groq"), NOW + 32)
    assert circuit.state(NOW + 32) == CLOSED


def test_a_remote_open_ends_a_local_trial_so_the_circuit_cannot_stay_blocked():
    circuit = Circuit(failure_threshold=1, cooldown=10)
    circuit.record_failure(NOW)
    assert circuit.allow(NOW + 11)  # the trial
    circuit.hold_open(NOW + 40)
    circuit.record_failure(NOW + 12)  # the trial fails as a straggler of the open state
    assert circuit.state(NOW + 41) == HALF_OPEN and circuit.allow(NOW + 41)


def test_a_disabled_breaker_ignores_remote_opens():
    circuit = Circuit(failure_threshold=0, cooldown=10)
    circuit.hold_open(NOW + 40)
    assert circuit.state(NOW) == CLOSED


def test_the_observers_hear_local_changes_only():
    ring, circuit, heard = KeyRing(KEYS), Circuit(failure_threshold=2, cooldown=10), Recorder()
    ring.observer = circuit.observer = heard
    ring.cool_down(0, NOW, 5)
    ring.cool_down(0, NOW, 1)  # shorter: the cooldown stays, the observer hears the kept time
    ring.disable(1)
    ring.disable(1)  # already disabled: nothing new
    ring.hold(0, NOW + 50)
    ring.refuse(0)
    ring.enable(0)
    circuit.record_success(NOW)  # closed already: nothing to tell
    circuit.record_failure(NOW)
    circuit.record_failure(NOW)
    circuit.record_failure(NOW)  # open already
    circuit.hold_open(NOW + 60)
    circuit.record_success(NOW + 1)
    circuit.close()
    assert heard.calls == [
        ("cooled", 0, NOW + 5),
        ("cooled", 0, NOW + 5),
        ("disabled", 1),
        ("opened", NOW + 10),
        ("closed",),
    ]


# --- settings --------------------------------------------------------------------------------


def test_redis_url_and_instance_id_settings():
    edges = load_settings({"REDIS_URL": "redis://:pw@127.0.0.1:6379/1", "INSTANCE_ID": "gw-a"}).edges
    assert edges.redis_url == "redis://:pw@127.0.0.1:6379/1" and edges.instance_id == "gw-a"
    assert "pw" not in repr(edges)
    toml = load_settings({}, 'redis_url = "rediss://cache.internal:6380/0"\ninstance_id = "eu-1"\n').edges
    assert toml.redis_url == "rediss://cache.internal:6380/0" and toml.instance_id == "eu-1"
    assert load_settings({"REDIS_URL": "redis+unix:///run/redis.sock"}).edges.redis_url
    for bad in ("memory://", "http://127.0.0.1:6379", "redis+sentinel://h:26379/m", "redis://", "redis+unix://"):
        with pytest.raises(ConfigError, match="REDIS_URL"):
            load_settings({"REDIS_URL": bad})
    with pytest.raises(ConfigError, match="INSTANCE_ID"):
        load_settings({"INSTANCE_ID": "two words"})


def test_the_limits_use_redis_url_unless_ratelimit_storage_uri_says_otherwise():
    assert storage_uri(Edges(redis_url="redis://r:6379/0", state_dir="/tmp/s")) == "redis://r:6379/0"
    assert storage_uri(Edges(redis_url="redis://r:6379/0", ratelimit_storage_uri="memory://")) == "memory://"


def test_instance_name_defaults_to_host_and_port():
    assert instance_name(Edges(instance_id="gw-a"), {"PORT": "8000"}) == "gw-a"
    assert instance_name(Edges(), {"PORT": "8000"}).endswith(":8000")
    assert instance_name(Edges(), {}).endswith(":4000")
    assert redis_py_url("redis+unix:///run/r.sock?db=1") == "unix:///run/r.sock?db=1"
    assert redis_py_url("redis://h:1/0") == "redis://h:1/0"


def test_without_redis_everything_stays_local():
    p = pool("groq")
    state = SharedState(None, "gw", p, lambda: NOW)
    state.start()
    assert state.describe() == {"backend": "local", "reachable": True}
    assert p.get("groq").keys.observer is None  # type: ignore[union-attr]
    state.stop()


# --- two processes' worth against a real redis-server ----------------------------------------


def test_two_processes_share_cooldowns_disables_and_circuits_through_redis(redis_server):
    import redis

    clock = [NOW]
    pools = {name: pool("groq") for name in ("a", "b", "late")}
    states = {name: SharedState(redis_server, f"gw-{name}", pools[name], lambda: clock[0]) for name in pools}
    a, b, late = states["a"], states["b"], states["late"]
    try:
        for state in (a, b):
            state._attached = True  # what start() does, minus the greenlet
            state.attach()
            state.connect()
        assert a.describe() == {"backend": "redis", "reachable": True}
        ring_a, ring_b = pools["a"].get("groq").keys, pools["b"].get("groq").keys  # type: ignore[union-attr]
        ring_a.cool_down(0, NOW, 30)
        ring_a.disable(1)
        circuit_a = pools["a"].get("groq").circuit  # type: ignore[union-attr]
        for _ in range(circuit_a.failure_threshold):
            circuit_a.record_failure(NOW)
        assert circuit_a.state(NOW) == OPEN
        assert a.flush()
        applied = 0
        for _ in range(20):  # each poll waits up to 0.25 s for a message
            applied += b.poll(0.25)
            if applied == 3:
                break
        assert applied == 3
        assert ring_b.stats(NOW)[0]["state"] == "cooling" and ring_b.stats(NOW)[1]["state"] == "disabled"
        assert pools["b"].get("groq").circuit.state(NOW) == OPEN  # type: ignore[union-attr]
        assert a.poll(0.1) == 0  # its own events are not applied again

        late.connect()  # a process that starts later reads the state
        ring_late = pools["late"].get("groq").keys  # type: ignore[union-attr]
        assert ring_late.candidates(NOW) == [] and ring_late.available_at(NOW) == NOW + 30
        assert pools["late"].get("groq").circuit.state(NOW) == OPEN  # type: ignore[union-attr]

        b.key_enabled("groq", 1)  # the admin API, through b
        assert b.flush()
        for _ in range(20):
            if a.poll(0.25):
                break
        assert ring_a.stats(NOW)[1]["state"] == "ready"

        raw = redis.Redis.from_url(redis_server)
        try:
            stored = [(name, raw.get(name)) for name in raw.scan_iter(match="cortex:*")]
            assert stored and all(KEYS[0].encode() not in n + (v or b"") for n, v in stored)
            assert all(KEYS[1].encode() not in n + (v or b"") for n, v in stored)
            assert b"cortex:disabled:groq:" + fingerprint(KEYS[1]).encode() not in [n for n, _ in stored]
        finally:
            raw.close()
    finally:
        for state in states.values():
            state.stop()


def test_an_unreachable_redis_is_reported_and_counted(refused_url):
    errors, ups = [], []

    class Metrics:
        def shared_state_reachable(self, up: bool) -> None:
            ups.append(up)

        def shared_state_error(self) -> None:
            errors.append(1)

    port = refused_url.split(":")[2].split("/")[0]
    state = SharedState(f"redis://127.0.0.1:{port}/0", "gw", pool("groq"), lambda: NOW)
    state.observer = Metrics()
    with pytest.raises(Exception) as caught:
        state.connect()
    state._lost(caught.value)
    state._lost(caught.value)
    assert state.describe() == {"backend": "redis", "reachable": False}
    assert errors == [1, 1] and ups == [False, False]
    assert CHANNEL == "cortex:events"


def test_a_silent_redis_fails_the_connection_instead_of_hanging():
    """A server that accepts and never answers (a blackholed Redis): connect gives up after
    the socket timeout with an error the loop handles, so it never holds a greenlet forever."""
    import socket

    import redis

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        state = SharedState(f"redis://127.0.0.1:{port}/0", "gw", pool("groq"), lambda: NOW)
        with pytest.raises(redis.RedisError):
            state.connect()
        state._lost(redis.TimeoutError())
        assert not state.reachable
