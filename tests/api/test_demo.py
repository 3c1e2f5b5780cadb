"""The embedded default: with no provider configured, the demo provider answers."""

from __future__ import annotations

from providers.base import ChatParams, Message
from providers.demo import demo_reply

GOOD = [{"role": "user", "content": "hello there"}]


def expected_reply(text: str = "hello there") -> str:
    return demo_reply(ChatParams((Message("user", text),), "cortex-demo"))


def test_demo_streams_its_deterministic_reply(client):
    response = client.post("/api/chat", json={"messages": GOOD})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Cortex-Worker"] == "demo"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    assert response.get_data(as_text=True) == expected_reply()
    assert "\u201chello there\u201d" in expected_reply()


def test_demo_complete_reports_provider_model_and_usage(client):
    body = client.post("/api/chat/complete", json={"messages": GOOD, "max_tokens": 3}).get_json()
    assert body["response"] == "Hello from Cortex! "
    assert body["provider"] == "demo" and body["model"] == "cortex-demo"
    assert body["finish_reason"] == "length"
    assert body["usage"] == {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}


def test_providers_labels_the_demo(client):
    body = client.get("/api/providers").get_json()
    (demo,) = body["providers"]
    assert demo["name"] == "demo" and demo["type"] == "demo" and demo["demo"] is True
    assert demo["models"] == ["cortex-demo"] and demo["keys"] == 0
    assert body["default_strategy"] == "priority"


def test_demo_steps_aside_when_a_real_provider_is_configured(make_client):
    client = make_client({"OPENAI_COMPAT_URLS": "http://127.0.0.1:9/v1"})
    names = [p["name"] for p in client.get("/api/providers").get_json()["providers"]]
    assert names == ["compat-1"]
    client = make_client({"OPENAI_COMPAT_URLS": "http://127.0.0.1:9/v1", "DEMO_PROVIDER": "on"})
    names = [p["name"] for p in client.get("/api/providers").get_json()["providers"]]
    assert names == ["compat-1", "demo"]


def test_chat_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and b"Cortex" in page.data
    # Nothing from elsewhere: the browser enforces it.
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name, needle in [
        ("chat.js", b"/api/chat"),
        ("sse.js", b"class SSEDecoder"),
        ("chat.css", b"prefers-color-scheme"),
    ]:
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and needle in asset.data
        asset.close()
