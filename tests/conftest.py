"""Shared fixtures: fake upstreams on 127.0.0.1 and the gateway under gunicorn+gevent."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_process import GatewayProcess


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    """Factory: start as many fake OpenAI-compatible upstreams as a test needs."""
    started: list[FakeOpenAI] = []

    def make(**kwargs: Any) -> FakeOpenAI:
        fake = FakeOpenAI(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def gateway(tmp_path) -> Iterator[Callable[..., GatewayProcess]]:  # type: ignore[no-untyped-def]
    """Factory: start Cortex under gunicorn (gevent workers) on a free loopback port."""
    started: list[GatewayProcess] = []

    def make(toml: str = "", env: dict[str, str] | None = None, workers: int = 1) -> GatewayProcess:
        process = GatewayProcess(tmp_path / f"gateway-{len(started)}", toml=toml, env=env or {}, workers=workers)
        started.append(process)
        process.start()
        return process

    yield make
    for process in started:
        process.stop()
    for process in started:
        assert not process.problems(), f"gateway log has problems:\n{process.log()}"


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
