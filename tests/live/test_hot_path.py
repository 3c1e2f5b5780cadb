"""Structural guards of the hot path (issue 9): what the benchmarks in bench/ measure, held
here by counting, never by timing. The upstream pool reuses its connections; events are
written the moment the next one would mean waiting, and events that arrived together are
written together (one write to the client, not one per event)."""

from __future__ import annotations

import json
import threading

import requests

from tests.fakes.openai_server import Stream
from tests.live.helpers import CHAT, worker_toml


def test_the_upstream_pool_reuses_its_connections(fake_openai, gateway):
    """Thirty requests, streamed and not, one after another: one upstream connection."""
    upstream = fake_openai(chat=Stream())
    gw = gateway(worker_toml("up", upstream.base_url))
    with requests.Session() as client:
        for index in range(30):
            if index % 2:
                answer = client.post(gw.url + "/api/chat/complete", json=CHAT, timeout=10)
                assert answer.status_code == 200 and answer.json()["response"] == "Hello from the fake!"
            else:
                answer = client.post(gw.url + "/api/chat", json=CHAT, timeout=10)
                assert answer.status_code == 200 and answer.text == "Hello from the fake!"
    assert upstream.server.connections_opened == 1


def test_events_that_arrive_together_leave_together(fake_openai, gateway):
    """Three tokens, the finish and [DONE] in one HTTP chunk from the upstream become one chunk to the client
    (in both the native and the OpenAI format), where each event used to cost a write. Only
    the OpenAI format's own [DONE] follows apart, once the upstream body has ended."""
    upstream = fake_openai(chat=Stream(chunks=["a", "b", "c"], together=True))
    gw = gateway(worker_toml("up", upstream.base_url))
    with requests.post(gw.url + "/api/chat", json=CHAT, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert list(response.iter_content(chunk_size=None)) == [b"abc"]
    body = {**CHAT, "model": "fake-model", "stream": True}
    with requests.post(gw.url + "/v1/chat/completions", json=body, stream=True, timeout=10) as response:
        pieces = list(response.iter_content(chunk_size=None))
    assert len(pieces) == 2 and pieces[1] == b"data: [DONE]\n\n"
    events = [json.loads(line.removeprefix(b"data: ")) for line in pieces[0].split(b"\n\n") if line]
    deltas = [event["choices"][0]["delta"].get("content") for event in events]
    assert deltas == ["", "a", "b", "c", None]  # role, the three tokens, the finish
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_lone_event_is_not_held_back_for_company(fake_openai, gateway):
    """The other half: a token that arrives alone is written at once, while the upstream holds
    the rest back (no buffer waits to fill)."""
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=["first ", "second"], gate=gate))
    gw = gateway(worker_toml("up", upstream.base_url))
    body = {**CHAT, "model": "fake-model", "stream": True}
    with requests.post(gw.url + "/v1/chat/completions", json=body, stream=True, timeout=10) as response:
        pieces = response.iter_content(chunk_size=None)
        first = next(pieces)
        assert b'"content":"first "' in first and upstream.streams[0].sent == 1
        gate.set()
        rest = b"".join(pieces)
    assert b'"content":"second"' in rest and rest.endswith(b"data: [DONE]\n\n")
