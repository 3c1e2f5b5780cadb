"""A client that leaves cancels its upstream call promptly, whatever the request was doing
(FIELD-NOTES 5): counted at the fake upstream, which sees its connection closed.

The first-token and idle timeouts are set far beyond the waits here, so only the disconnect
can explain the upstream connection closing."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from tests.fakes.http_server import eventually
from tests.fakes.openai_server import Hang, Stream
from tests.live.helpers import worker_toml

SLOW = {"FIRST_TOKEN_TIMEOUT": "60", "IDLE_TIMEOUT": "60", "SSE_KEEPALIVE_INTERVAL": "30"}


def send(port: int, path: str, body: dict, headers: str = "") -> socket.socket:  # type: ignore[type-arg]
    raw = json.dumps(body).encode()
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}".encode()
        + b"Content-Length: %d\r\n\r\n" % len(raw)
        + raw
    )
    return client


def read_until(client: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = client.recv(65536)
        assert data, f"the gateway closed before sending {marker!r}"
        received += data
    return received


def assert_cleaned_up(gw, upstream_closed: threading.Event) -> None:  # type: ignore[no-untyped-def]
    assert upstream_closed.wait(timeout=5), "the upstream connection stayed open after the client left"
    health = requests.get(gw.url + "/api/health", timeout=5).json()
    assert eventually(
        lambda: requests.get(gw.url + "/api/health", timeout=5).json()["workers"]["up"]["in_flight"] == 0
    ), health


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/chat", CHAT, ""),
        ("/api/chat", CHAT, "Accept: text/event-stream\r\n"),
        ("/api/chat/complete", CHAT, ""),
        ("/v1/chat/completions", {**CHAT, "stream": True}, ""),
        ("/v1/chat/completions", CHAT, ""),
    ],
    ids=["text", "sse", "complete", "v1-stream", "v1-json"],
)
def test_leaving_before_the_upstream_answered_at_all(fake_openai, gateway, path, body, headers):
    upstream = fake_openai(chat=Hang(seconds=30))
    gw = gateway(worker_toml("up", upstream.base_url), env=SLOW)
    client = send(gw.port, path, body, headers)
    assert eventually(lambda: len(upstream.hung) == 1)
    client.close()
    assert_cleaned_up(gw, upstream.hung[0].closed_by_peer)


def test_leaving_while_the_first_token_is_awaited(fake_openai, gateway):
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=["never ", "sent"], gate=gate, gate_at=0))
    gw = gateway(worker_toml("up", upstream.base_url), env=SLOW)
    client = send(gw.port, "/api/chat", CHAT)
    assert eventually(lambda: len(upstream.streams) == 1)  # headers and the role chunk are out
    client.close()
    try:
        assert_cleaned_up(gw, upstream.streams[0].closed_by_peer)
        assert upstream.streams[0].sent == 0
    finally:
        gate.set()


def test_leaving_during_a_long_pause_mid_stream(fake_openai, gateway):
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=["first ", "second"], gate=gate, gate_at=1))
    gw = gateway(worker_toml("up", upstream.base_url), env=SLOW)
    client = send(gw.port, "/api/chat", CHAT)
    read_until(client, b"first ")
    client.close()  # nothing more is written to the client until the gate opens: only the watch can notice
    try:
        assert_cleaned_up(gw, upstream.streams[0].closed_by_peer)
        assert upstream.streams[0].sent == 1 and not upstream.streams[0].finished
    finally:
        gate.set()


def test_a_finished_stream_stops_watching_its_client(fake_openai, gateway):
    """Once a streamed response is complete, closing the (keep-alive) connection cancels
    nothing and crashes nothing: the watch ends with the response instead of outliving it
    and peeking at a socket the server has closed."""
    upstream = fake_openai(chat=Stream(chunks=["done"]))
    gw = gateway(worker_toml("up", upstream.base_url), env=SLOW)
    for path, body in (("/api/chat", CHAT), ("/v1/chat/completions", {**CHAT, "stream": True})):
        client = send(gw.port, path, body)
        read_until(client, b"0\r\n\r\n")  # the whole chunked response; the connection stays open
        client.close()
    time.sleep(0.6)  # more than two watch intervals: a leftover watch would have seen the EOF
    assert "client disconnected" not in gw.log()
    assert not gw.problems(), gw.log()
