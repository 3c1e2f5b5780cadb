"""Every bad input gets a clear JSON error with the right status, never a 500."""

from __future__ import annotations

import json

import pytest

GOOD = [{"role": "user", "content": "hi"}]


def assert_error(response, status: int, field: str | None = None) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= {"error", "details", "timestamp"}
    assert isinstance(body["error"], str) and body["error"] and isinstance(body["details"], str) and body["details"]
    assert "Traceback" not in response.get_data(as_text=True)
    if field is not None:
        assert body["field"] == field
        assert body["details"].startswith(field + ":")
    return body


BAD_BODIES = [
    ({}, "messages"),
    ({"messages": None}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": {"role": "user", "content": "hi"}}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}, "messages[1].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content"),
    ({"messages": GOOD, "temperature": "hot"}, "temperature"),
    ({"messages": GOOD, "temperature": True}, "temperature"),
    ({"messages": GOOD, "temperature": -0.1}, "temperature"),
    ({"messages": GOOD, "temperature": 2.01}, "temperature"),
    ({"messages": GOOD, "max_tokens": 0}, "max_tokens"),
    ({"messages": GOOD, "max_tokens": -5}, "max_tokens"),
    ({"messages": GOOD, "max_tokens": 1.5}, "max_tokens"),
    ({"messages": GOOD, "max_tokens": "10"}, "max_tokens"),
    ({"messages": GOOD, "max_tokens": False}, "max_tokens"),
    ({"messages": GOOD, "model": 7}, "model"),
    ({"messages": GOOD, "model": ""}, "model"),
    ({"messages": GOOD, "provider": ["demo"]}, "provider"),
    ({"messages": GOOD, "provider": "demo", "model": "a\r\nX-Injected: 1"}, "model"),
    ({"messages": GOOD, "provider": "demo", "model": "\u6a21\u578b"}, "model"),
    ({"messages": GOOD, "provider": "de\u0000mo"}, "provider"),
    ({"messages": GOOD, "model": "m" * 257}, "model"),
]


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/complete"])
@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_invalid_fields_are_400_naming_the_field(client, path, body, field):
    assert_error(client.post(path, json=body), 400, field)


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/complete"])
@pytest.mark.parametrize(
    "raw", [b"", b"   ", b"{", b"not json", b'{"messages": [}', b"NaN", b'{"temperature": Infinity}', b"\xff\xfe{}"]
)
def test_bodies_that_are_not_json_are_400(client, path, raw):
    body = assert_error(client.post(path, data=raw, content_type="application/json"), 400)
    assert body["error"] == "Body is not valid JSON"


@pytest.mark.parametrize("raw", [b"[]", b'"hi"', b"42", b"null"])
def test_json_that_is_not_an_object_is_400(client, raw):
    assert_error(client.post("/api/chat", data=raw, content_type="application/json"), 400, "body")


def test_deeply_nested_json_is_400_not_500(client):
    raw = b"[" * 100_000 + b"]" * 100_000
    assert_error(client.post("/api/chat", data=raw, content_type="application/json"), 400)


def test_wrong_content_type_is_415(client):
    body = assert_error(client.post("/api/chat", data=json.dumps({"messages": GOOD}), content_type="text/plain"), 415)
    assert "application/json" in body["details"]


def test_body_over_the_limit_is_413(make_client):
    client = make_client({"MAX_BODY_BYTES": "2048"})
    big = {"messages": [{"role": "user", "content": "x" * 4096}]}
    assert_error(client.post("/api/chat", json=big), 413)


def test_unknown_route_and_wrong_method_are_json(client):
    assert_error(client.get("/api/nope"), 404)
    body = assert_error(client.get("/api/chat"), 405)
    assert "POST" in body["details"]
    assert_error(client.delete("/api/health"), 405)


def test_unknown_provider_is_404_listing_the_configured_ones(client):
    body = assert_error(client.post("/api/chat", json={"messages": GOOD, "provider": "nobody"}), 404)
    assert "nobody" in body["details"] and "demo" in body["details"]


def test_model_nobody_serves_is_404(client):
    body = assert_error(client.post("/api/chat/complete", json={"messages": GOOD, "model": "gpt-17"}), 404)
    assert "gpt-17" in body["details"]


def test_no_workers_at_all_is_503_everywhere(make_client):
    client = make_client({"DEMO_PROVIDER": "off"})
    health = client.get("/api/health")
    assert health.status_code == 503 and health.get_json()["status"] == "no_workers"
    assert health.get_json()["summary"]["total"] == 0
    for path in ("/api/chat", "/api/chat/complete"):
        response = client.post(path, json={"messages": GOOD})
        body = assert_error(response, 503)
        assert body["error"] == "No workers available"
        assert response.headers["Retry-After"] == "5"


def test_unknown_fields_are_ignored(client):
    response = client.post("/api/chat/complete", json={"messages": GOOD, "stream": True, "future_option": {"x": 1}})
    assert response.status_code == 200
