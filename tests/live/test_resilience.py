"""Resilience through the real server (gunicorn + gevent, one worker process): key cooldowns
and disabling, routing strategies under concurrent load, the circuit breaker, and the
mid-stream and whole-request deadlines. Everything is counted at the fake upstreams."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import Any

import pytest
import requests

from tests.fakes.http_server import eventually
from tests.fakes.openai_server import Error, Hang, Stream
from tests.live.helpers import CHAT, worker_toml


def chat(gw, **extra: Any) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.post(gw.url + "/api/chat", json={**CHAT, **extra}, timeout=10)


def health(gw) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return requests.get(gw.url + "/api/health", timeout=5).json()  # type: ignore[no-any-return]


def keys_used(fake) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.chat_requests]


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_rate_limited_key_rests_for_its_retry_after_while_the_next_key_of_the_same_worker_serves(
    fake_openai, gateway, form
):
    main, other = fake_openai(), fake_openai()
    gw = gateway(
        worker_toml("main", main.base_url, priority=1, keys=["sk-one", "sk-two"])
        + worker_toml("other", other.base_url, priority=2)
    )
    sent = time.time()
    # the key may be used again from `rested` on (an HTTP date has whole seconds: 2 to 3 s)
    if form == "seconds":
        main.rate_limited_keys["sk-one"], rested = "2", sent + 2
    else:
        main.rate_limited_keys["sk-one"], rested = formatdate(sent + 3, usegmt=True), float(int(sent + 3))

    first = chat(gw)
    assert first.status_code == 200
    assert first.headers["X-Cortex-Worker"] == "main" and first.headers["X-Cortex-Attempts"] == "2"
    del main.rate_limited_keys["sk-one"]  # the upstream would take it again: only the cooldown keeps it out
    assert keys_used(main) == ["sk-one", "sk-two"]

    back_at = None
    while back_at is None and time.time() < rested + 3:
        response = chat(gw)
        assert response.headers["X-Cortex-Worker"] == "main" and response.headers["X-Cortex-Attempts"] == "1"
        if keys_used(main)[-1] == "sk-one":
            back_at = time.time()
        time.sleep(0.1)
    assert back_at is not None, "the rested key never came back"
    assert back_at >= rested  # never before its Retry-After
    during = keys_used(main)[2:-1]
    assert len(during) >= 5 and set(during) == {"sk-two"}  # every request in the window used key 2
    assert other.chat_requests == []  # a rate-limited key is not a reason to leave the worker


def test_a_refused_key_is_disabled_and_never_sent_again(fake_openai, gateway):
    bad, good = "sk-BADKEY-SECRET-0001", "sk-GOODKEY-SECRET-0002"
    upstream = fake_openai(valid_keys={good})
    gw = gateway(worker_toml("main", upstream.base_url, keys=[bad, good]))

    attempts = [chat(gw).headers["X-Cortex-Attempts"] for _ in range(6)]
    assert attempts == ["2"] + ["1"] * 5
    assert keys_used(upstream) == [bad] + [good] * 6

    providers = requests.get(gw.url + "/api/providers", timeout=5)
    key_states = providers.json()["providers"][0]["key_states"]
    assert [(k["key"], k["state"], k["disabled_count"]) for k in key_states] == [(1, "disabled", 1), (2, "ready", 0)]
    for text in (providers.text, requests.get(gw.url + "/api/health", timeout=5).text, gw.log()):
        assert "SECRET" not in text and "BADKEY" not in text and "GOODKEY" not in text
    assert "key #1 was refused" in gw.log()


# --- routing strategies -------------------------------------------------------------------


def test_round_robin_spreads_concurrent_requests_exactly_evenly(fake_openai, gateway):
    """One process orders every request in one step (no yield), so 30 requests led in turn
    give each of 3 answering workers exactly 10, however they interleave. Every upstream
    holds its answer until all 30 are in flight, which proves they were concurrent."""
    gate = threading.Event()
    fakes = [fake_openai(chat=Stream(chunks=["ok"], gate=gate, gate_at=0)) for _ in range(3)]
    gw = gateway(
        "".join(worker_toml(f"w{i}", f.base_url, priority=i) for i, f in enumerate(fakes)),
        env={"ROUTING_STRATEGY": "round_robin"},
    )
    with ThreadPoolExecutor(max_workers=30) as pool:
        futures = [pool.submit(chat, gw) for _ in range(30)]
        try:
            assert eventually(lambda: sum(len(f.streams) for f in fakes) == 30, timeout=10)
        finally:
            gate.set()
        responses = [future.result() for future in futures]
    assert all(r.status_code == 200 and r.text == "ok" for r in responses)
    assert [len(f.chat_requests) for f in fakes] == [10, 10, 10]
    assert sorted(r.headers["X-Cortex-Worker"] for r in responses) == ["w0"] * 10 + ["w1"] * 10 + ["w2"] * 10


def test_least_loaded_sends_new_requests_away_from_a_busy_worker_and_back(fake_openai, gateway):
    gate = threading.Event()
    a = fake_openai(chat=Stream(chunks=["long ", "answer"], gate=gate))
    b = fake_openai(chat=Stream(chunks=["quick"]))
    gw = gateway(
        worker_toml("a", a.base_url, priority=1) + worker_toml("b", b.base_url, priority=2),
        env={"ROUTING_STRATEGY": "least_loaded"},
    )
    a.queue(Stream(chunks=["quick"]))
    assert chat(gw).headers["X-Cortex-Worker"] == "a"  # idle: ties go by priority
    with ThreadPoolExecutor(max_workers=3) as pool:
        held = [pool.submit(chat, gw, provider="a") for _ in range(3)]  # three long streams on a
        try:
            assert eventually(lambda: health(gw)["workers"]["a"]["in_flight"] == 3, timeout=5)
            served = [chat(gw).headers["X-Cortex-Worker"] for _ in range(4)]
        finally:
            gate.set()
        assert all(f.result().text == "long answer" for f in held)
    assert served == ["b"] * 4 and len(b.chat_requests) == 4 and len(a.chat_requests) == 4
    assert eventually(lambda: health(gw)["workers"]["a"]["in_flight"] == 0)
    assert [chat(gw).headers["X-Cortex-Worker"] for _ in range(2)] == ["a", "a"]  # the gate is open now
    assert len(a.chat_requests) == 6 and len(b.chat_requests) == 4


def test_latency_prefers_the_fast_worker_and_still_probes_the_slow_one(fake_openai, gateway):
    """The slow worker has the better priority, so only measured latency can put the fast one
    first. With LATENCY_EXPLORE=0.2 the slow one leads a request with probability 0.2: over
    50 requests it is probed at least once (miss chance 0.8**50, about 1e-5) and leads fewer
    than half of them (chance of 25 or more about 1e-6)."""
    slow = fake_openai(chat=Stream(chunks=["slow"], first_delay=0.3))
    fast = fake_openai(chat=Stream(chunks=["fast"]))
    gw = gateway(
        worker_toml("slow", slow.base_url, priority=1) + worker_toml("fast", fast.base_url, priority=2),
        env={"ROUTING_STRATEGY": "latency", "LATENCY_EXPLORE": "0.2"},
    )
    # unmeasured workers lead first, by priority: one request each
    assert [chat(gw).headers["X-Cortex-Worker"] for _ in range(2)] == ["slow", "fast"]
    served = [chat(gw).headers["X-Cortex-Worker"] for _ in range(50)]
    assert 1 <= served.count("slow") < 25, served
    assert len(slow.chat_requests) == 1 + served.count("slow")


# --- circuit breaker ----------------------------------------------------------------------


def test_circuit_opens_skips_the_worker_then_one_trial_closes_it(fake_openai, gateway):
    a = fake_openai(chat=Error(500))
    b = fake_openai(chat=Stream(chunks=["from b"]))
    gw = gateway(
        worker_toml("a", a.base_url, priority=1) + worker_toml("b", b.base_url, priority=2),
        env={"CIRCUIT_FAILURES": "5", "CIRCUIT_COOLDOWN": "1.5"},
    )
    # a's 500 fails over to b within the same request: one request, two attempts, no new round
    for n in range(1, 6):
        response = chat(gw)
        assert response.text == "from b" and response.headers["X-Cortex-Attempts"] == "2"
        assert len(a.chat_requests) == n
    worker = health(gw)["workers"]["a"]
    assert worker["status"] == "unavailable" and worker["circuit"]["state"] == "open"
    assert worker["circuit"]["consecutive_failures"] == 5 and worker["error"].startswith("circuit open")

    for _ in range(3):  # open: a is not even asked
        response = chat(gw)
        assert response.headers["X-Cortex-Worker"] == "b" and response.headers["X-Cortex-Attempts"] == "1"
    assert len(a.chat_requests) == 5

    a.chat = Stream(chunks=["from a"])  # a recovers while its circuit is open
    a.queue(Stream(chunks=["trial"], first_delay=0.5))  # the trial takes a while to answer
    assert eventually(lambda: health(gw)["workers"]["a"]["circuit"]["state"] == "half_open", timeout=5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        trial = pool.submit(chat, gw)
        assert eventually(lambda: len(a.waiting) == 1, timeout=5)
        during = chat(gw)  # while the one trial runs, everyone else still skips a
        assert trial.result().text == "trial" and trial.result().headers["X-Cortex-Worker"] == "a"
    assert during.headers["X-Cortex-Worker"] == "b" and len(a.chat_requests) == 6

    worker = health(gw)["workers"]["a"]
    assert worker["circuit"] == {"state": "closed", "consecutive_failures": 0, "open_until": None}
    assert worker["status"] == "healthy" and worker["error"] is None
    assert chat(gw).text == "from a" and len(a.chat_requests) == 7


# --- deadlines ----------------------------------------------------------------------------


def test_a_stream_silent_for_longer_than_idle_timeout_ends_with_a_timeout_marker(fake_openai, gateway):
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=["first ", "never"], gate=gate))
    gw = gateway(worker_toml("up", upstream.base_url), env={"IDLE_TIMEOUT": "0.5"})
    try:
        started = time.monotonic()
        response = chat(gw)
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        first, marker = response.text.rstrip("\n").split("\n")
        assert first == "first " and marker.startswith("[cortex-error] timeout: ") and "IDLE_TIMEOUT" in marker
        assert 0.5 <= elapsed < 3
        assert upstream.streams[0].closed_by_peer.wait(timeout=5)  # the silent upstream was hung up on
    finally:
        gate.set()


def test_the_request_timeout_bounds_the_whole_request_across_attempts(fake_openai, gateway):
    one, two = fake_openai(chat=Hang(seconds=30)), fake_openai(chat=Hang(seconds=30))
    gw = gateway(
        worker_toml("one", one.base_url, priority=1) + worker_toml("two", two.base_url, priority=2),
        env={"FIRST_TOKEN_TIMEOUT": "0.7", "REQUEST_TIMEOUT": "1"},
    )
    started = time.monotonic()
    response = chat(gw)
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert 0.9 <= elapsed < 3  # one's 0.7 s first-token timeout, then two gets what is left of 1 s
    attempts = response.json()["attempts"]
    assert [(x["worker"], x["kind"]) for x in attempts] == [("one", "timeout"), ("two", "timeout")]
    assert "FIRST_TOKEN_TIMEOUT" in attempts[0]["message"] and "REQUEST_TIMEOUT" in attempts[1]["message"]
    assert one.hung[0].closed_by_peer.wait(timeout=5) and two.hung[0].closed_by_peer.wait(timeout=5)
