"""The gateway's process lifecycle under real gunicorn + gevent: a stopping worker ends its
streams explicitly (SIGTERM), a restart fails no request (SIGHUP), a crashed worker is
replaced while the other serves (SIGKILL), a client that stops reading holds neither memory
nor its stream forever, and a configuration reload leaves streams in flight intact."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.fakes.http_server import eventually
from tests.fakes.openai_server import Stream
from tests.live.helpers import worker_toml

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
#: Only what a test does can end a stream: no upstream timeout comes near.
PATIENT = {"FIRST_TOKEN_TIMEOUT": "60", "IDLE_TIMEOUT": "60", "SSE_KEEPALIVE_INTERVAL": "30"}
MARKER_TEXT = "\n[cortex-error] shutting_down: the gateway is restarting; retry the request\n"


@dataclass
class Call:
    """One streamed request in a thread: its body as received, or the exception that ended it."""

    url: str
    body: dict  # type: ignore[type-arg]
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    data: bytes = b""
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Call:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with requests.post(self.url, json=self.body, headers=self.headers, stream=True, timeout=30) as response:
                self.status = response.status_code
                received = bytearray()
                for piece in response.iter_content(chunk_size=None):
                    received += piece
                self.data = bytes(received)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def join(self, timeout: float = 20) -> Call:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.url} still running"
        return self

    @property
    def text(self) -> str:
        return self.data.decode()


def text_call(url: str, model: str = "fake-model") -> Call:
    return Call(url + "/api/chat", {**CHAT, "model": model, "stream_format": "text"})


def sse_call(url: str, model: str = "fake-model") -> Call:
    return Call(url + "/api/chat", {**CHAT, "model": model, "stream_format": "sse"})


def openai_call(url: str, model: str = "fake-model") -> Call:
    return Call(url + "/v1/chat/completions", {**CHAT, "model": model, "stream": True})


def sse_events(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            events.append((name, data))
    return events


def intact(call: Call, content: str) -> bool:
    """The whole answer arrived, with its format's end and no error marker."""
    if call.error is not None or call.status != 200:
        return False
    if call.url.endswith("/v1/chat/completions"):
        events = sse_events(call.text)
        texts = [json.loads(d)["choices"][0]["delta"].get("content", "") for _, d in events[:-1] if '"choices":[{' in d]
        return events[-1][1] == "[DONE]" and "".join(texts) == content and '"error"' not in call.text
    if '"stream_format": "sse"' in json.dumps(call.body):
        events = sse_events(call.text)
        texts = [json.loads(d)["text"] for name, d in events if name is None]
        return events[-1][0] == "done" and "".join(texts) == content
    return call.text == content


def assert_shutdown_marker(call: Call) -> None:
    """A stream cut by the worker's deadline ends with its format's explicit error."""
    assert call.error is None and call.status == 200, (call.error, call.status)
    if call.url.endswith("/v1/chat/completions"):
        last = json.loads(sse_events(call.text)[-1][1])
        assert last["error"]["code"] == "shutting_down", call.text
        assert last["error"]["type"] == "service_unavailable_error"
        assert "[DONE]" not in call.text  # as after any mid-stream failure on /v1
    elif '"stream_format": "sse"' in json.dumps(call.body):
        name, data = sse_events(call.text)[-1]
        assert name == "error" and json.loads(data)["error"] == "shutting_down", call.text
        assert json.loads(data)["retry_after"] == 1
    else:
        assert call.text.endswith(MARKER_TEXT), call.text


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def load(url: str, stop: threading.Event, results: list[tuple[float, Call]], content: str) -> Callable[[], None]:
    """A client sending streamed requests one after another, each on a new connection."""

    def run() -> None:
        make = [text_call, sse_call, openai_call]
        i = 0
        while not stop.is_set():
            call = make[i % 3](url)
            call._run()
            results.append((time.monotonic(), call))
            i += 1

    return run


