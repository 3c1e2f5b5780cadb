"""/api/health and /api/providers from cached state: key cooldowns make a worker unavailable
with the time its first key returns, and no key ever shows."""

from __future__ import annotations

import time

TOML = """
[[workers]]
name = "keyed"
base_url = "http://127.0.0.1:9/v1"
api_keys = ["sk-one-SECRET-1111", "sk-two-SECRET-2222"]
models = ["m"]
"""


def resting_client(make_client, demo: str, *cooldowns: float):  # type: ignore[no-untyped-def]
    """A client whose 'keyed' worker has each key cooling down for the given seconds."""
    client = make_client({"DEMO_PROVIDER": demo}, TOML)
    ring = client.application.extensions["cortex"].pool.get("keyed").keys
    now = time.time()
    for index, seconds in enumerate(cooldowns):
        ring.cool_down(index, now, seconds)
    return client, ring


def test_worker_with_every_key_resting_is_unavailable_until_a_key_returns(make_client):
    client, ring = resting_client(make_client, "on", 120, 30)

    health = client.get("/api/health")
    assert health.status_code == 200
    body = health.get_json()
    keyed = body["workers"]["keyed"]
    assert keyed["status"] == "unavailable" and keyed["error"] == "every API key is cooling down or disabled"
    assert keyed["available_at"] is not None and body["status"] == "degraded"  # the demo still answers
    providers = client.get("/api/providers").get_json()["providers"]
    assert [p["name"] for p in providers] == ["keyed", "demo"]
    assert providers[0]["status"] == "unavailable" and providers[0]["available_at"] == keyed["available_at"]

    ring.disable(0)
    ring.disable(1)
    assert client.get("/api/health").get_json()["workers"]["keyed"]["available_at"] is None
    for path in ("/api/health", "/api/providers"):
        assert "SECRET" not in client.get(path).get_data(as_text=True)


def test_chat_skips_a_resting_worker_and_says_when_to_retry(make_client):
    client, _ = resting_client(make_client, "off", 40, 90)
    response = client.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429  # every provider is rate limiting: a 429, not "broken"
    assert 39 <= int(response.headers["Retry-After"]) <= 41
    assert response.get_json()["attempts"] == [
        {"worker": "keyed", "key": None, "kind": "keys_unavailable", "status": None,
         "message": "every API key is cooling down or disabled"}
    ]  # fmt: skip


def test_health_names_the_instance_and_where_shared_state_lives(make_client):
    local = make_client({"INSTANCE_ID": "gw-eu-1"}).get("/api/health").get_json()
    assert local["instance"] == "gw-eu-1"
    assert local["shared_state"] == {"backend": "local", "reachable": True}
    # Configured but not started (create_app connects to nothing): not reachable yet, and the
    # status code is still the workers' (the demo answers).
    response = make_client({"REDIS_URL": "redis://:hunter2secret@127.0.0.1:9/0"}).get("/api/health")
    assert response.status_code == 200 and response.get_json()["status"] == "healthy"
    assert response.get_json()["shared_state"] == {"backend": "redis", "reachable": False}
    assert ":" in response.get_json()["instance"]  # hostname:port by default
    assert "hunter2secret" not in response.get_data(as_text=True)
