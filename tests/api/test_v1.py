"""The OpenAI-compatible surface through Flask's test client: shapes and error bodies.
(The real openai SDK against the gateway under gunicorn is in tests/live/test_openai_sdk.py.)"""

from __future__ import annotations

import json

import pytest

GOOD = [{"role": "user", "content": "hi"}]


def assert_openai_error(response, status: int, param: str | None = None, code: str | None = None) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def test_models_list_in_openai_shape_with_aliases(make_client):
    client = make_client(env={"MODEL_ALIASES": "fast=demo/cortex-demo"})
    body = client.get("/v1/models").get_json()
    assert body == {
        "object": "list",
        "data": [
            {"id": "cortex-demo", "object": "model", "created": 0, "owned_by": "demo"},
            {"id": "fast", "object": "model", "created": 0, "owned_by": "cortex-alias"},
        ],
    }


def test_non_streaming_completion(client):
    response = client.post("/v1/chat/completions", json={"model": "cortex-demo", "messages": GOOD, "max_tokens": 3})
    body = response.get_json()
    assert response.status_code == 200 and response.headers["X-Cortex-Worker"] == "demo"
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "cortex-demo"
    assert body["choices"][0]["message"]["content"] == "Hello from Cortex! "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


def test_streaming_completion_ends_with_done(client):
    response = client.post("/v1/chat/completions", json={"model": "auto", "messages": GOOD, "stream": True,
                                                         "stream_options": {"include_usage": True}, "max_tokens": 2})  # fmt: skip
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    raw = response.get_data(as_text=True)
    events = [block[len("data: ") :] for block in raw.split("\n\n") if block]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello from "
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


def test_text_parts_developer_role_and_unknown_parameters_are_accepted(client):
    body = {
        "model": "cortex-demo",
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "two "}, {"type": "text", "text": "parts"}]}],
        "presence_penalty": 0.5, "logit_bias": {}, "seed": 7, "user": "u-1", "top_p": 0.9, "stop": ["\n\n"],
        "max_completion_tokens": 40, "parallel_tool_calls": False,
    }  # fmt: skip
    answer = client.post("/v1/chat/completions", json=body).get_json()
    assert "You said: \u201ctwo parts\u201d" in answer["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"messages": GOOD, "temperature": 3}, "temperature"),
        ({"messages": GOOD, "top_p": 1.5}, "top_p"),
        ({"messages": GOOD, "max_tokens": 0}, "max_tokens"),
        ({"messages": GOOD, "max_completion_tokens": "9"}, "max_completion_tokens"),
        ({"messages": GOOD, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": GOOD, "stream": "yes"}, "stream"),
        ({"messages": GOOD, "n": 2}, "n"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
        ),
    ],
)
def test_bad_requests_are_400_in_openai_shape(client, body, param):
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param, "invalid_request")
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found(client):
    error = assert_openai_error(
        client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": GOOD}), 404, "model", "model_not_found"
    )
    assert "gpt-9" in error["message"]


def test_other_errors_under_v1_keep_openai_shape(client):
    assert_openai_error(client.get("/v1/nothing-here"), 404)
    assert_openai_error(client.get("/v1/chat/completions"), 405)
    assert_openai_error(client.post("/v1/chat/completions", data="hi", content_type="text/plain"), 415)
    assert_openai_error(client.post("/v1/chat/completions", data="{", content_type="application/json"), 400)
    # ...and the native API keeps its own
    assert set(client.get("/api/nothing").get_json()) == {"error", "details", "timestamp"}


def test_no_workers_is_503_with_retry_after(make_client):
    client = make_client(env={"DEMO_PROVIDER": "off"})
    response = client.post("/v1/chat/completions", json={"messages": GOOD})
    assert_openai_error(response, 503, None, "no_workers_available")
    assert response.headers["Retry-After"] == "5"


def test_native_chat_speaks_sse_when_asked(client):
    by_header = client.post("/api/chat", json={"messages": GOOD, "max_tokens": 2},
                            headers={"Accept": "text/event-stream"})  # fmt: skip
    by_body = client.post("/api/chat", json={"messages": GOOD, "max_tokens": 2, "stream_format": "sse"})
    for response in (by_header, by_body):
        assert response.mimetype == "text/event-stream" and response.headers["X-Accel-Buffering"] == "no"
        raw = response.get_data(as_text=True)
        assert raw.startswith(
            'data: {"text":"Hello "}\n\ndata: {"text":"from "}\n\nevent: done\ndata: {"provider":"demo"'
        )
    plain = client.post("/api/chat", json={"messages": GOOD, "max_tokens": 2}, headers={"Accept": "*/*"})
    assert plain.mimetype == "text/plain" and plain.get_data(as_text=True) == "Hello from "
    forced_text = client.post("/api/chat", json={"messages": GOOD, "max_tokens": 2, "stream_format": "text"},
                              headers={"Accept": "text/event-stream"})  # fmt: skip
    assert forced_text.mimetype == "text/plain"
    assert client.post("/api/chat", json={"messages": GOOD, "stream_format": "xml"}).status_code == 400
