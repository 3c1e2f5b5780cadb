"""CORS (CORS_ORIGINS) through Flask's test client: off by default, `*`, exact origins,
preflights that need no key and cost no rate limit, headers on errors, admin left out."""

from __future__ import annotations

import pytest

from app.cors import EXPOSE_HEADERS

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
ORIGIN = "https://app.example"
KEYS = {"CORTEX_API_KEYS": "sk-cortex-alpha-123"}


def preflight(client, path: str = "/v1/chat/completions", origin: str = ORIGIN):  # type: ignore[no-untyped-def]
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    )


def cors_headers(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_no_cors_headers_when_cors_origins_is_unset(make_client):
    client = make_client()
    assert cors_headers(preflight(client)) == {}
    assert cors_headers(client.post("/api/chat/complete", json=CHAT, headers={"Origin": ORIGIN})) == {}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/api/chat/complete"])
def test_preflight_from_an_allowed_origin_needs_no_key_and_is_not_counted(make_client, path):
    client = make_client(env={"CORS_ORIGINS": f"{ORIGIN},https://other.example", "RATE_LIMIT": "1/minute", **KEYS})
    for _ in range(3):
        response = preflight(client, path)
        assert response.status_code in (200, 204)
        headers = cors_headers(response)
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"authorization", "content-type", "x-request-id"}
        assert "Origin" in response.headers.get("Vary", "")
    # the preflights cost nothing: the one real request still fits in 1/minute
    chat = client.post("/api/chat/complete", json=CHAT, headers={"Authorization": "Bearer sk-cortex-alpha-123"})
    assert chat.status_code == 200


def test_a_disallowed_origin_gets_no_allow_origin(make_client):
    client = make_client(env={"CORS_ORIGINS": ORIGIN})
    response = preflight(client, origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response.headers
    simple = client.post("/api/chat/complete", json=CHAT, headers={"Origin": "https://evil.example"})
    assert simple.status_code == 200 and "Access-Control-Allow-Origin" not in simple.headers


def test_star_allows_any_origin_with_a_wildcard(make_client):
    client = make_client(env={"CORS_ORIGINS": "*"})
    response = preflight(client, origin="https://anything.example")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    models = client.get("/v1/models", headers={"Origin": "https://anything.example"})
    assert models.headers["Access-Control-Allow-Origin"] == "*"
    # a request without Origin (not a browser's) gets none
    assert "Access-Control-Allow-Origin" not in client.get("/v1/models").headers


def test_exposed_headers_and_cors_on_401_and_429(make_client):
    client = make_client(env={"CORS_ORIGINS": ORIGIN, "RATE_LIMIT": "1/minute", **KEYS})
    unauthorized = client.post("/v1/chat/completions", json={**CHAT, "model": "auto"}, headers={"Origin": ORIGIN})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip() for h in unauthorized.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == set(EXPOSE_HEADERS)
    limited = client.post("/v1/chat/completions", json={**CHAT, "model": "auto"}, headers={"Origin": ORIGIN})
    assert limited.status_code == 429
    assert limited.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in limited.headers["Access-Control-Expose-Headers"]


def test_only_the_api_is_shared(make_client):
    client = make_client(env={"CORS_ORIGINS": "*"})
    for path in ("/", "/api/admin/workers", "/api/admin"):
        assert "Access-Control-Allow-Origin" not in client.get(path, headers={"Origin": ORIGIN}).headers, path
    for path in ("/api/health", "/api/providers", "/v1/models"):
        assert client.get(path, headers={"Origin": ORIGIN}).headers["Access-Control-Allow-Origin"] == "*", path


def test_the_openai_sdks_browser_headers_pass_the_preflight(make_client):
    client = make_client(env={"CORS_ORIGINS": ORIGIN})
    asked = "authorization, content-type, x-stainless-lang, x-stainless-os, x-stainless-retry-count, openai-project"
    response = client.options(
        "/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked},
    )
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {h.strip() for h in asked.split(",")}
    refused = client.options(
        "/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-evil"},
    )
    assert "x-evil" not in refused.headers.get("Access-Control-Allow-Headers", "").lower()
