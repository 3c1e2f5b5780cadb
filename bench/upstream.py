#!/usr/bin/env python3
"""Mock OpenAI-compatible upstream for the benchmark: asyncio Protocol-level HTTP/1.1, stdlib only.

    python bench/upstream.py --port 9100 [--chunks 20] [--delay-ms 0] [--model bench-model]

`POST /v1/chat/completions` (or `/chat/completions`) answers:

- `"stream": true`: `text/event-stream` in chunked transfer encoding, OpenAI's shape::

      data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",...,"choices":[{"index":0,
             "delta":{"role":"assistant","content":"w0 "},"finish_reason":null}]}
      data: {...,"choices":[{"index":0,"delta":{"content":"w1 "},"finish_reason":null}]}
      ...
      data: {...,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}
      data: {...,"choices":[],"usage":{...}}        (only with stream_options.include_usage)
      data: [DONE]

- otherwise one `chat.completion` JSON object with `Content-Length` and `usage`.

Chunk i carries the text `w{i} `, so the reply to N chunks is always `w0 w1 ... w{N-1} ` and a
client can check that every chunk arrived, in order (bench/loadgen.py does). The knobs travel
inside the last message, because a gateway forwards message text untouched but not unknown
parameters or headers: `[mock chunks=20 delay_ms=50]` overrides the defaults for that request.
With a delay the first chunk goes at once and each next one `delay_ms` later.

Also `GET /v1/models`, `GET /health` and `GET /stats` (request counters, JSON).

Speed matters more than generality here (it shares one core with the load generator): responses
are pre-encoded and cached per (stream, chunks, model, usage), unpaced answers are one write,
paced ones are driven by `loop.call_later` (no task per stream), and the HTTP parser only knows
what a gateway's client sends: a request line, headers, a Content-Length body, keep-alive.
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import signal
import sys

KNOBS = re.compile(rb"\[mock((?:\s+\w+=\d+)*)\s*\]")
KNOB = re.compile(rb"(\w+)=(\d+)")
STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,100})"')
INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
CREATED = 1764000000
MAX_CHUNKS = 100_000


def expected_text(chunks: int) -> str:
    """The reply text to a request for `chunks` chunks (what clients check against)."""
    return "".join(f"w{i} " for i in range(chunks))


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _chunked(data: bytes) -> bytes:
    """One chunk of HTTP/1.1 chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Answers:
    """Pre-encoded responses, built once per shape and reused."""

    def __init__(self) -> None:
        self._plain: dict[tuple[int, bytes], bytes] = {}
        self._frames: dict[tuple[int, bytes, bool], tuple[bytes, list[bytes], bytes]] = {}

    def plain(self, chunks: int, model: bytes) -> bytes:
        key = (chunks, model)
        cached = self._plain.get(key)
        if cached is None:
            body = _json({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model.decode(),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": expected_text(chunks)},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": chunks, "total_tokens": 8 + chunks},
            })  # fmt: skip
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            cached = self._plain[key] = head + body
        return cached

    def frames(self, chunks: int, model: bytes, usage: bool) -> tuple[bytes, list[bytes], bytes]:
        """(response head, one chunked-encoded SSE event per content chunk, the tail)."""
        key = (chunks, model, usage)
        cached = self._frames.get(key)
        if cached is None:
            base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
                    "model": model.decode()}  # fmt: skip

            def event(choices: list[object], **extra: object) -> bytes:
                return _chunked(b"data: " + _json({**base, "choices": choices, **extra}) + b"\n\n")

            events = []
            for i in range(chunks):
                delta = {"role": "assistant", "content": f"w{i} "} if i == 0 else {"content": f"w{i} "}
                events.append(event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
            tail = event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
            if usage:
                tail += event([], usage={"prompt_tokens": 8, "completion_tokens": chunks, "total_tokens": 8 + chunks})
            tail += _chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n"
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
            cached = self._frames[key] = (head, events, tail)
        return cached


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self.open_streams = 0
        self.peak_streams = 0
        self.connections = 0
        self.open_connections = 0
        self.peak_connections = 0


class UpstreamProtocol(asyncio.Protocol):
    """One client connection; requests on it are served one after another (keep-alive)."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.streaming = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        st = self.server.stats
        st.connections += 1
        st.open_connections += 1
        st.peak_connections = max(st.peak_connections, st.open_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.stats.open_connections -= 1
        self._end_stream()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.streaming:
            self._serve()

    def _serve(self) -> None:
        """Answer every complete request in the buffer (pipelining would work, nobody uses it)."""
        while self.transport is not None and not self.streaming:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self._fail(b"431 Request Header Fields Too Large")
                return
            head = self.buf[:end]
            lower = head.lower()
            length = 0
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                try:
                    length = int(head[at + 17 : stop if stop >= 0 else None])
                except ValueError:
                    self._fail(b"400 Bad Request")
                    return
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.close_after = b"\r\nconnection: close" in lower
            self._answer(head[: head.find(b"\r\n")] if b"\r\n" in head else head, body)

    def _fail(self, status: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.close()

    def _small(self, body: bytes, ctype: bytes = b"application/json") -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                             % (ctype, len(body), body))  # fmt: skip
        self._done()

    def _answer(self, line: bytes, body: bytes) -> None:
        method, _, rest = line.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        srv = self.server
        if method == b"POST" and path.endswith(b"/chat/completions"):
            srv.stats.requests += 1
            chunks, delay_ms = srv.chunks, srv.delay_ms
            knobs = KNOBS.search(body)
            if knobs:
                for name, value in KNOB.findall(knobs.group(1)):
                    if name == b"chunks":
                        chunks = min(int(value), MAX_CHUNKS)
                    elif name == b"delay_ms":
                        delay_ms = int(value)
            found = MODEL.search(body)
            model = found.group(1) if found else srv.model
            if STREAM_TRUE.search(body):
                self._stream(chunks, delay_ms, model, bool(INCLUDE_USAGE.search(body)))
            else:
                assert self.transport is not None
                self.transport.write(srv.answers.plain(chunks, model))
                self._done()
        elif method == b"GET" and path in (b"/v1/models", b"/models"):
            self._small(_json({"object": "list", "data": [{"id": srv.model.decode(), "object": "model",
                                                           "created": CREATED, "owned_by": "bench"}]}))  # fmt: skip
        elif method == b"GET" and path == b"/health":
            self._small(b'{"status":"ok"}')
        elif method == b"GET" and path == b"/stats":
            self._small(_json(vars(srv.stats)))
        else:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            self._done()

    def _stream(self, chunks: int, delay_ms: int, model: bytes, usage: bool) -> None:
        head, events, tail = self.server.answers.frames(chunks, model, usage)
        assert self.transport is not None
        if delay_ms <= 0 or chunks <= 1:
            self.transport.write(head + b"".join(events) + tail)
            self._done()
            return
        st = self.server.stats
        st.streams += 1
        st.open_streams += 1
        st.peak_streams = max(st.peak_streams, st.open_streams)
        self.streaming = True
        self.transport.write(head + events[0])
        self._schedule(events, tail, 1, delay_ms / 1000)

    def _schedule(self, events: list[bytes], tail: bytes, index: int, delay: float) -> None:
        self.timer = self.server.loop.call_later(delay, self._tick, events, tail, index, delay)

    def _tick(self, events: list[bytes], tail: bytes, index: int, delay: float) -> None:
        self.timer = None
        if self.transport is None:
            return
        if index + 1 < len(events):
            self.transport.write(events[index])
            self._schedule(events, tail, index + 1, delay)
            return
        self.transport.write(events[index] + tail)
        self._end_stream()
        self._done()
        if self.transport is not None and self.buf:
            self._serve()

    def _end_stream(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.streaming:
            self.streaming = False
            self.server.stats.open_streams -= 1

    def _done(self) -> None:
        if self.close_after and self.transport is not None:
            self.transport.close()


class MockServer:
    def __init__(self, chunks: int, delay_ms: int, model: str) -> None:
        self.chunks = chunks
        self.delay_ms = delay_ms
        self.model = model.encode()
        self.answers = Answers()
        self.stats = Stats()
        self.loop = asyncio.get_running_loop()

    async def serve(self, port: int, backlog: int) -> asyncio.Server:
        return await self.loop.create_server(lambda: UpstreamProtocol(self), "127.0.0.1", port, backlog=backlog)


async def main_async(args: argparse.Namespace) -> None:
    server = await MockServer(args.chunks, args.delay_ms, args.model).serve(args.port, args.backlog)
    port = server.sockets[0].getsockname()[1]
    print(f"upstream listening on http://127.0.0.1:{port}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def raise_nofile(want: int = 65536) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):  # not root: as high as the hard limit allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=9100, help="0: any free port (printed)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per answer (default 20)")
    ap.add_argument("--delay-ms", type=int, default=0, help="pause between chunks (default 0)")
    ap.add_argument("--model", default="bench-model", help="model named in answers when the request names none")
    ap.add_argument("--backlog", type=int, default=4096)
    args = ap.parse_args(argv)
    raise_nofile()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
