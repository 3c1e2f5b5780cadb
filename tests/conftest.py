"""Shared fixtures: fake upstreams on 127.0.0.1 and the gateway under gunicorn+gevent.

Every `fake_*` fixture is a factory: call it once per upstream a test needs (keyword
arguments go to the fake's constructor); all of them stop at teardown. Each fake's
`base_url` is what a worker's TOML `base_url` is set to for that provider, as for the real
service: `…/v1` (OpenAI-compatible, like Groq's `…/openai/v1`), `…/v1beta` (Gemini), and the
server root for Cohere, Anthropic and Ollama (their adapters append `/v2/chat`,
`/v1/messages`, `/api/chat`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.factory import fake_factory
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_process import GatewayProcess, gateway_factory
from tests.redis_server import redis_server as start_redis


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    """Factory: fake OpenAI-compatible upstreams (OpenAI, Groq, OpenRouter, vLLM...)."""
    with fake_factory(FakeOpenAI) as make:
        yield make


@pytest.fixture
def fake_gemini() -> Iterator[Callable[..., FakeGemini]]:
    """Factory: fake Gemini API (v1beta) upstreams."""
    with fake_factory(FakeGemini) as make:
        yield make


@pytest.fixture
def fake_cohere() -> Iterator[Callable[..., FakeCohere]]:
    """Factory: fake Cohere (Chat API v2) upstreams."""
    with fake_factory(FakeCohere) as make:
        yield make


@pytest.fixture
def fake_anthropic() -> Iterator[Callable[..., FakeAnthropic]]:
    """Factory: fake Anthropic (Messages API) upstreams."""
    with fake_factory(FakeAnthropic) as make:
        yield make


@pytest.fixture
def fake_ollama() -> Iterator[Callable[..., FakeOllama]]:
    """Factory: fake Ollama servers (native API)."""
    with fake_factory(FakeOllama) as make:
        yield make


@pytest.fixture
def gateway(tmp_path) -> Iterator[Callable[..., GatewayProcess]]:  # type: ignore[no-untyped-def]
    """Factory: start Cortex under gunicorn (gevent workers) on a free loopback port."""
    with gateway_factory(tmp_path) as make:
        yield make


@pytest.fixture
def redis_server(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A private redis-server on a free loopback port (no persistence); yields its URI.
    Skipped when redis-server is missing, failed instead in CI (tests/redis_server.py)."""
    with start_redis(tmp_path / "redis") as uri:
        yield uri


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
