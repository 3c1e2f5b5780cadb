"""SSE on the wire, read back with an independent SSE parser (sseclient-py): deltas, the
done event, keep-alive comments during a slow first token, and the error event after a cut."""

from __future__ import annotations

import json
import time

import requests
import sseclient

from tests.fakes.openai_server import Stream
from tests.live.helpers import CHAT, worker_toml

SSE = {"Accept": "text/event-stream"}


def read_raw(
    url: str, body: dict, headers: dict[str, str] | None = None
) -> tuple[requests.Response, list[tuple[float, bytes]]]:  # type: ignore[type-arg]
    """POST and collect (arrival time, bytes) of every piece as it arrives."""
    pieces = []
    with requests.post(url, json=body, headers=headers, stream=True, timeout=15) as response:
        for piece in response.iter_content(chunk_size=None):
            pieces.append((time.monotonic(), piece))
    return response, pieces


def events(raw: bytes) -> list[sseclient.Event]:
    return list(sseclient.SSEClient(iter([raw])).events())


def test_deltas_and_done_event(fake_openai, gateway):
    upstream = fake_openai(chat=Stream(chunks=["Hé", "llo ", "👋"]))
    gw = gateway(worker_toml("up", upstream.base_url))
    response, pieces = read_raw(gw.url + "/api/chat", CHAT, SSE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    parsed = events(b"".join(p for _, p in pieces))
    assert [(e.event, json.loads(e.data)) for e in parsed[:-1]] == [
        ("message", {"text": "Hé"}), ("message", {"text": "llo "}), ("message", {"text": "👋"}),
    ]  # fmt: skip
    done = parsed[-1]
    assert done.event == "done"
    assert json.loads(done.data) == {"provider": "up", "type": "openai_compat", "model": "fake-model",
                                     "finish_reason": "stop", "attempts": 1,
                                     "usage": {"input_tokens": 1, "output_tokens": 3, "total_tokens": 4}}  # fmt: skip


def test_keepalive_comments_while_the_first_token_is_slow(fake_openai, gateway):
    upstream = fake_openai(chat=Stream(chunks=["late ", "answer"], first_delay=1.6))
    gw = gateway(worker_toml("up", upstream.base_url), env={"SSE_KEEPALIVE_INTERVAL": "0.4"})
    body = {**CHAT, "stream_format": "sse"}
    started = time.monotonic()
    response, pieces = read_raw(gw.url + "/api/chat", body)
    assert response.status_code == 200
    raw = b"".join(p for _, p in pieces)
    first_data = raw.index(b"data: ")
    assert raw[:first_data].count(b": keep-alive\n\n") >= 2, raw[:first_data]
    # The first keep-alive arrived long before the first token did.
    first_ping_at = next(t for t, p in pieces if p.startswith(b": keep-alive"))
    assert first_ping_at - started < 1.2
    parsed = events(raw)  # comments are invisible to a conforming parser
    assert [json.loads(e.data).get("text") for e in parsed[:-1]] == ["late ", "answer"] and parsed[-1].event == "done"


def test_failover_still_happens_behind_keepalives(fake_openai, gateway, refused_url):
    slow_fail = fake_openai(chat=Stream(first_delay=0.9, cut_after=0))  # silent, then cut before content
    spare = fake_openai(chat=Stream(chunks=["rescued"]))
    toml = worker_toml("slow", slow_fail.base_url, priority=1) + worker_toml("spare", spare.base_url, priority=2)
    gw = gateway(toml, env={"SSE_KEEPALIVE_INTERVAL": "0.3"})
    _, pieces = read_raw(gw.url + "/api/chat", CHAT, SSE)
    raw = b"".join(p for _, p in pieces)
    assert raw.startswith(b": keep-alive\n\n")
    parsed = events(raw)
    assert json.loads(parsed[0].data) == {"text": "rescued"}
    assert json.loads(parsed[-1].data)["provider"] == "spare" and json.loads(parsed[-1].data)["attempts"] == 2


def test_error_event_after_a_cut_upstream(fake_openai, gateway):
    upstream = fake_openai(chat=Stream(chunks=["one ", "two ", "three ", "four"], cut_after=3))
    gw = gateway(worker_toml("up", upstream.base_url))
    _, pieces = read_raw(gw.url + "/api/chat", CHAT, SSE)
    parsed = events(b"".join(p for _, p in pieces))
    assert [json.loads(e.data)["text"] for e in parsed[:-1]] == ["one ", "two ", "three "]
    assert parsed[-1].event == "error"
    error = json.loads(parsed[-1].data)
    assert error["error"] == "interrupted" and error["message"]


def test_dispatch_failure_after_keepalives_is_an_error_event(fake_openai, gateway):
    upstream = fake_openai(chat=Stream(first_delay=0.8, cut_after=0))
    gw = gateway(worker_toml("only", upstream.base_url), env={"SSE_KEEPALIVE_INTERVAL": "0.3"})
    response, pieces = read_raw(gw.url + "/api/chat", CHAT, SSE)
    assert response.status_code == 200  # already committed by the keep-alives
    parsed = events(b"".join(p for _, p in pieces))
    assert len(parsed) == 1 and parsed[0].event == "error"
    error = json.loads(parsed[0].data)
    assert (
        error["status"] == 503 and error["error"] == "no_workers_available" and "only: interrupted" in error["message"]
    )
