"""The real HTTP adapter shell speaking Ollama's protocol to the fake Ollama server, in-process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from providers import ollama
from providers.base import ChatParams, Endpoint, Message, Timeouts
from providers.errors import ErrorKind, UpstreamError
from providers.events import Finish, StreamFailure, TextDelta, Usage
from providers.http import HttpAdapter
from providers.transport import Transport
from tests.fakes.http_server import eventually
from tests.fakes.ollama_server import SERVER_BUSY, Chat, Error, error_body

PARAMS = ChatParams((Message("system", "be brief"), Message("user", "hello world")), "llama3.2", max_tokens=50)
TIMEOUTS = Timeouts(connect=2, first_token=5, idle=5, total=10)
HELLO = [TextDelta("Hello"), TextDelta(" from"), TextDelta(" the"), TextDelta(" fake"), TextDelta("!")]


@pytest.fixture
def adapter_for() -> Iterator[Callable[..., HttpAdapter]]:
    transport = Transport(pool_size=4)

    def make(url: str, **endpoint: Any) -> HttpAdapter:
        return HttpAdapter(Endpoint(url, **endpoint), ollama.PROTOCOL, ollama.INFO, transport)

    yield make
    transport.close()


def chat(adapter: HttpAdapter, key: str | None = None, params: ChatParams = PARAMS) -> list[Any]:
    events = adapter.stream_chat(params, key, TIMEOUTS)
    try:
        return list(events)
    finally:
        getattr(events, "close", lambda: None)()


def test_streaming_chat_models_and_connection_reuse(fake_ollama, adapter_for):
    upstream = fake_ollama()
    adapter = adapter_for(upstream.base_url, keep_alive="-1")
    assert adapter.list_models(None, 2) == ("llama3.2:latest", "llama3.2", "qwen3:0.6b")
    for _ in range(3):
        assert chat(adapter) == [*HELLO, Finish("stop"), Usage(4, 5)]
    assert upstream.server.open_connections == 1 and len(upstream.requests) == 4
    request = upstream.chat_requests[0]
    assert request.path == "/api/chat" and request.headers["accept"] == "application/x-ndjson"
    assert request.json() == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
        "stream": True,
        "options": {"num_predict": 50},
        "keep_alive": -1,
    }
    assert eventually(lambda: upstream.streams[0].finished)


def test_non_streaming_chat(fake_ollama, adapter_for):
    upstream = fake_ollama(chat=Chat(chunks=["Héllo", " wörld 日本語 👋"], thinking=["hmm"]))
    events = chat(adapter_for(upstream.base_url, stream=False, keep_alive="5m"))
    assert events == [TextDelta("Héllo wörld 日本語 👋"), Finish("stop"), Usage(4, 2)]
    body = upstream.chat_requests[0].json()
    assert body["stream"] is False and body["keep_alive"] == "5m"
    assert upstream.chat_requests[0].headers["accept"] == "application/json"


def test_utf8_split_across_network_writes_and_thinking_skipped(fake_ollama, adapter_for):
    upstream = fake_ollama(chat=Chat(chunks=["é", " wörld", " 日本語", " 👋"], thinking=["ré", "flexion"],
                                     split_utf8=True, prompt_cached=True))  # fmt: skip
    events = chat(adapter_for(upstream.base_url))
    assert events == [TextDelta("é"), TextDelta(" wörld"), TextDelta(" 日本語"), TextDelta(" 👋"), Finish("stop"),
                      Usage(None, 4)]  # fmt: skip


def test_length_finish(fake_ollama, adapter_for):
    upstream = fake_ollama(chat=Chat(chunks=["a", "b"], done_reason="length"))
    assert chat(adapter_for(upstream.base_url))[-2:] == [Finish("length"), Usage(4, 2)]


@pytest.mark.parametrize("inside_line", [False, True])
def test_cut_stream_ends_with_interrupted_failure(fake_ollama, adapter_for, inside_line):
    upstream = fake_ollama(chat=Chat(chunks=["a", "b", "c"], cut_after=2, cut_inside_line=inside_line))
    events = chat(adapter_for(upstream.base_url))
    assert events[:2] == [TextDelta("a"), TextDelta("b")] and len(events) == 3
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.INTERRUPTED


def test_in_band_error_mid_stream(fake_ollama, adapter_for):
    upstream = fake_ollama(chat=Chat(chunks=["a", "b", "c"], error_after=1))
    events = chat(adapter_for(upstream.base_url))
    assert events[0] == TextDelta("a") and len(events) == 2
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.SERVER
    assert events[-1].error.message == "an error was encountered while running the model"


def test_load_without_content_is_an_empty_failure(fake_ollama, adapter_for):
    upstream = fake_ollama(chat=Chat(chunks=[], done_reason="load"))
    events = chat(adapter_for(upstream.base_url))
    assert len(events) == 1 and isinstance(events[0], StreamFailure) and events[0].error.kind is ErrorKind.EMPTY


def _http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("reply", "kind", "status", "message"),
    [
        (Error(400, error_body("model is required")), ErrorKind.BAD_REQUEST, 400, "model is required"),
        (Error(400, error_body('"nomic-embed-text" does not support chat')), ErrorKind.NOT_FOUND, 400, "support chat"),
        (Error(500), ErrorKind.SERVER, 500, "llama runner process has terminated"),
        (Error(503, SERVER_BUSY), ErrorKind.SERVER, 503, "server busy"),
        (
            Error(502, b"<html><body>bad gateway</body></html>", content_type="text/html"),
            ErrorKind.SERVER,
            502,
            "HTTP 502",
        ),
        (Error(402, error_body("you have reached your usage limit")), ErrorKind.QUOTA, 402, "usage limit"),
        (Error(403, b"Forbidden", content_type="text/plain"), ErrorKind.AUTH, 403, "Forbidden"),
    ],
)
def test_http_errors_are_classified(fake_ollama, adapter_for, reply, kind, status, message):
    upstream = fake_ollama()
    upstream.queue(reply)
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(upstream.base_url))
    assert (info.value.kind, info.value.status) == (kind, status) and message in info.value.message


def test_unknown_model_is_not_found(fake_ollama, adapter_for):
    upstream = fake_ollama()
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(upstream.base_url), params=ChatParams((Message("user", "hi"),), "llama9"))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.status == 404
    assert info.value.message == 'model "llama9" not found, try pulling it first'


def test_rate_limited_with_retry_after_seconds_and_http_date(fake_ollama, adapter_for):
    upstream = fake_ollama(valid_keys={"k-seconds", "k-date"})
    upstream.rate_limited_keys = {"k-seconds": "12", "k-date": _http_date(120)}
    adapter = adapter_for(upstream.base_url)
    with pytest.raises(UpstreamError) as seconds:
        chat(adapter, "k-seconds")
    assert seconds.value.kind is ErrorKind.RATE_LIMITED and seconds.value.retry_after == 12
    with pytest.raises(UpstreamError) as date:
        chat(adapter, "k-date")
    assert date.value.kind is ErrorKind.RATE_LIMITED and date.value.retry_after is not None
    assert 100 < date.value.retry_after <= 121


def test_proxy_key_is_a_bearer_header_never_in_the_url(fake_ollama, adapter_for):
    key = "olk-secret-key-123456"
    upstream = fake_ollama(valid_keys={key})
    adapter = adapter_for(upstream.base_url)
    assert chat(adapter, key)[-2:] == [Finish("stop"), Usage(4, 5)]
    assert adapter.list_models(key, 2)[0] == "llama3.2:latest"
    for request in upstream.requests:
        assert request.headers["authorization"] == f"Bearer {key}" and key not in request.path
        assert key.encode() not in request.body
    with pytest.raises(UpstreamError) as bad:
        chat(adapter, "wrong-key-0000")
    assert bad.value.kind is ErrorKind.AUTH and bad.value.status == 401
    with pytest.raises(UpstreamError) as models:
        adapter.list_models(None, 2)
    assert models.value.kind is ErrorKind.AUTH


def test_models_endpoint_errors(fake_ollama, adapter_for):
    with pytest.raises(UpstreamError) as info:
        adapter_for(fake_ollama(models_status=500).base_url).list_models(None, 2)
    assert info.value.kind is ErrorKind.SERVER
    assert adapter_for(fake_ollama(models=()).base_url).list_models(None, 2) == ()


def test_wrong_base_url_is_not_found(fake_ollama, adapter_for):
    upstream = fake_ollama()
    with pytest.raises(UpstreamError) as info:
        adapter_for(upstream.base_url + "/v1").list_models(None, 2)
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.message == "404 page not found"


def test_refused_connection_is_connect_error(adapter_for, refused_url):
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(refused_url.removesuffix("/v1")))
    assert info.value.kind is ErrorKind.CONNECT
