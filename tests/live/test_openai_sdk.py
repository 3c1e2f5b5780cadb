"""The official openai Python SDK, unchanged, pointed at Cortex under gunicorn+gevent."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Stream
from tests.gateway_process import GatewayProcess
from tests.live.helpers import worker_toml

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def sdk(fake_openai: Callable[..., FakeOpenAI], gateway: Callable[..., GatewayProcess]):  # type: ignore[no-untyped-def]
    upstream = fake_openai(chat=Stream(chunks=["Hé", "llo ", "wörld 👋"]), models=("fake-model", "fake-large"))
    gw = gateway(worker_toml("up", upstream.base_url, models=("fake-model", "fake-large")))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="not-checked", max_retries=0, timeout=10) as client:
        yield client, upstream


def test_non_streaming_chat(sdk):
    client, _ = sdk
    completion = client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert completion.object == "chat.completion" and completion.model == "fake-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Héllo wörld 👋"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_streaming_chat_with_usage(sdk):
    client, upstream = sdk
    stream = client.chat.completions.create(
        model="up/fake-large", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, temperature=0.2
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Héllo wörld 👋"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 1 and chunks[-1].usage.completion_tokens == 3
    sent = upstream.chat_requests[-1].json()
    assert sent["model"] == "fake-large" and sent["temperature"] == 0.2  # the provider prefix is ours


def test_streaming_without_include_usage_has_no_usage_chunk(sdk):
    client, _ = sdk
    chunks = list(client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


def test_models_list(sdk):
    client, _ = sdk
    assert [m.id for m in client.models.list()] == ["fake-model", "fake-large"]


def test_unknown_model_raises_not_found(sdk):
    client, _ = sdk
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=MESSAGES)
    assert info.value.status_code == 404 and info.value.code == "model_not_found" and info.value.param == "model"


def test_bad_request_raises_bad_request_error(sdk):
    client, _ = sdk
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-model", messages=MESSAGES, temperature=5)
    assert info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-model", messages=[])


def test_no_worker_able_to_answer_raises_the_503_error(gateway, refused_url):
    gw = gateway(worker_toml("down", refused_url))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="fake-model", messages=MESSAGES)
        assert info.value.status_code == 503 and info.value.code == "no_workers_available"
        assert info.value.response.headers["Retry-After"]


def test_a_stream_cut_mid_way_raises_in_the_sdk_instead_of_ending_quietly(fake_openai, gateway):
    upstream = fake_openai(chat=Stream(chunks=["one ", "two ", "three"], cut_after=2))
    gw = gateway(worker_toml("up", upstream.base_url))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10) as client:
        received = []
        with pytest.raises(openai.APIError, match="failed mid-stream"):
            for chunk in client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True):
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == "one two "


def test_every_upstream_rate_limiting_raises_rate_limit_error_with_retry_after(fake_openai, gateway):
    upstream = fake_openai()
    upstream.rate_limited_keys = {"k1": "30"}
    gw = gateway(worker_toml("only", upstream.base_url, keys=["k1"]))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=10) as client:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="fake-model", messages=MESSAGES)
        assert info.value.status_code == 429 and info.value.code == "rate_limited"
        assert 29 <= int(info.value.response.headers["Retry-After"]) <= 30
