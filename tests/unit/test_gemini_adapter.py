"""The real HTTP adapter shell speaking Gemini to the fake upstream, in-process."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from providers import gemini
from providers.base import ChatParams, Endpoint, Message, Timeouts
from providers.errors import ErrorKind, UpstreamError
from providers.events import Finish, StreamFailure, TextDelta, Usage
from providers.http import HttpAdapter
from providers.transport import Transport
from tests.fakes import gemini_server as fake
from tests.fakes.gemini_server import FakeGemini

KEY = "AIzaSyFAKE-adapter-key-0123456789abcdef"
MODEL = "gemini-2.5-flash"
PARAMS = ChatParams((Message("system", "be nice"), Message("user", "hello wörld")), MODEL, 0.2, 50)
TIMEOUTS = Timeouts(connect=2, first_token=5, idle=5, total=10)


@pytest.fixture
def adapter_for() -> Iterator[Callable[..., HttpAdapter]]:
    transport = Transport(pool_size=4)

    def make(url: str, stream: bool = True) -> HttpAdapter:
        return HttpAdapter(Endpoint(url, stream=stream), gemini.PROTOCOL, gemini.INFO, transport)

    yield make
    transport.close()


def chat(adapter: HttpAdapter, key: str | None = KEY, params: ChatParams = PARAMS) -> list[Any]:
    return list(adapter.stream_chat(params, key, TIMEOUTS))


def no_key_in_urls(upstream: FakeGemini) -> bool:
    return all(KEY not in r.path and "key=" not in r.path for r in upstream.requests)


def test_streaming_chat(fake_gemini, adapter_for):
    upstream = fake_gemini(chat=fake.Stream(chunks=["Hel", "lo", "!"], thoughts=["Thinking it over."]))
    events = chat(adapter_for(upstream.base_url))
    assert events == [TextDelta("Hel"), TextDelta("lo"), TextDelta("!"), Finish("stop"), Usage(4, 3 + 1)]
    (request,) = upstream.chat_requests
    assert request.method == "POST" and request.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert request.headers["x-goog-api-key"] == KEY and request.headers["accept-encoding"] == "identity"
    assert request.json() == {
        "contents": [{"role": "user", "parts": [{"text": "hello wörld"}]}],
        "systemInstruction": {"parts": [{"text": "be nice"}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50},
    }
    assert no_key_in_urls(upstream)


def test_non_streaming_chat(fake_gemini, adapter_for):
    upstream = fake_gemini(chat=fake.Stream(chunks=["Bon", "jour 👋"], thoughts=["hmm"]))
    events = chat(adapter_for(upstream.base_url, stream=False), params=ChatParams((Message("user", "hi"),), MODEL))
    assert events == [TextDelta("Bonjour 👋"), Finish("stop"), Usage(1, 3)]
    assert upstream.chat_requests[0].path == f"/v1beta/models/{MODEL}:generateContent" and no_key_in_urls(upstream)


class RecordingParser(gemini.StreamParser):
    __slots__ = ("reads",)

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[bytes] = []
        PARSERS.append(self)

    def feed(self, chunk: bytes) -> list[Any]:
        self.reads.append(chunk)
        return super().feed(chunk)


PARSERS: list[RecordingParser] = []


def test_utf8_split_across_network_writes(fake_gemini):
    chunks = ["héllo", " wörld", " 日本語", " 👋"]
    upstream = fake_gemini(chat=fake.Stream(chunks=chunks, split_writes=True))
    transport = Transport(pool_size=1)
    protocol = dataclasses.replace(gemini.PROTOCOL, new_parser=RecordingParser)
    try:
        events = chat(HttpAdapter(Endpoint(upstream.base_url), protocol, gemini.INFO, transport))
    finally:
        transport.close()
    assert events == [*(TextDelta(c) for c in chunks), Finish("stop"), Usage(4, 4)]
    reads = PARSERS.pop().reads
    assert sum(1 for read in reads if not _decodes(read)) >= len(chunks)  # characters really arrived in halves


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_models_prefixed_with_models_are_not_doubled(fake_gemini, adapter_for):
    upstream = fake_gemini(strict_models=True)
    chat(adapter_for(upstream.base_url), params=ChatParams((Message("user", "hi"),), f"models/{MODEL}"))
    assert upstream.chat_requests[0].path.startswith(f"/v1beta/models/{MODEL}:")


def retry_date(seconds: float) -> str:
    return formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (fake.Error(400, fake.TOO_MANY_TOKENS), ErrorKind.BAD_REQUEST, 400),
        (fake.Error(400, fake.FREE_TIER_UNAVAILABLE), ErrorKind.AUTH, 400),
        (fake.Error(403, fake.MISSING_KEY), ErrorKind.AUTH, 403),
        (fake.Error(429, fake.rate_limit_body(MODEL, per_day=True)), ErrorKind.QUOTA, 429),
        (fake.Error(500, fake.INTERNAL), ErrorKind.SERVER, 500),
        (fake.Error(503, fake.OVERLOADED), ErrorKind.SERVER, 503),
    ],
)
def test_http_errors_are_classified(fake_gemini, adapter_for, reply, kind, status):
    upstream = fake_gemini()
    upstream.queue(reply)
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(upstream.base_url))
    assert info.value.kind is kind and info.value.status == status
    assert "{" not in info.value.message and KEY not in info.value.message
    assert chat(adapter_for(upstream.base_url))[-1] == Usage(4, 5)  # the connection is still good


def test_bad_and_missing_keys_are_auth(fake_gemini, adapter_for):
    upstream = fake_gemini(valid_keys={"good"})
    adapter = adapter_for(upstream.base_url)
    with pytest.raises(UpstreamError) as bad:
        chat(adapter, key=KEY)
    assert bad.value.kind is ErrorKind.AUTH and bad.value.status == 400 and bad.value.code == "API_KEY_INVALID"
    with pytest.raises(UpstreamError) as missing:
        chat(adapter, key=None)
    assert missing.value.kind is ErrorKind.AUTH and missing.value.status == 403
    assert chat(adapter, key="good")[-2] == Finish("stop")
    with pytest.raises(UpstreamError) as models:
        adapter.list_models(KEY, 2)
    assert models.value.kind is ErrorKind.AUTH and no_key_in_urls(upstream)


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [([], 37.0, 37.0), ([("Retry-After", "12")], 12.0, 12.0), ([("Retry-After", None)], 50.0, 61.0)],
)
def test_rate_limits_carry_the_retry_hint(fake_gemini, adapter_for, headers, low, high):
    headers = [(name, value or retry_date(60)) for name, value in headers]
    upstream = fake_gemini()
    upstream.rate_limited_keys[KEY] = fake.Error(429, fake.rate_limit_body(MODEL), headers)
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(upstream.base_url))
    error = info.value
    assert error.kind is ErrorKind.RATE_LIMITED and error.status == 429 and error.code == "RESOURCE_EXHAUSTED"
    assert error.retry_after is not None and low <= error.retry_after <= high


def test_unknown_model_is_not_found(fake_gemini, adapter_for):
    upstream = fake_gemini(strict_models=True)
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(upstream.base_url), params=ChatParams((Message("user", "hi"),), "gemini-0-nope"))
    assert info.value.kind is ErrorKind.NOT_FOUND and "gemini-0-nope" in info.value.message


def test_wrong_base_url_is_not_found(fake_gemini, adapter_for):
    upstream = fake_gemini()
    with pytest.raises(UpstreamError) as info:
        chat(adapter_for(upstream.server.base_url + "/v1"))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.message == "HTTP 404"


@pytest.mark.parametrize("as_event", [False, True])
def test_error_mid_stream_is_a_final_failure(fake_gemini, adapter_for, as_event):
    upstream = fake_gemini(chat=fake.InBandError(chunks=["Hel", "lo"], as_event=as_event))
    events = chat(adapter_for(upstream.base_url))
    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")] and len(events) == 3
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.SERVER
    assert events[-1].error.message == "The model is overloaded. Please try again later."


def test_rate_limit_mid_stream(fake_gemini, adapter_for):
    upstream = fake_gemini(chat=fake.InBandError(body=fake.rate_limit_body(MODEL, retry_delay="3s")))
    failure = chat(adapter_for(upstream.base_url))[-1]
    assert failure.error.kind is ErrorKind.RATE_LIMITED and failure.error.retry_after == 3.0


def test_cut_stream_ends_with_interrupted_failure(fake_gemini, adapter_for):
    upstream = fake_gemini(chat=fake.Stream(chunks=["a", "b", "c"], cut_after=2))
    events = chat(adapter_for(upstream.base_url))
    assert events[:2] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is ErrorKind.INTERRUPTED


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("reply", "needle"), [(fake.PromptBlocked(), "PROHIBITED_CONTENT"),
                                               (fake.AnswerBlocked(), "HARM_CATEGORY_DANGEROUS_CONTENT")])  # fmt: skip
def test_safety_blocks_are_blocked(fake_gemini, adapter_for, stream, reply, needle):
    upstream = fake_gemini(chat=reply)
    events = chat(adapter_for(upstream.base_url, stream=stream))
    assert len(events) == 1 and isinstance(events[0], StreamFailure)
    assert events[0].error.kind is ErrorKind.BLOCKED and needle in events[0].error.message


def test_list_models(fake_gemini, adapter_for):
    upstream = fake_gemini(models=("gemini-2.5-flash", "gemini-3.5-flash-lite"))
    assert adapter_for(upstream.base_url).list_models(KEY, 2) == ("gemini-2.5-flash", "gemini-3.5-flash-lite")
    (request,) = upstream.requests
    assert request.method == "GET" and request.path == "/v1beta/models?pageSize=1000"
    assert request.headers["x-goog-api-key"] == KEY and no_key_in_urls(upstream)


def test_list_models_server_error(fake_gemini, adapter_for):
    with pytest.raises(UpstreamError) as info:
        adapter_for(fake_gemini(models_status=503).base_url).list_models(KEY, 2)
    assert info.value.kind is ErrorKind.SERVER and info.value.status == 503