# --- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_with_the_marker(gateway, fake_openai):
    gate = threading.Event()  # never set while the gateway runs: the long streams outlive it
    short = fake_openai(chat=Stream(chunks=["s"] * 8, delay=0.1))
    long = fake_openai(chat=Stream(chunks=["first ", "never"], gate=gate))
    gw = gateway(worker_toml("short", short.base_url) + worker_toml("long", long.base_url, models=("long-model",)),
                 env={**PATIENT, "GRACEFUL_TIMEOUT": "3"})  # fmt: skip
    try:
        longs = [make(gw.url, "long-model").start() for make in (text_call, sse_call, openai_call)]
        assert eventually(lambda: len(long.streams) == 3, timeout=10)
        shorts = [make(gw.url).start() for make in (text_call, sse_call, openai_call)]
        assert eventually(lambda: len(short.streams) == 3, timeout=10)
        gw.signal(signal.SIGTERM)
        assert eventually(lambda: refused(gw.port), timeout=3), "still accepting after SIGTERM"
        for call in shorts:
            assert intact(call.join(), "s" * 8), (call.url, call.error, call.text)
        for call in longs:
            assert_shutdown_marker(call.join())
            assert call.text.count("first ") == 1  # the content before the marker is there
        assert gw.wait(timeout=10) == 0
    finally:
        gate.set()
    log = gw.log()
    assert "ending 3 unfinished request(s) with an error marker" in log


def test_sigterm_answers_a_request_still_waiting_for_its_first_token_with_a_503(gateway, fake_openai):
    gate = threading.Event()
    slow = fake_openai(chat=Stream(chunks=["a", "b"], gate=gate, gate_at=0))  # no first token
    gw = gateway(worker_toml("slow", slow.base_url), env={**PATIENT, "GRACEFUL_TIMEOUT": "2"})
    try:
        calls = [Call(gw.url + "/api/chat/complete", CHAT).start(), text_call(gw.url).start()]
        assert eventually(lambda: len(slow.streams) == 2, timeout=10)
        gw.signal(signal.SIGTERM)
        for call in calls:
            call.join()
            assert call.status == 503, (call.status, call.text)
            assert json.loads(call.text)["error"] == "Shutting down"
        assert gw.wait(timeout=10) == 0
    finally:
        gate.set()


# --- SIGHUP and admin reload ---------------------------------------------------------------------


def test_sighup_under_load_fails_no_request(gateway, fake_openai):
    content = "".join(f"w{i} " for i in range(10))
    upstream = fake_openai(chat=Stream(chunks=[f"w{i} " for i in range(10)], delay=0.05))
    gw = gateway(worker_toml("up", upstream.base_url), env={**PATIENT, "GRACEFUL_TIMEOUT": "10"}, workers=2)
    before = gw.worker_pids()
    stop, results = threading.Event(), []  # type: ignore[var-annotated]
    clients = [threading.Thread(target=load(gw.url, stop, results, content), daemon=True) for _ in range(4)]
    for client in clients:
        client.start()
    assert eventually(lambda: len(results) >= 8, timeout=10)
    hup_at = time.monotonic()
    gw.signal(signal.SIGHUP)
    assert eventually(lambda: len(gw.worker_pids()) == 2 and not set(gw.worker_pids()) & set(before), timeout=15)
    time.sleep(0.5)  # and some more requests on the new workers
    stop.set()
    for client in clients:
        client.join(10)
    failed = [(c.url, c.status, c.error, c.text[-200:]) for _, c in results if not intact(c, content)]
    assert not failed, failed
    assert sum(1 for at, _ in results if at > hup_at) >= 8
    assert "unfinished request(s)" not in gw.log()


