"""Streaming through gunicorn+gevent over real sockets: incremental delivery, mid-stream
failure markers, and what a client disconnect does to the upstream connection."""

from __future__ import annotations

import signal
import socket
import threading

import pytest
import requests

from tests.fakes.http_server import eventually
from tests.fakes.openai_server import Stream
from tests.live.helpers import CHAT, worker_toml


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_first_chunk_reaches_client_before_upstream_sends_the_rest(fake_openai, gateway, framing):
    """Also for a close-delimited upstream body, which requests' iter_content would buffer to EOF."""
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=["first ", "second ", "third"], gate=gate, framing=framing))
    gw = gateway(worker_toml("up", upstream.base_url))

    with requests.post(gw.url + "/api/chat", json=CHAT, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["X-Cortex-Worker"] == "up"
        pieces = response.iter_content(chunk_size=None)
        first = next(pieces)
        # The upstream is held at its gate: it has sent one content chunk and nothing more.
        assert first == b"first "
        assert upstream.streams[0].sent == 1 and not upstream.streams[0].finished
        gate.set()
        rest = b"".join(pieces)
    assert first + rest == b"first second third"
    assert upstream.streams[0].finished


def test_stream_cut_mid_way_ends_with_explicit_error_marker(fake_openai, gateway):
    upstream = fake_openai(chat=Stream(chunks=["one ", "two ", "three ", "four"], cut_after=3))
    gw = gateway(worker_toml("up", upstream.base_url))

    response = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.startswith("one two three ")
    assert body.endswith("\n")
    last_line = body.rstrip("\n").rsplit("\n", 1)[-1]
    assert last_line.startswith("[cortex-error] interrupted: ")
    # and the operator can see it: a warning naming the worker, and the stream's outcome
    assert eventually(lambda: "WARNING cortex.relay: stream from up failed mid-way: interrupted: " in gw.log())
    assert eventually(lambda: "outcome=failed_mid_stream error=interrupted" in gw.log())


def test_client_disconnect_closes_the_upstream_connection(fake_openai, gateway):
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=[f"tok{i} " for i in range(200)], gate=gate, delay=0.05))
    gw = gateway(worker_toml("up", upstream.base_url))

    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as client:
        client.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        received = b""
        while b"tok0" not in received:
            data = client.recv(65536)
            assert data, "gateway closed before the first token"
            received += data
    # The client is gone. Let the upstream go on streaming: the gateway notices on its next
    # write and must close the upstream connection, long before the 200 chunks are sent.
    gate.set()
    record = upstream.streams[0]
    assert record.closed_by_peer.wait(timeout=15), "the gateway kept the upstream connection open"
    assert record.sent < record.planned
    assert not record.finished
    # and the relay's cleanup ran: the worker counts no stream in flight any more
    health = requests.get(gw.url + "/api/health", timeout=5).json()
    assert health["workers"]["up"]["in_flight"] == 0


def test_sigterm_lets_an_in_flight_stream_finish(fake_openai, gateway):
    gate = threading.Event()
    upstream = fake_openai(chat=Stream(chunks=[f"t{i} " for i in range(20)], gate=gate, delay=0.02))
    gw = gateway(worker_toml("up", upstream.base_url))

    with requests.post(gw.url + "/api/chat", json=CHAT, stream=True, timeout=10) as response:
        pieces = response.iter_content(chunk_size=None)
        first = next(pieces)
        gw.process.send_signal(signal.SIGTERM)  # graceful shutdown begins mid-stream
        gate.set()
        rest = b"".join(pieces)
    assert first + rest == "".join(f"t{i} " for i in range(20)).encode()
    assert gw.process.wait(timeout=15) == 0
    assert "[cortex-error]" not in rest.decode()
