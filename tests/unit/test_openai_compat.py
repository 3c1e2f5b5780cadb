"""The OpenAI-compatible adapter's pure parts: request building, stream parsing, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers import openai_compat as oa
from providers.base import ChatParams, Endpoint, Message
from providers.errors import ErrorKind
from providers.events import Finish, StreamFailure, TextDelta, Usage

DATA = Path(__file__).resolve().parent.parent / "data"
NOW = 1_764_000_000.0


def parse(raw: bytes, chunk: int | None = None) -> list:  # type: ignore[type-arg]
    parser = oa.ChunkParser()
    events = []
    if chunk is None:
        events += parser.feed(raw)
    else:
        for i in range(0, len(raw), chunk):
            events += parser.feed(raw[i : i + chunk])
    return events + parser.finish()


def text_of(events: list) -> str:  # type: ignore[type-arg]
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_openai_recording_gives_text_finish_and_usage_at_any_chunking():
    raw = (DATA / "openai_stream.sse").read_bytes()
    for size in (None, 1, 2, 3, 7, 64):
        events = parse(raw, size)
        assert text_of(events) == "Bonjour à toi 👋 — ça va ?"
        assert [e for e in events if not isinstance(e, TextDelta)] == [Finish("stop"), Usage(12, 6)]


def test_groq_usage_from_x_groq():
    events = parse((DATA / "groq_stream.sse").read_bytes())
    assert text_of(events) == "Hi there!"
    assert Usage(40, 3) in events and Finish("stop") in events


def test_stream_ending_without_done_or_finish_is_interrupted():
    raw = (DATA / "openai_stream.sse").read_bytes()
    cut = raw[: raw.index(b'{"content":" toi')]
    events = parse(cut)
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.INTERRUPTED
    assert text_of(events) == "Bonjour à"


def test_finish_without_done_is_complete():
    raw = (DATA / "groq_stream.sse").read_bytes().replace(b"data: [DONE]\n\n", b"")
    events = parse(raw)
    assert not any(isinstance(e, StreamFailure) for e in events) and Usage(40, 3) in events


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n', ErrorKind.SERVER),
        (
            b'data: {"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}\n\n',
            ErrorKind.RATE_LIMITED,
        ),
        (b'event: error\ndata: {"error":{"message":"boom"}}\n\n', ErrorKind.SERVER),
        (b"data: {not json}\n\n", ErrorKind.MALFORMED_STREAM),
        (b"data: [1, 2]\n\n", ErrorKind.MALFORMED_STREAM),
    ],
)
def test_in_band_errors_and_garbage_become_a_final_failure(raw, kind):
    events = parse(
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        + raw
        + b'data: {"choices":[{"index":0,"delta":{"content":"ignored"}}]}\n\n'
    )
    assert events[0] == TextDelta("a")
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is kind
    assert "ignored" not in text_of(events)


def test_other_choices_and_null_content_are_skipped():
    raw = (
        b'data: {"choices":[{"index":1,"delta":{"content":"B"}},{"index":0,"delta":{"content":"A"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":null,"tool_calls":[]}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
    )
    assert parse(raw) == [TextDelta("A"), Finish("length")]


def test_build_chat_request():
    endpoint = Endpoint("http://h:1/v1/", {"X-Extra": "1"})
    params = ChatParams((Message("system", "be brief"), Message("user", "hi")), "m", 0.5, 10, None, ("END",))
    call = oa.build_chat(endpoint, params, "sk-key")
    assert call.method == "POST" and call.url == "http://h:1/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer sk-key" and call.headers["X-Extra"] == "1"
    assert call.headers["Accept"] == "text/event-stream"
    assert json.loads(call.body) == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "max_tokens": 10,
        "stop": ["END"],
    }
    assert "sk-key" not in repr(call)
    keyless = oa.build_chat(Endpoint("http://h:1/v1", stream_usage=False), params, None)
    assert "Authorization" not in keyless.headers and "stream_options" not in json.loads(keyless.body)


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after"),
    [
        (
            429,
            {"retry-after": "7"},
            b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}',
            ErrorKind.RATE_LIMITED,
            7.0,
        ),
        (429, {"Retry-After": "Wed, 25 Nov 2026 16:00:30 GMT"}, b"{}", ErrorKind.RATE_LIMITED, 30.0),
        (429, {"retry-after-ms": "1500", "retry-after": "2"}, b"", ErrorKind.RATE_LIMITED, 1.5),
        (
            429,
            {},
            b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}',
            ErrorKind.QUOTA,
            None,
        ),
        (
            401,
            {},
            b'{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}',
            ErrorKind.AUTH,
            None,
        ),
        (403, {}, b"Forbidden", ErrorKind.AUTH, None),
        (
            404,
            {},
            b'{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","code":"model_not_found"}}',
            ErrorKind.NOT_FOUND,
            None,
        ),
        (
            400,
            {},
            b'{"error":{"message":"model decommissioned","type":"invalid_request_error","code":"model_decommissioned"}}',
            ErrorKind.NOT_FOUND,
            None,
        ),
        (
            400,
            {},
            b'{"error":{"message":"max_tokens is too large","type":"invalid_request_error","code":null}}',
            ErrorKind.BAD_REQUEST,
            None,
        ),
        (500, {}, b"<html>oops</html>", ErrorKind.SERVER, None),
        (503, {}, b"", ErrorKind.SERVER, None),
    ],
)
def test_parse_error(status, headers, body, kind, retry_after):
    now = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC).timestamp()
    error = oa.parse_error(status, headers, body, now)
    assert error.kind is kind and error.status == status
    assert error.retry_after == retry_after
    assert error.message and "<html>" not in error.message and error.message != "{}"


def test_parse_models():
    body = b'{"object":"list","data":[{"id":"a","object":"model"},{"id":"b","object":"model"},{"object":"model"}]}'
    assert oa.parse_models(body) == ("a", "b")
    with pytest.raises(Exception) as info:
        oa.parse_models(b"<html>")
    assert info.value.kind is ErrorKind.MALFORMED_STREAM


def test_parse_completion_for_servers_that_ignore_stream_true():
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()  # fmt: skip
    assert oa.parse_completion(body) == [TextDelta("whole"), Finish("stop"), Usage(1, 1)]


def test_non_streaming_request_when_the_worker_streams_off():
    endpoint = Endpoint("http://h/v1", stream=False)
    call = oa.build_chat(endpoint, ChatParams((Message("user", "hi"),), "m"), None)
    body = json.loads(call.body or b"")
    assert body["stream"] is False and "stream_options" not in body
    assert call.headers["Accept"] == "application/json"


def test_token_counts_are_ints_never_bools():
    from providers.wire import token_count

    assert token_count(12) == 12 and token_count(0) == 0
    assert token_count(True) is None and token_count(1.0) is None and token_count("3") is None
