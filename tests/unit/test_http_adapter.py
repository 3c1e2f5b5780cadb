"""The HTTP adapter shell against the fake upstream, in-process (no gevent needed)."""

from __future__ import annotations

import pytest

from providers import openai_compat
from providers.base import ChatParams, Endpoint, Message, Timeouts
from providers.errors import ErrorKind, UpstreamError
from providers.events import Finish, StreamFailure, TextDelta, Usage
from providers.http import HttpAdapter, ResponseEvents
from providers.transport import Transport
from tests.fakes.openai_server import Error, Stream, error_body

PARAMS = ChatParams((Message("user", "hello world"),), "fake-model")
TIMEOUTS = Timeouts(connect=2, first_token=5, idle=5, total=10)


@pytest.fixture
def adapter_for():  # type: ignore[no-untyped-def]
    transport = Transport(pool_size=4)

    def make(url: str) -> HttpAdapter:
        return HttpAdapter(Endpoint(url), openai_compat.PROTOCOL, openai_compat.INFO, transport)

    yield make
    transport.close()


def test_stream_models_and_connection_reuse(fake_openai, adapter_for):
    upstream = fake_openai(models=("a", "b"))
    adapter = adapter_for(upstream.base_url)
    assert adapter.list_models(None, 2) == ("a", "b")
    for _ in range(3):
        events = list(adapter.stream_chat(PARAMS, None, TIMEOUTS))
        assert events == [TextDelta("Hello"), TextDelta(" from"), TextDelta(" the"), TextDelta(" fake"),
                          TextDelta("!"), Finish("stop"), Usage(2, 5)]  # fmt: skip
    # one keep-alive connection served the model list and all three streams
    assert upstream.server.open_connections == 1 and len(upstream.requests) == 4


def test_http_errors_raise_classified_and_scrubbed(fake_openai, adapter_for):
    key = "sk-echoed-secret-123456"
    upstream = fake_openai(
        chat=Error(401, error_body(f"Incorrect API key provided: {key}", "invalid_request_error", "invalid_api_key"))
    )
    with pytest.raises(UpstreamError) as info:
        adapter_for(upstream.base_url).stream_chat(PARAMS, key, TIMEOUTS)
    assert info.value.kind is ErrorKind.AUTH and info.value.status == 401
    assert key not in info.value.message and "sk-…3456" in info.value.message
    with pytest.raises(UpstreamError) as models_info:
        adapter_for(fake_openai(valid_keys={"good"}).base_url).list_models("bad", 2)
    assert models_info.value.kind is ErrorKind.AUTH


def test_cut_stream_ends_with_interrupted_failure(fake_openai, adapter_for):
    upstream = fake_openai(chat=Stream(chunks=["a", "b", "c"], cut_after=2))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, None, TIMEOUTS))
    assert events[:2] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.INTERRUPTED


def test_refused_connection_is_connect_error(adapter_for, refused_url):
    with pytest.raises(UpstreamError) as info:
        adapter_for(refused_url).stream_chat(PARAMS, None, TIMEOUTS)
    assert info.value.kind is ErrorKind.CONNECT and "127.0.0.1" not in info.value.message


class _Response:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_closing_an_unstarted_stream_closes_the_response():
    response = _Response()
    ResponseEvents(response, openai_compat.ChunkParser(), None).close()  # type: ignore[arg-type]
    assert response.closed


def test_upstream_cookies_are_never_stored_or_sent_back(fake_openai, adapter_for):
    upstream = fake_openai()
    upstream.queue(Error(500, headers=[("Set-Cookie", "__cf_bm=sticky; Path=/; HttpOnly")]))
    adapter = adapter_for(upstream.base_url)
    with pytest.raises(UpstreamError):
        adapter.stream_chat(PARAMS, None, TIMEOUTS)
    list(adapter.stream_chat(PARAMS, None, TIMEOUTS))
    assert [r.headers.get("cookie") for r in upstream.chat_requests] == [None, None]


def test_environment_proxies_are_honoured_only_when_set():
    assert Transport(environ={}).session.trust_env is False
    with_ca = Transport(environ={"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}).session
    assert with_ca.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert Transport(environ={"HTTPS_PROXY": "http://proxy:3128"}).session.trust_env is True
