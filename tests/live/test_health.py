"""/api/health and /api/providers served from the background health greenlet's snapshot."""

from __future__ import annotations

import time

import requests

from tests.live.helpers import worker_toml


def wait_for(gw, predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(gw.url + "/api/health", timeout=5)
        if predicate(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_health_goes_from_healthy_to_degraded_to_unhealthy_as_upstreams_die(fake_openai, gateway):
    one, two = fake_openai(), fake_openai()
    gw = gateway(
        worker_toml("one", one.base_url) + worker_toml("two", two.base_url), env={"HEALTH_CHECK_INTERVAL": "0.2"}
    )

    healthy = wait_for(gw, lambda r: r.json()["summary"]["healthy"] == 2)
    assert healthy.status_code == 200
    body = healthy.json()
    assert body["status"] == "healthy"
    assert body["summary"] == {"total": 2, "available": 2, "healthy": 2, "degraded": 0, "unavailable": 0, "unknown": 0}
    assert body["workers"]["one"]["status"] == "healthy" and body["workers"]["one"]["last_check"]
    assert body["uptime"] >= 0 and body["timestamp"].endswith("Z")

    one.stop()
    degraded = wait_for(gw, lambda r: r.json()["status"] == "degraded")
    assert degraded.status_code == 200
    body = degraded.json()
    assert body["workers"]["one"]["status"] == "unavailable" and body["workers"]["one"]["error"].startswith("connect")
    assert body["summary"]["available"] == 1 and body["summary"]["unavailable"] == 1

    two.stop()
    unhealthy = wait_for(gw, lambda r: r.json()["status"] == "unhealthy")
    assert unhealthy.status_code == 503
    assert unhealthy.json()["summary"]["available"] == 0


def test_dispatch_prefers_workers_the_health_check_saw_alive(fake_openai, gateway):
    """A worker whose health probe fails is tried after the healthy ones, whatever its priority."""
    sick = fake_openai(models_status=500)
    fine = fake_openai()
    gw = gateway(worker_toml("sick", sick.base_url, priority=1) + worker_toml("fine", fine.base_url, priority=5),
                 env={"HEALTH_CHECK_INTERVAL": "0.2"})  # fmt: skip
    wait_for(gw, lambda r: r.json()["workers"]["sick"]["status"] == "unavailable")

    response = requests.post(gw.url + "/api/chat", json={"messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert response.headers["X-Cortex-Worker"] == "fine" and response.headers["X-Cortex-Attempts"] == "1"
    assert sick.chat_requests == []

    providers = requests.get(gw.url + "/api/providers", timeout=5).json()
    assert [p["name"] for p in providers["providers"]] == ["sick", "fine"]
    assert providers["healthy_count"] == 1 and providers["total_count"] == 2


def test_providers_lists_workers_and_never_a_key(fake_openai, gateway):
    upstream = fake_openai(models=("fake-model", "other-model"))
    secret = "sk-live-SECRET-do-not-leak-123456"
    gw = gateway(worker_toml("keyed", upstream.base_url, keys=[secret, "sk-second-SECRET-654321"]),
                 env={"HEALTH_CHECK_INTERVAL": "0.2"})  # fmt: skip
    wait_for(gw, lambda r: r.json()["summary"]["healthy"] == 1)

    response = requests.get(gw.url + "/api/providers", timeout=5)
    assert response.status_code == 200
    body = response.json()
    (worker,) = body["providers"]
    assert worker["name"] == "keyed" and worker["type"] == "openai_compat" and worker["status"] == "healthy"
    assert worker["keys"] == 2 and worker["priority"] == 10
    assert worker["models"] == ["fake-model", "other-model"]
    assert "streaming" in worker["capabilities"] and worker["demo"] is False
    assert body["default_strategy"] == "priority" and body["total_count"] == 1 and body["healthy_count"] == 1
    for path in ("/api/providers", "/api/health"):
        text = requests.get(gw.url + path, timeout=5).text
        assert "SECRET" not in text
    assert "SECRET" not in gw.log()


def test_a_hung_health_probe_is_bounded_and_never_blocks_the_endpoint(fake_openai, gateway):
    stuck = fake_openai(models_hang=True)
    fine = fake_openai()
    gw = gateway(worker_toml("stuck", stuck.base_url) + worker_toml("fine", fine.base_url),
                 env={"HEALTH_CHECK_INTERVAL": "0.3", "HEALTH_CHECK_TIMEOUT": "0.5"})  # fmt: skip
    # While the stuck probe hangs (30 s at the fake), /api/health answers from the last snapshot.
    for _ in range(5):
        assert requests.get(gw.url + "/api/health", timeout=2).status_code == 200
    body = wait_for(gw, lambda r: r.json()["workers"]["stuck"]["status"] == "unavailable").json()
    assert body["workers"]["stuck"]["error"] == "timeout: no answer within 0.5s"
    assert body["workers"]["fine"]["status"] == "healthy"
    # the abandoned probe's connection was closed, not left hanging at the upstream
    assert stuck.hung and stuck.hung[0].closed_by_peer.wait(timeout=5)