def test_admin_reload_and_sighup_leave_streams_in_flight_intact(gateway, fake_openai):
    content = "".join(f"p{i} " for i in range(12))
    upstream = fake_openai(chat=Stream(chunks=[f"p{i} " for i in range(12)], delay=0.15))
    token = "admin-token-lifecycle"
    gw = gateway(worker_toml("up", upstream.base_url),
                 env={**PATIENT, "GRACEFUL_TIMEOUT": "10", "CORTEX_ADMIN_TOKEN": token})  # fmt: skip
    calls = [make(gw.url).start() for make in (text_call, sse_call, openai_call)]
    assert eventually(lambda: len(upstream.streams) == 3, timeout=10)
    reload = requests.post(gw.url + "/api/admin/reload", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert reload.status_code == 200 and reload.json()["reloaded"] is True
    late = [make(gw.url).start() for make in (text_call, sse_call, openai_call)]
    assert eventually(lambda: len(upstream.streams) == 6, timeout=10)
    gw.signal(signal.SIGHUP)
    for call in calls + late:
        assert intact(call.join(), content), (call.url, call.error, call.text)
    after = text_call(gw.url).start().join()
    assert intact(after, content)


# --- a crashed worker ----------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(gateway, fake_openai):
    content = "".join(f"k{i} " for i in range(5))
    upstream = fake_openai(chat=Stream(chunks=[f"k{i} " for i in range(5)]))
    gw = gateway(worker_toml("up", upstream.base_url), env=PATIENT, workers=2)
    assert eventually(lambda: len(gw.worker_pids()) == 2, timeout=10)
    victim, survivor = gw.worker_pids()
    stop, results = threading.Event(), []  # type: ignore[var-annotated]
    client = threading.Thread(target=load(gw.url, stop, results, content), daemon=True)
    client.start()
    assert eventually(lambda: len(results) >= 5, timeout=10)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)  # as if it crashed: the master is not told
    assert eventually(lambda: len(gw.worker_pids()) == 2 and victim not in gw.worker_pids(), timeout=15)
    replaced_at = time.monotonic()
    assert survivor in gw.worker_pids()
    (replacement,) = set(gw.worker_pids()) - {survivor}
    # Booted (a worker signalled while it boots misses the signal: gunicorn's race, not ours).
    assert eventually(lambda: f"worker ready (pid {replacement})" in gw.log(), timeout=15)
    count = len(results)
    assert eventually(lambda: len(results) >= count + 10, timeout=10)
    stop.set()
    client.join(10)
    failed = [c for _, c in results if not intact(c, content)]
    # One client, one request at a time: at most the one in flight on the killed process fails,
    # and then as a broken connection, never as a complete-looking answer.
    assert len(failed) <= 1, [(c.status, c.error, c.text) for c in failed]
    assert all(c.error is not None for c in failed)
    assert all(intact(c, content) for at, c in results if at > replaced_at)
    served_meanwhile = [c for at, c in results if killed_at < at < replaced_at and intact(c, content)]
    assert served_meanwhile or replaced_at - killed_at < 0.3


# --- slow clients --------------------------------------------------------------------------------


def test_a_client_that_stops_reading_holds_bounded_memory_and_is_released(gateway, fake_openai):
    piece = "x" * 8000
    pieces = 10_000  # 80 MB of answer
    upstream = fake_openai(chat=Stream(chunks=[piece] * pieces))
    gw = gateway(worker_toml("up", upstream.base_url), env={**PATIENT, "CLIENT_SEND_TIMEOUT": "3"})
    (worker,) = gw.worker_pids()
    upstream.queue(Stream(chunks=[piece] * 100))
    assert intact(text_call(gw.url).start().join(), piece * 100)  # warm up: buffers and imports
    baseline = rss_kib(worker)

    # Reads nothing for 2 s while the upstream could send 80 MB at once; then reads it all.
    with requests.post(gw.url + "/api/chat", json={**CHAT, "stream_format": "text"}, stream=True, timeout=30) as r:
        assert eventually(lambda: len(upstream.streams) == 2, timeout=5)
        time.sleep(2)
        paused = rss_kib(worker)
        held_back = upstream.streams[1].sent
        received = sum(len(p) for p in r.iter_content(chunk_size=65536))
    assert held_back < pieces / 2, "the upstream was not slowed down by the client"
    assert paused - baseline < 50 * 1024, (baseline, paused)
    assert received == len(piece) * pieces

    # Never reads: released after CLIENT_SEND_TIMEOUT, and its upstream call is closed.
    with requests.post(gw.url + "/api/chat", json={**CHAT, "stream_format": "text"}, stream=True, timeout=30):
        assert eventually(lambda: len(upstream.streams) == 3, timeout=5)
        assert eventually(lambda: upstream.streams[2].closed_by_peer.is_set(), timeout=15)
    assert rss_kib(worker) - baseline < 50 * 1024
    health = lambda: requests.get(gw.url + "/api/health", timeout=5).json()["workers"]["up"]["in_flight"]  # noqa: E731
    assert eventually(lambda: health() == 0, timeout=5)
    assert "read nothing for 3s (CLIENT_SEND_TIMEOUT)" in gw.log()
