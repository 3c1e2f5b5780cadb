"""Failover before the first byte, through the real server: refused connections, HTTP
errors, empty streams and rate-limited keys, and the 503 when nothing can answer."""

from __future__ import annotations

import time

import requests

from tests.fakes.openai_server import EmptyStream, Error, Hang, Stream
from tests.live.helpers import CHAT, worker_toml


def test_fails_over_past_refused_500_and_empty_stream_to_a_healthy_worker(fake_openai, gateway, refused_url):
    broken = fake_openai(chat=Error(500))
    empty = fake_openai(chat=EmptyStream())
    healthy = fake_openai(chat=Stream(chunks=["all ", "good"]))
    gw = gateway(
        worker_toml("refused", refused_url, priority=1)
        + worker_toml("broken", broken.base_url, priority=2)
        + worker_toml("empty", empty.base_url, priority=3)
        + worker_toml("healthy", healthy.base_url, priority=4)
    )

    response = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    assert response.status_code == 200
    assert response.text == "all good"
    assert response.headers["X-Cortex-Worker"] == "healthy"
    assert response.headers["X-Cortex-Attempts"] == "4"
    assert len(broken.chat_requests) == 1 and len(empty.chat_requests) == 1 and len(healthy.chat_requests) == 1

    complete = requests.post(gw.url + "/api/chat/complete", json=CHAT, timeout=10)
    assert complete.status_code == 200
    body = complete.json()
    assert body["response"] == "all good" and body["provider"] == "healthy" and body["model"] == "fake-model"
    assert body["usage"] == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


def test_503_with_every_attempt_explained_when_all_workers_fail(fake_openai, gateway, refused_url):
    broken = fake_openai(chat=Error(500))
    empty = fake_openai(chat=EmptyStream())
    gw = gateway(
        worker_toml("refused", refused_url, priority=1)
        + worker_toml("broken", broken.base_url, priority=2)
        + worker_toml("empty", empty.base_url, priority=3)
    )

    for path in ("/api/chat", "/api/chat/complete"):
        response = requests.post(gw.url + path, json=CHAT, timeout=10)
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json"
        assert int(response.headers["Retry-After"]) >= 1
        body = response.json()
        assert body["error"] == "No workers available"
        assert set(body) >= {"error", "details", "timestamp"}
        # a 500 and an empty answer are transient: new rounds retry them (after a backoff) until
        # MAX_ATTEMPTS (6) is spent; a refused connection is not retried
        assert [(a["worker"], a["kind"], a["status"]) for a in body["attempts"]] == [
            ("refused", "connect", None),
            ("broken", "server", 500),
            ("empty", "empty", None),
            ("broken", "server", 500),
            ("empty", "empty", None),
            ("broken", "server", 500),
        ]
        assert body["details"].startswith("no attempt left within MAX_ATTEMPTS")
        assert "Traceback" not in response.text


def test_rate_limited_key_cools_down_and_the_next_key_of_the_same_worker_answers(fake_openai, gateway):
    upstream = fake_openai()
    upstream.rate_limited_keys["sk-first-key-0001"] = "30"
    fallback = fake_openai()
    gw = gateway(
        worker_toml("main", upstream.base_url, priority=1, keys=["sk-first-key-0001", "sk-second-key-0002"])
        + worker_toml("fallback", fallback.base_url, priority=2)
    )

    first = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    assert first.status_code == 200
    assert first.headers["X-Cortex-Worker"] == "main" and first.headers["X-Cortex-Attempts"] == "2"
    for _ in range(4):  # key 1 rests for its Retry-After: every later request goes straight to key 2
        again = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
        assert again.headers["X-Cortex-Worker"] == "main" and again.headers["X-Cortex-Attempts"] == "1"
    used = [r.headers["authorization"] for r in upstream.chat_requests]
    assert used == ["Bearer sk-first-key-0001"] + ["Bearer sk-second-key-0002"] * 5
    assert fallback.chat_requests == []


def test_upstream_400_is_the_clients_fault_and_is_not_retried_elsewhere(fake_openai, gateway):
    from tests.fakes.openai_server import error_body

    picky = fake_openai(
        chat=Error(400, error_body("'messages' must not be empty of meaning", "invalid_request_error", None))
    )
    other = fake_openai()
    gw = gateway(worker_toml("picky", picky.base_url, priority=1) + worker_toml("other", other.base_url, priority=2))

    response = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    assert response.status_code == 400
    assert "must not be empty of meaning" in response.json()["details"]
    assert other.chat_requests == []


def test_hung_upstream_is_abandoned_after_the_first_token_timeout(fake_openai, gateway):
    hung = fake_openai(chat=Hang(seconds=30))
    healthy = fake_openai(chat=Stream(chunks=["rescued"]))
    gw = gateway(worker_toml("hung", hung.base_url, priority=1) + worker_toml("healthy", healthy.base_url, priority=2),
                 env={"FIRST_TOKEN_TIMEOUT": "0.5"})  # fmt: skip

    started = time.monotonic()
    response = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.text == "rescued"
    assert response.headers["X-Cortex-Worker"] == "healthy" and response.headers["X-Cortex-Attempts"] == "2"
    assert 0.5 <= elapsed < 2.5  # abandoned at the timeout, not before and not much later
    assert len(hung.hung) == 1  # a timeout is not retried in a new round
    # the gateway hung up on the silent upstream instead of leaving the request open there
    assert hung.hung[0].closed_by_peer.wait(timeout=5)
