"""Scale-out for real: a redis-server, two Cortex instances (separate gunicorn masters on their
own ports, the same REDIS_URL, their own INSTANCE_ID) and an nginx in front of both
(tests/nginx_server.py, with deploy/nginx/cortex-proxy.conf as operators use it).

Each point of the shared-state promise through real HTTP: one client limit across instances;
a key rate limited through A is skipped by B until its Retry-After; a worker whose circuit
opened in A is skipped by B; Redis killed mid-test leaves both serving (and they find it again);
a stream through nginx arrives chunk by chunk. Every wait is bounded; nothing is timed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.fakes.openai_server import Error, Stream
from tests.gateway_process import GatewayProcess, free_port
from tests.live.helpers import CHAT, toml_worker, worker_toml
from tests.nginx_server import nginx_server
from tests.redis_server import redis_server as start_redis

pytestmark = pytest.mark.live

HOT, SPARE = "sk-hot-SECRET-key-1", "sk-spare-SECRET-key-2"


def post(url: str, body: dict[str, object] = CHAT) -> requests.Response:
    """One request on its own connection."""
    with requests.Session() as session:
        return session.post(url, json=body, timeout=10)


def get_json(url: str) -> dict:  # type: ignore[type-arg]
    with requests.get(url, timeout=5) as response:
        return response.json()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait, bounded, for something another process does in the background."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.05)


def pair(gateway, redis_uri: str, toml: str, env: dict[str, str] | None = None) -> tuple[GatewayProcess, ...]:  # type: ignore[no-untyped-def]
    """Instances gw-a and gw-b, one worker process each, sharing `redis_uri`; both connected."""
    started = tuple(
        gateway(toml, {"REDIS_URL": redis_uri, "INSTANCE_ID": name, **(env or {})}) for name in ("gw-a", "gw-b")
    )
    for gw in started:
        until(lambda gw=gw: get_json(gw.url + "/api/health")["shared_state"]["reachable"], 10, "Redis reached")
    return started


def used(upstream, key: str) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for r in upstream.chat_requests if r.headers.get("authorization") == f"Bearer {key}")


def test_one_client_limit_holds_across_two_instances_behind_nginx(fake_openai, gateway, redis_server, tmp_path):
    upstream = fake_openai()
    env = {"RATE_LIMIT": "6/minute", "TRUSTED_PROXIES": "1", "ACCESS_LOG": "-"}
    a, b = pair(gateway, redis_server, worker_toml("up", upstream.base_url), env)
    with nginx_server(tmp_path / "nginx", [a.port, b.port]) as proxy:
        codes = [post(proxy + "/api/chat/complete").status_code for _ in range(9)]
    assert codes == [200] * 6 + [429] * 3
    assert len(upstream.chat_requests) == 6
    for gw in (a, b):  # nginx spread the requests: both instances counted against one budget
        assert "/api/chat/complete" in gw.log() and "counters in redis://127.0.0.1:" in gw.log()
        assert get_json(gw.url + "/api/health")["instance"] == ("gw-a" if gw is a else "gw-b")


def test_a_key_rate_limited_through_a_is_not_used_by_b_before_its_retry_after(fake_openai, gateway, redis_server):
    upstream = fake_openai()
    upstream.rate_limited_keys[HOT] = "30"
    a, b = pair(gateway, redis_server, worker_toml("up", upstream.base_url, keys=[HOT, SPARE]))
    for _ in range(2):  # round robin: the hot key is tried within two requests (its 429 fails over)
        assert post(a.url + "/api/chat/complete").status_code == 200
        if used(upstream, HOT):
            break
    assert used(upstream, HOT) == 1

    def b_sees_it_cooling() -> bool:
        key = get_json(b.url + "/api/providers")["providers"][0]["key_states"][0]
        return key["state"] == "cooling" and key["cooldown_remaining"] > 20

    until(b_sees_it_cooling, 5, "B learned that key 1 is cooling down")
    for _ in range(6):
        assert post(b.url + "/api/chat/complete").status_code == 200
    assert used(upstream, HOT) == 1 and used(upstream, SPARE) >= 7
    assert HOT not in a.log() + b.log()


def test_a_worker_whose_circuit_opened_in_a_is_skipped_by_b(fake_openai, gateway, redis_server):
    bad, good = fake_openai(chat=Error(500)), fake_openai()
    toml = worker_toml("bad", bad.base_url, priority=1) + worker_toml("good", good.base_url, priority=2)
    a, b = pair(gateway, redis_server, toml, {"CIRCUIT_FAILURES": "2", "CIRCUIT_COOLDOWN": "60"})
    assert post(b.url + "/api/chat/complete").json()["provider"] == "good"
    assert len(bad.chat_requests) == 1  # B tries the bad worker first while its circuit is closed
    for _ in range(2):  # two failures in A open its circuit (each request then fails over to good)
        assert post(a.url + "/api/chat/complete").status_code == 200
    assert get_json(a.url + "/api/health")["workers"]["bad"]["circuit"]["state"] == "open"
    seen = len(bad.chat_requests)
    until(lambda: get_json(b.url + "/api/health")["workers"]["bad"]["circuit"]["state"] == "open", 5,
          "B learned that the bad worker's circuit is open")  # fmt: skip
    for _ in range(4):
        assert post(b.url + "/api/chat/complete").json()["provider"] == "good"
    assert len(bad.chat_requests) == seen


def test_killing_redis_leaves_both_instances_serving_and_they_find_it_again(fake_openai, gateway, tmp_path):
    upstream = fake_openai()
    toml = toml_worker(name="up", base_url=upstream.base_url, models=["fake-model"], rpm=1000)
    env = {"RATE_LIMIT": "1000/minute"}  # the limits and the quota go through Redis too
    port = free_port()
    with start_redis(tmp_path / "redis", port=port) as uri:
        a, b = pair(gateway, uri, toml, env)
        with nginx_server(tmp_path / "nginx", [a.port, b.port]) as proxy:
            assert post(proxy + "/api/chat/complete").status_code == 200
    # Redis is gone (terminated). Both instances notice and keep serving on their own state.
    for gw in (a, b):
        until(lambda gw=gw: not get_json(gw.url + "/api/health")["shared_state"]["reachable"], 10,
              f"{gw.url} noticed Redis is down")  # fmt: skip
    with nginx_server(tmp_path / "nginx-2", [a.port, b.port]) as proxy:
        assert [post(proxy + "/api/chat/complete").status_code for _ in range(4)] == [200] * 4
        with requests.post(proxy + "/api/chat", json=CHAT, timeout=10) as streamed:
            assert streamed.status_code == 200 and streamed.text == "Hello from the fake!"
    for gw in (a, b):
        assert post(gw.url + "/v1/chat/completions", {**CHAT, "model": "fake-model"}).status_code == 200
        assert get_json(gw.url + "/api/health")["status"] == "healthy"  # Redis is not a worker
        assert gw.log().count("is unreachable") == 1  # one warning per outage, not per request or retry
        metrics = requests.get(gw.url + "/metrics", timeout=5).text
        assert "cortex_shared_state_up 0.0" in metrics
        errors = [line for line in metrics.splitlines() if line.startswith("cortex_shared_state_errors_total ")]
        assert errors and float(errors[0].split()[1]) >= 1
    # Redis is back where it was: both reconnect (the backoff is at most 5 s) and say so.
    with start_redis(tmp_path / "redis-again", port=port):
        for gw in (a, b):
            until(lambda gw=gw: get_json(gw.url + "/api/health")["shared_state"]["reachable"], 15,
                  f"{gw.url} reconnected")  # fmt: skip
            assert "is reachable again" in gw.log()
            assert post(gw.url + "/api/chat/complete").status_code == 200


def test_a_stream_through_nginx_arrives_before_the_upstream_sends_its_last_chunk(
    fake_openai, gateway, redis_server, tmp_path: Path
):
    gate = threading.Event()  # holds every chunk after the first one at the upstream
    upstream = fake_openai(chat=Stream(gate=gate))
    a, b = pair(gateway, redis_server, worker_toml("up", upstream.base_url))
    with nginx_server(tmp_path / "nginx", [a.port, b.port]) as proxy:
        with requests.post(proxy + "/api/chat", json=CHAT, stream=True, timeout=10) as response:
            assert response.status_code == 200
            chunks = response.iter_content(chunk_size=None)
            first = b""
            while b"Hello" not in first:  # each read bounded by the 10 s read timeout
                first += next(chunks)
            assert not gate.is_set() and len(upstream.streams) == 1 and not upstream.streams[0].finished
            gate.set()
            rest = b"".join(chunks)
    assert (first + rest).decode() == "Hello from the fake!"
    assert upstream.streams[0].finished


def test_an_instance_that_starts_while_redis_is_down_serves_and_says_so(fake_openai, gateway):
    upstream = fake_openai()
    down = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    gw = gateway(worker_toml("up", upstream.base_url), {"REDIS_URL": down, "RATE_LIMIT": "100/minute"})
    health = get_json(gw.url + "/api/health")
    assert health["shared_state"] == {"backend": "redis", "reachable": False} and health["status"] == "healthy"
    for _ in range(3):
        assert post(gw.url + "/api/chat/complete").status_code == 200
    until(lambda: "is unreachable" in gw.log(), 5, "the outage was logged")
    assert gw.log().count("is unreachable") == 1 and "hunter2secret" not in gw.log()
