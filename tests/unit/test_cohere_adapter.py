"""The real HTTP adapter shell speaking Cohere v2 to the fake Cohere upstream, in-process."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from providers import cohere
from providers.base import ChatParams, Endpoint, Message, Timeouts
from providers.errors import ErrorKind, UpstreamError, excerpt
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage
from providers.http import HttpAdapter
from providers.transport import Transport
from tests.fakes import cohere_server as fake
from tests.fakes.cohere_server import EmptyStream, Error, InBandError, Raw, Stream

KEY = "co-test-key-0123456789"
PARAMS = ChatParams(
    (Message("system", "be brief"), Message("user", "hello world")), "command-a-03-2025", 0.3, 64, 0.75, ("END",)
)
TIMEOUTS = Timeouts(connect=2, first_token=5, idle=5, total=10)
HELLO = [TextDelta("Hello"), TextDelta(" from"), TextDelta(" the"), TextDelta(" fake"), TextDelta("!")]
#: The fake counts prompt words (4) as billed input and adds 200 for `tokens`; output is one per chunk.
HELLO_USAGE = Usage(204, 5)


@pytest.fixture
def adapter_for() -> Iterator[Callable[..., HttpAdapter]]:
    transport = Transport(pool_size=4)

    def make(url: str, protocol: Any = cohere.PROTOCOL, **endpoint: Any) -> HttpAdapter:
        return HttpAdapter(Endpoint(url, **endpoint), protocol, cohere.INFO, transport)

    yield make
    transport.close()


def test_streamed_chat_sends_cohere_v2_and_relays_text_finish_and_usage(fake_cohere, adapter_for):
    upstream = fake_cohere(valid_keys={KEY})
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events == [*HELLO, Finish("stop"), HELLO_USAGE]
    (request,) = upstream.chat_requests
    assert request.method == "POST" and request.path == "/v2/chat"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream" and request.headers["content-type"] == "application/json"
    assert request.json() == {
        "model": "command-a-03-2025",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}],
        "stream": True,
        "temperature": 0.3,
        "max_tokens": 64,
        "p": 0.75,
        "stop_sequences": ["END"],
    }
    assert len(upstream.streams) == 1  # (`finished` is set by the fake's thread after the last write: racy)


def test_non_streaming_chat(fake_cohere, adapter_for):
    upstream = fake_cohere(chat=Stream(chunks=["héllo", " 👋"], finish_reason="MAX_TOKENS"))
    events = list(adapter_for(upstream.base_url, stream=False).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events == [TextDelta("héllo 👋"), Finish("length"), Usage(204, 2)]
    (request,) = upstream.chat_requests
    assert request.json()["stream"] is False and request.headers["accept"] == "application/json"


class _RecordingParser(cohere.StreamParser):
    reads: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        self.reads.append(chunk)
        return super().feed(chunk)


def test_utf8_split_across_network_writes(fake_cohere, adapter_for):
    _RecordingParser.reads = []
    upstream = fake_cohere(chat=Stream(chunks=["héllo", " wörld", " 日本語", " 👋"], split_utf8=True))
    protocol = dataclasses.replace(cohere.PROTOCOL, new_parser=_RecordingParser)
    events = list(adapter_for(upstream.base_url, protocol).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "héllo wörld 日本語 👋"
    assert events[-2:] == [Finish("stop"), Usage(204, 4)]

    def cut_inside_a_character(read: bytes) -> bool:
        try:
            read.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    assert sum(cut_inside_a_character(read) for read in _RecordingParser.reads) >= 4


@pytest.mark.parametrize(
    ("framing", "content_type"),
    [("ndjson", None), ("ndjson", "application/json"), ("sse", "text/event-stream; charset=utf-8")],
)
def test_other_framings_give_the_same_events(fake_cohere, adapter_for, framing, content_type):
    upstream = fake_cohere(chat=Stream(framing=framing, content_type=content_type, done_marker=True))
    assert list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS)) == [
        *HELLO,
        Finish("stop"),
        HELLO_USAGE,
    ]


def test_in_band_error_after_text_is_a_final_failure(fake_cohere, adapter_for):
    upstream = fake_cohere(chat=InBandError(chunks=["Partial"]))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events[:2] == [TextDelta("Partial"), Usage(204, 0)]
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.SERVER
    assert events[-1].error.message == "internal error during generation"
    upstream.queue(InBandError(chunks=[], finish_reason="TIMEOUT", error=None))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.TIMEOUT
    assert not any(isinstance(e, (TextDelta, Finish)) for e in events)


def test_cut_stream_ends_with_interrupted_failure(fake_cohere, adapter_for):
    upstream = fake_cohere(chat=Stream(chunks=["a", "b", "c"], cut_after=2))
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert events[:2] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.INTERRUPTED


def test_garbage_and_empty_streams(fake_cohere, adapter_for):
    upstream = fake_cohere(chat=Raw())
    events = list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert len(events) == 1 and isinstance(events[0], StreamFailure)
    assert events[0].error.kind is ErrorKind.MALFORMED_STREAM
    upstream.queue(EmptyStream())
    assert list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS)) == [Finish("stop"), Usage(201, 0)]


RETRY_DATE_OFFSET = 3600


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (Error(400, fake.BAD_TEMPERATURE), ErrorKind.BAD_REQUEST, 400),
        (Error(400, fake.TOO_MANY_TOKENS), ErrorKind.BAD_REQUEST, 400),
        (Error(402, fake.PAYMENT_REQUIRED), ErrorKind.QUOTA, 402),
        (Error(404, fake.model_not_found("command-a-03-2025")), ErrorKind.NOT_FOUND, 404),
        (Error(422, fake.error_body("invalid request: messages must not be empty")), ErrorKind.BAD_REQUEST, 422),
        (Error(429, fake.TRIAL_MONTHLY_LIMIT), ErrorKind.QUOTA, 429),
        (Error(498, fake.BLOCKED_INPUT), ErrorKind.BLOCKED, 498),
        (Error(499, fake.REQUEST_CANCELLED), ErrorKind.SERVER, 499),
        (Error(500, fake.INTERNAL_ERROR), ErrorKind.SERVER, 500),
        (Error(503, fake.UNAVAILABLE), ErrorKind.SERVER, 503),
    ],
)
def test_http_errors_are_classified(fake_cohere, adapter_for, reply, kind, status):
    upstream = fake_cohere()
    upstream.queue(reply)
    with pytest.raises(UpstreamError) as info:
        adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS)
    assert info.value.kind is kind and info.value.status == status
    assert info.value.message == excerpt(json.loads(reply.body)["message"])
    # the connection survives the error: the next request is served on it
    assert list(adapter_for(upstream.base_url).stream_chat(PARAMS, KEY, TIMEOUTS))[-1] == HELLO_USAGE


def test_bad_or_missing_key_is_auth_and_never_echoed(fake_cohere, adapter_for):
    upstream = fake_cohere(valid_keys={KEY})
    adapter = adapter_for(upstream.base_url)
    for key, message in (("co-wrong-key-9876543210", "invalid api token"), (None, "no api key supplied")):
        with pytest.raises(UpstreamError) as info:
            adapter.stream_chat(PARAMS, key, TIMEOUTS)
        assert info.value.kind is ErrorKind.AUTH and info.value.status == 401 and info.value.message == message
        with pytest.raises(UpstreamError) as models_info:
            adapter.list_models(key, 2)
        assert models_info.value.kind is ErrorKind.AUTH
    echoed = f"invalid api token: {KEY}"
    upstream.queue(Error(401, fake.error_body(echoed)))
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(PARAMS, KEY, TIMEOUTS)
    assert KEY not in info.value.message


def test_rate_limited_with_retry_after_seconds_and_http_date(fake_cohere, adapter_for):
    upstream = fake_cohere()
    upstream.rate_limited_keys[KEY] = "12"
    adapter = adapter_for(upstream.base_url)
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(PARAMS, KEY, TIMEOUTS)
    assert info.value.kind is ErrorKind.RATE_LIMITED and info.value.retry_after == 12.0 and info.value.status == 429
    upstream.rate_limited_keys[KEY] = formatdate(time.time() + RETRY_DATE_OFFSET, usegmt=True)
    with pytest.raises(UpstreamError) as info:
        adapter.stream_chat(PARAMS, KEY, TIMEOUTS)
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.retry_after is not None and RETRY_DATE_OFFSET - 10 < info.value.retry_after <= RETRY_DATE_OFFSET


def test_list_models_asks_for_chat_models_with_the_key_in_the_header(fake_cohere, adapter_for):
    upstream = fake_cohere(valid_keys={KEY})
    assert adapter_for(upstream.base_url).list_models(KEY, 2) == ("command-a-03-2025", "command-r7b-12-2024")
    (request,) = upstream.requests
    assert request.method == "GET" and request.path == "/v1/models?endpoint=chat&page_size=1000"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    with pytest.raises(UpstreamError) as info:
        adapter_for(fake_cohere(models_status=500).base_url).list_models(KEY, 2)
    assert info.value.kind is ErrorKind.SERVER


def test_the_key_never_appears_in_a_url_or_body(fake_cohere, adapter_for):
    upstream = fake_cohere()
    adapter = adapter_for(upstream.base_url)
    adapter.list_models(KEY, 2)
    list(adapter.stream_chat(PARAMS, KEY, TIMEOUTS))
    list(adapter_for(upstream.base_url, stream=False).stream_chat(PARAMS, KEY, TIMEOUTS))
    assert len(upstream.requests) == 3
    for request in upstream.requests:
        assert KEY not in request.path and KEY.encode() not in request.body
        assert request.headers["authorization"] == f"Bearer {KEY}"
