"""Client rate limits through Flask's test client (memory storage): which routes count, who is
counted as whom, the 429 in both shapes, the X-RateLimit-* headers, X-Forwarded-For trust.
(Limits shared between processes and gateways, and the openai SDK, are in tests/live.)"""

from __future__ import annotations

import time

import pytest

from app.limiting import client_key

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
V1 = {**CHAT, "model": "auto"}
CLIENTS = """
[[clients]]
name = "alice"
key = "sk-alice-0001"
rate_limit = "3/minute"

[[clients]]
name = "bob"
key = "sk-bob-00002"
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def statuses(client, n: int, path: str = "/api/chat/complete", **kw) -> list[int]:  # type: ignore[no-untyped-def]
    body = V1 if path.startswith("/v1/chat") else CHAT
    return [(client.get(path, **kw) if path == "/v1/models" else client.post(path, json=body, **kw)).status_code
            for _ in range(n)]  # fmt: skip


def test_the_limit_is_one_budget_over_the_chat_routes_and_models(make_client):
    client = make_client(env={"RATE_LIMIT": "4/minute"})
    assert client.post("/api/chat", json=CHAT).status_code == 200
    assert client.post("/api/chat/complete", json=CHAT).status_code == 200
    assert client.post("/v1/chat/completions", json=V1).status_code == 200
    assert client.get("/v1/models").status_code == 200
    for path in ("/api/chat", "/api/chat/complete", "/v1/chat/completions", "/v1/models"):
        assert statuses(client, 1, path) == [429], path


def test_exempt_routes_and_preflights_are_never_counted(make_client):
    client = make_client(env={"RATE_LIMIT": "1/minute", "CORS_ORIGINS": "*"})
    for _ in range(3):
        assert client.get("/api/health").status_code in (200, 503)
        assert client.get("/api/providers").status_code == 200
        assert client.get("/").status_code == 200
        with client.get("/static/chat.js") as static:
            assert static.status_code == 200
        preflight = client.options(
            "/v1/chat/completions", headers={"Origin": "https://x.example", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 200 and "X-RateLimit-Limit" not in preflight.headers
    health = client.get("/api/health")
    assert "X-RateLimit-Limit" not in health.headers
    assert statuses(client, 2) == [200, 429]


def test_429_native_shape_with_retry_after_and_headers(make_client):
    client = make_client(env={"RATE_LIMIT": "2/minute;100/hour"})
    ok = client.post("/api/chat/complete", json=CHAT)
    assert ok.headers["X-RateLimit-Limit"] == "2" and ok.headers["X-RateLimit-Remaining"] == "1"
    assert 0 < int(ok.headers["X-RateLimit-Reset"]) - time.time() <= 61
    assert "Retry-After" not in ok.headers
    streamed = client.post("/api/chat", json=CHAT)
    assert streamed.status_code == 200 and streamed.headers["X-RateLimit-Remaining"] == "0"
    limited = client.post("/api/chat/complete", json=CHAT)
    assert limited.status_code == 429
    assert limited.mimetype == "application/json"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Limit"] == "2" and limited.headers["X-RateLimit-Remaining"] == "0"
    body = limited.get_json()
    assert body["error"] == "Rate limit exceeded" and "2 per 1 minute" in body["details"]
    assert set(body) == {"error", "details", "timestamp"}


def test_429_openai_shape_under_v1(make_client):
    client = make_client(env={"RATE_LIMIT": "1/minute"})
    assert client.post("/v1/chat/completions", json=V1).status_code == 200
    limited = client.post("/v1/chat/completions", json=V1)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    error = limited.get_json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}


def test_no_limit_configured_means_no_headers(make_client):
    client = make_client()
    response = client.post("/api/chat/complete", json=CHAT)
    assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
    assert statuses(client, 5) == [200] * 5


def test_clients_have_their_own_buckets_and_limits(make_client):
    client = make_client(env={"RATE_LIMIT": "2/minute"}, toml=CLIENTS)
    # alice's own 3/minute replaces RATE_LIMIT; bob has RATE_LIMIT; neither uses the other's budget
    assert statuses(client, 4, headers=bearer("sk-alice-0001")) == [200, 200, 200, 429]
    assert statuses(client, 3, headers=bearer("sk-bob-00002")) == [200, 200, 429]
    alice = client.post("/api/chat/complete", json=CHAT, headers=bearer("sk-alice-0001"))
    assert alice.headers["X-RateLimit-Limit"] == "3"
    # wrong keys are counted by IP (then refused), in one bucket whatever the key
    wrong = [client.post("/api/chat/complete", json=CHAT, headers=bearer(f"sk-wrong-{i:04}")) for i in range(3)]
    assert [r.status_code for r in wrong] == [401, 401, 429]
    assert wrong[0].headers["X-RateLimit-Limit"] == "2"
    # ...and the IP's budget is not a client's
    assert statuses(client, 1, headers=bearer("sk-bob-00002")) == [429]


def test_a_client_limit_applies_even_without_rate_limit(make_client):
    client = make_client(toml=CLIENTS)
    assert statuses(client, 4, headers=bearer("sk-alice-0001")) == [200, 200, 200, 429]
    assert statuses(client, 5, headers=bearer("sk-bob-00002")) == [200] * 5


def test_anonymous_requests_are_bucketed_by_ip(make_client):
    client = make_client(env={"RATE_LIMIT": "2/minute"})
    one = {"environ_base": {"REMOTE_ADDR": "10.0.0.1"}}
    two = {"environ_base": {"REMOTE_ADDR": "10.0.0.2"}}
    assert statuses(client, 3, **one) == [200, 200, 429]
    assert statuses(client, 2, **two) == [200, 200]


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(make_client):
    spoofing = make_client(env={"RATE_LIMIT": "2/minute"})
    forged = [spoofing.post("/api/chat/complete", json=CHAT, headers={"X-Forwarded-For": f"203.0.113.{i}"})
              for i in range(3)]  # fmt: skip
    assert [r.status_code for r in forged] == [200, 200, 429]

    proxied = make_client(env={"RATE_LIMIT": "2/minute", "TRUSTED_PROXIES": "1"})
    via = {"X-Forwarded-For": "198.51.100.7"}
    assert statuses(proxied, 3, headers=via) == [200, 200, 429]
    assert statuses(proxied, 2, headers={"X-Forwarded-For": "198.51.100.8"}) == [200, 200]
    # one trusted proxy: only the last address counts, a client's own prefix changes nothing
    assert statuses(proxied, 1, headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.7"}) == [429]


@pytest.mark.parametrize(
    ("auth", "expected"), [(None, "ip:10.1.2.3"), ("sk-alice-0001", "client:alice"), ("sk-nope-0000", "ip:10.1.2.3")]
)
def test_client_key(make_client, auth, expected):
    app = make_client(toml=CLIENTS).application
    headers = bearer(auth) if auth else {}
    with app.test_request_context("/api/chat", headers=headers, environ_base={"REMOTE_ADDR": "10.1.2.3"}):
        identify = next(f for f in app.before_request_funcs[None] if f.__name__ == "identify_client")
        identify()
        assert client_key() == expected
