"""The real HTTP adapter shell speaking the Anthropic protocol to the fake Anthropic upstream."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from providers import anthropic
from providers.base import ChatParams, Endpoint, Message, Timeouts
from providers.errors import ErrorKind, UpstreamError
from providers.events import Finish, StreamFailure, TextDelta, Usage
from providers.http import HttpAdapter
from providers.transport import Transport
from tests.fakes.anthropic_server import (
    API_ERROR,
    CREDIT_TOO_LOW,
    DEFAULT_MODEL,
    OVERLOADED,
    PERMISSION,
    PROMPT_TOO_LONG,
    REQUEST_TOO_LARGE,
    Error,
    Reply,
    refusal,
)
from tests.fakes.http_server import eventually

KEY = "sk-ant-api03-secret-key-0123456789"
PARAMS = ChatParams((Message("system", "be nice"), Message("user", "hello world")), DEFAULT_MODEL)
TIMEOUTS = Timeouts(connect=2, first_token=5, idle=5, total=10)


@pytest.fixture
def adapter_for() -> Iterator[Callable[..., HttpAdapter]]:
    transport = Transport(pool_size=4)

    def make(url: str, **endpoint: Any) -> HttpAdapter:
        return HttpAdapter(Endpoint(url, **endpoint), anthropic.PROTOCOL, anthropic.INFO, transport)

    yield make
    transport.close()


def test_streamed_chat_sends_the_documented_request_and_reads_text_finish_usage(fake_anthropic, adapter_for):
    upstream = fake_anthropic(valid_keys={KEY})
    adapter = adapter_for(upstream.base_url, extra_headers={"anthropic-beta": "fake-beta-2025-01-01"})
    events = list(adapter.stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events == [TextDelta("Hello"), TextDelta(" from"), TextDelta(" the"), TextDelta(" fake"), TextDelta("!"),
                      Finish("stop"), Usage(4, 5)]  # fmt: skip
    [request] = upstream.chat_requests
    assert request.method == "POST" and request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY and request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["anthropic-beta"] == "fake-beta-2025-01-01"
    assert request.headers["content-type"] == "application/json" and "authorization" not in request.headers
    assert request.json() == {"model": DEFAULT_MODEL, "max_tokens": anthropic.DEFAULT_MAX_TOKENS, "stream": True,
                              "system": "be nice", "messages": [{"role": "user", "content": "hello world"}]}  # fmt: skip
    assert eventually(lambda: upstream.streams[0].finished)


def test_non_streaming_chat(fake_anthropic, adapter_for):
    upstream = fake_anthropic(chat=Reply(chunks=["Bonjour", " à toi 👋"], stop_reason="max_tokens"))
    events = list(adapter_for(upstream.base_url, stream=False).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events == [TextDelta("Bonjour à toi 👋"), Finish("length"), Usage(4, 2)]
    body = upstream.chat_requests[0].json()
    assert isinstance(body, dict) and body["stream"] is False


def test_utf8_characters_split_across_network_writes(fake_anthropic, adapter_for):
    chunks = ["héllo", " wörld", " 日本語", " 👋"]
    upstream = fake_anthropic(chat=Reply(chunks=chunks, split_utf8=True))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta(c) for c in chunks]
    assert events[-2:] == [Finish("stop"), Usage(4, 4)]


def test_connection_is_reused_across_models_and_chats(fake_anthropic, adapter_for):
    upstream = fake_anthropic(models=("claude-haiku-4-5", "claude-sonnet-4-5"))
    adapter = adapter_for(upstream.base_url)
    assert adapter.list_models(KEY, 2) == ("claude-haiku-4-5", "claude-sonnet-4-5")
    for _ in range(2):
        assert list(adapter.stream_chat(PARAMS, KEY, TIMEOUTS))[-1] == Usage(4, 5)
    assert upstream.server.open_connections == 1 and len(upstream.requests) == 3
    assert upstream.requests[0].path == "/v1/models?limit=1000"
    assert upstream.requests[0].headers["x-api-key"] == KEY
    assert all(KEY not in r.path for r in upstream.requests)


def _http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("reply", "kind", "status", "code"),
    [
        (Error(403, PERMISSION), ErrorKind.AUTH, 403, "permission_error"),
        (Error(400, CREDIT_TOO_LOW), ErrorKind.QUOTA, 400, "invalid_request_error"),
        (Error(400, PROMPT_TOO_LONG), ErrorKind.BAD_REQUEST, 400, "invalid_request_error"),
        (Error(413, REQUEST_TOO_LARGE), ErrorKind.BAD_REQUEST, 413, "request_too_large"),
        (Error(500, API_ERROR), ErrorKind.SERVER, 500, "api_error"),
        (Error(529, OVERLOADED), ErrorKind.SERVER, 529, "overloaded_error"),
        (Error(503, b"upstream connect error or disconnect/reset before headers", []), ErrorKind.SERVER, 503, None),
    ],
)
def test_http_errors_are_classified(fake_anthropic, adapter_for, reply, kind, status, code):
    upstream = fake_anthropic()
    upstream.queue(reply)
    with pytest.raises(UpstreamError) as info:
        adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS)
    assert info.value.kind is kind and info.value.status == status and info.value.code == code
    assert info.value.retryable is (kind is not ErrorKind.BAD_REQUEST)
    # the fake's next answer still works on the same adapter
    assert list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))[-1] == Usage(4, 5)


def test_bad_key_unknown_model_and_rate_limits(fake_anthropic, adapter_for):
    upstream = fake_anthropic(valid_keys={KEY, "sk-slow-1", "sk-slow-2"})
    adapter = adapter_for(upstream.base_url)
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(PARAMS, "sk-ant-wrong-key-999999", TIMEOUTS)
    assert info.value.kind is ErrorKind.AUTH and info.value.status == 401 and "invalid x-api-key" in info.value.message
    with pytest.raises(UpstreamError) as info:
        adapter.list_models("sk-ant-wrong-key-999999", 2)
    assert info.value.kind is ErrorKind.AUTH
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(ChatParams((Message("user", "hi"),), "claude-nonexistent"), KEY, TIMEOUTS)
    assert info.value.kind is ErrorKind.NOT_FOUND and "model: claude-nonexistent" in info.value.message
    upstream.rate_limited_keys = {"sk-slow-1": "7", "sk-slow-2": _http_date(30)}
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(PARAMS, "sk-slow-1", TIMEOUTS)
    assert info.value.kind is ErrorKind.RATE_LIMITED and info.value.status == 429 and info.value.retry_after == 7.0
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(PARAMS, "sk-slow-2", TIMEOUTS)
    assert info.value.kind is ErrorKind.RATE_LIMITED and 25 <= (info.value.retry_after or 0) <= 30


def test_echoed_key_is_scrubbed_from_errors(fake_anthropic, adapter_for):
    upstream = fake_anthropic()
    upstream.queue(
        Error(401, f'{{"type":"error","error":{{"type":"authentication_error","message":"bad key {KEY}"}}}}'.encode())
    )
    with pytest.raises(UpstreamError) as info:
        adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS)
    assert KEY not in info.value.message and info.value.kind is ErrorKind.AUTH


def test_mid_stream_cut_is_interrupted(fake_anthropic, adapter_for):
    upstream = fake_anthropic(chat=Reply(chunks=["a", "b", "c"], cut_after=2))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events[:2] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.INTERRUPTED


def test_in_band_error_mid_stream(fake_anthropic, adapter_for):
    upstream = fake_anthropic(chat=Reply(chunks=["a", "b", "c"], error_after=1))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events[0] == TextDelta("a") and len(events) == 2
    assert isinstance(events[-1], StreamFailure)
    assert events[-1].error.kind is ErrorKind.SERVER and events[-1].error.code == "overloaded_error"


@pytest.mark.parametrize("stream", [True, False])
def test_refusal_without_text_is_blocked(fake_anthropic, adapter_for, stream):
    upstream = fake_anthropic(chat=refusal())
    events = list(adapter_for(upstream.base_url, stream=stream).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert len(events) == 1 and isinstance(events[0], StreamFailure)
    assert events[0].error.kind is ErrorKind.BLOCKED and "cyber" in events[0].error.message


def test_missing_version_header_is_a_bad_request_the_fake_enforces(fake_anthropic):
    """The fake refuses requests without `anthropic-version`, as the API does."""
    upstream = fake_anthropic()
    transport = Transport(pool_size=1)
    try:
        call = anthropic.build_models(Endpoint(upstream.base_url), KEY)
        headers = {k: v for k, v in call.headers.items() if k != "anthropic-version"}
        response = transport.send(
            type(call)(call.method, call.url, headers), connect_timeout=2, read_timeout=2, stream=True
        )
        try:
            error = anthropic.parse_error(
                response.status_code, response.headers, Transport.read_body(response), time.time()
            )
        finally:
            response.close()
    finally:
        transport.close()
    assert error.kind is ErrorKind.BAD_REQUEST and "anthropic-version" in error.message
