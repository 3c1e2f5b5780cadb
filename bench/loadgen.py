#!/usr/bin/env python3
"""Closed-loop HTTP/1.1 load generator for chat completions: asyncio Protocol-level, stdlib only.

    python bench/loadgen.py --url http://127.0.0.1:4000/v1/chat/completions --stream \\
        --connections 32 --warmup 2 --duration 10 [--chunks 20 --delay-ms 0] [-H 'Authorization: Bearer k']
    python bench/loadgen.py --url ... --stream --once --connections 10000 --ramp 10 --chunks 30 --delay-ms 1000

Closed loop (default): `--connections` clients, each on its own keep-alive connection, send their
next request as soon as the last one ended, from the start (clients start spread over `--ramp`
seconds) until warm-up + duration; requests in flight then are drained (bounded by `--timeout`).
`--once`: every client sends exactly one request, so `--connections` streams are held at once.

Per request it records the time to first byte (streams: the first body bytes that carry a
non-empty `delta.content`, i.e. the first token a user sees; non-streamed: the first byte of the
response), the total time, the status, and whether the content arrived intact: the response is
parsed here (status line, headers, Content-Length or chunked transfer encoding, SSE events), the
`content` strings of all events are concatenated and compared with the mock upstream's
deterministic text (`w0 w1 ... `, bench/upstream.py), and a stream must end with `data: [DONE]`.

Output on stdout: `mark <name> <monotonic time>` lines as phases begin and end (`start`, `window`,
`window_end`, `drained`), so a harness can sample the server exactly over the measured window,
then one JSON line: `window` = requests that ended inside the measured window (req/s, latency
percentiles, errors), `all` = every request of the run, warm-up and drain included (success
rate, errors by kind), peaks of concurrent requests and streams, and this process's CPU time.
Only loopback targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

CONTENT = re.compile(rb'"content"\s*:\s*"((?:[^"\\]|\\.)*)"')
DONE = re.compile(rb"data:\s*\[DONE\]\s*$")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def expected_text(chunks: int) -> str:
    return "".join(f"w{i} " for i in range(chunks))


def request_body(model: str, stream: bool, chunks: int, delay_ms: int) -> bytes:
    return json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": f"[mock chunks={chunks} delay_ms={delay_ms}] Say something."}],
        "stream": stream,
        "max_tokens": max(16, chunks * 2),
    }, separators=(",", ":")).encode()  # fmt: skip


@dataclass(slots=True)
class Record:
    start: float
    ttfb: float = 0.0
    end: float = 0.0
    status: int = 0
    error: str = ""  # "" = intact


class Stats:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.streaming = 0
        self.peak_streaming = 0
        #: The end of the first failed answer of each kind (what the server said instead).
        self.samples: dict[str, str] = {}


class ResponseParser:
    """Incremental parser of one HTTP/1.1 response (Content-Length or chunked body)."""

    __slots__ = ("buf", "head_done", "status", "chunked", "length", "close", "body", "chunk_left", "state", "done")

    def __init__(self) -> None:
        self.buf = b""
        self.head_done = False
        self.status = 0
        self.chunked = False
        self.length = -1
        self.close = False
        self.body = bytearray()
        self.chunk_left = 0
        self.state = 0  # chunked: 0 size line, 1 data, 2 CRLF after data, 3 final CRLF
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Consume bytes; returns any bytes past the end of this response (there should be none)."""
        if not self.head_done:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return b""
            head = self.buf[:end].lower()
            data = self.buf[end + 4 :]
            self.buf = b""
            self.head_done = True
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = -1
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.length = int(head[at + 17 : stop if stop >= 0 else None])
            self.close = b"\r\nconnection: close" in head
            if not self.chunked and self.length < 0:
                self.close = True  # body runs to the end of the connection
        if self.chunked:
            return self._dechunk(data)
        if self.length >= 0:
            take = self.length - len(self.body)
            self.body += data[:take]
            if len(self.body) >= self.length:
                self.done = True
            return data[take:]
        self.body += data
        return b""

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        while pos < n:
            if self.state == 1:
                take = min(self.chunk_left, n - pos)
                self.body += buf[pos : pos + take]
                pos += take
                self.chunk_left -= take
                if self.chunk_left:
                    break
                self.state = 2
            elif self.state in (2, 3):
                if n - pos < 2:
                    break
                pos += 2
                if self.state == 3:
                    self.done = True
                    self.buf = b""
                    return buf[pos:]
                self.state = 0
            else:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                size = int(buf[pos:nl].split(b";", 1)[0], 16)
                pos = nl + 2
                if size == 0:
                    self.state = 3  # no trailers expected
                else:
                    self.chunk_left = size
                    self.state = 1
        self.buf = buf[pos:]
        return b""


class Client(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stats: Stats) -> None:
        self.loop = loop
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[Record] | None = None
        self.record: Record | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.stream = False
        self.expected = b""
        self.scanned = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.parser is not None and not self.parser.done:
            if self.parser.head_done and not self.parser.chunked and self.parser.length < 0:
                self.parser.done = True  # a body delimited by the close
                self._finish("")
            else:
                self._finish("conn_closed" if exc is None else f"conn_{type(exc).__name__}")

    def request(self, payload: bytes, stream: bool, expected: bytes, timeout: float) -> asyncio.Future[Record]:
        assert self.transport is not None
        self.stream = stream
        self.expected = expected
        self.scanned = 0
        self.parser = ResponseParser()
        self.record = Record(start=time.perf_counter())
        self.waiter = self.loop.create_future()
        self.timer = self.loop.call_later(timeout, self._timeout)
        st = self.stats
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        self.transport.write(payload)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        parser, rec = self.parser, self.record
        if parser is None or rec is None:
            return  # bytes after a finished response: ignored (the next request resets)
        parser.feed(data)
        if not rec.ttfb:
            if not self.stream:
                rec.ttfb = time.perf_counter()
            elif parser.status == 200:
                body = parser.body
                for m in CONTENT.finditer(body, max(0, self.scanned - 64)):
                    if m.group(1):
                        rec.ttfb = time.perf_counter()
                        self.stats.streaming += 1
                        self.stats.peak_streaming = max(self.stats.peak_streaming, self.stats.streaming)
                        break
                self.scanned = len(body)
        if parser.done:
            self._finish(self._check(parser))

    def _check(self, parser: ResponseParser) -> str:
        body = bytes(parser.body)
        if parser.status != 200:
            error = f"http_{parser.status}"
        elif self.stream and not DONE.search(body):
            error = "no_done_marker"
        elif b"".join(CONTENT.findall(body)) != self.expected:
            error = "content_mismatch"
        else:
            return ""
        if error not in self.stats.samples:
            self.stats.samples[error] = body[-300:].decode("utf-8", "replace")
        return error

    def _timeout(self) -> None:
        self.timer = None
        self._finish("timeout")
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, error: str) -> None:
        rec, waiter = self.record, self.waiter
        if rec is None or waiter is None:
            return
        rec.end = time.perf_counter()
        rec.status = self.parser.status if self.parser is not None else 0
        rec.error = error
        if not rec.ttfb and error:
            rec.ttfb = 0.0
        st = self.stats
        st.in_flight -= 1
        if self.stream and rec.ttfb:
            st.streaming -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if error or (self.parser is not None and self.parser.close):
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self.record = self.waiter = None
        self.parser = None
        if not waiter.done():
            waiter.set_result(rec)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        u = urlsplit(args.url)
        if u.scheme != "http" or u.hostname not in LOOPBACK:
            raise SystemExit(f"loopback http:// targets only: {args.url}")
        self.host, self.port = u.hostname, u.port or 80
        body = request_body(args.model, args.stream, args.chunks, args.delay_ms)
        headers = [f"POST {u.path or '/'} HTTP/1.1", f"Host: {u.netloc}", "Content-Type: application/json",
                   f"Content-Length: {len(body)}", *args.header]  # fmt: skip
        if args.stream:
            headers.append("Accept: text/event-stream")
        self.payload = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
        self.expected = expected_text(args.chunks).encode()
        self.args = args
        self.stats = Stats()
        self.loop = asyncio.get_running_loop()
        self.stop_at = 0.0
        self.connect_errors: Counter[str] = Counter()

    async def connect(self) -> Client | None:
        try:
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(lambda: Client(self.loop, self.stats), self.host, self.port),
                self.args.timeout,
            )
            return proto
        except (OSError, TimeoutError) as exc:
            self.connect_errors[f"connect_{type(exc).__name__}"] += 1
            return None

    async def client(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        conn: Client | None = None
        while time.perf_counter() < self.stop_at:
            if conn is None or conn.closed:
                conn = await self.connect()
                if conn is None:
                    rec = Record(start=time.perf_counter(), end=time.perf_counter(), error="connect_error")
                    self.stats.records.append(rec)
                    if self.args.once:
                        break
                    await asyncio.sleep(0.05)
                    continue
            rec = await conn.request(self.payload, self.args.stream, self.expected, self.args.timeout)
            self.stats.records.append(rec)
            if self.args.once:
                break
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def main(self) -> dict[str, object]:
        a = self.args
        n = a.connections
        t0 = time.perf_counter()
        self.stop_at = t0 + a.warmup + a.duration if not a.once else float("inf")
        mark("start", t0)
        window_start = t0 + a.warmup
        window_end = t0 + a.warmup + a.duration
        tasks = [asyncio.ensure_future(self.client(a.ramp * i / n if a.ramp else 0)) for i in range(n)]
        if not a.once:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            mark("window", time.perf_counter())
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            mark("window_end", time.perf_counter())
        else:
            window_start = t0
            mark("window", t0)
        await asyncio.wait(tasks, timeout=a.timeout + (a.ramp if a.once else 0) + 5)
        t_done = time.perf_counter()
        if a.once:
            window_end = t_done
            mark("window_end", t_done)
        mark("drained", t_done)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        recs = self.stats.records
        window = [r for r in recs if window_start <= r.end <= window_end] if not a.once else recs
        return {
            "mode": "once" if a.once else "closed_loop",
            "connections": n,
            "window_s": round(window_end - window_start, 3),
            "window": summarize(window, window_end - window_start),
            "all": summarize(recs, t_done - t0),
            "peak_in_flight": self.stats.peak_in_flight,
            "peak_streaming": self.stats.peak_streaming,
            "connect_errors": dict(self.connect_errors),
            "error_samples": self.stats.samples,
            "unfinished": sum(1 for t in tasks if not t.done()),
            "loadgen_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "elapsed_s": round(t_done - t0, 3),
        }


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, -(-len(values) * p // 100) - 1))
    return round(values[int(k)], 3)


def summarize(recs: list[Record], seconds: float) -> dict[str, object]:
    ok = [r for r in recs if not r.error]
    ttfb = [(r.ttfb - r.start) * 1000 for r in ok]
    total = [(r.end - r.start) * 1000 for r in ok]
    errors = Counter(r.error for r in recs if r.error)
    return {
        "requests": len(recs),
        "ok": len(ok),
        "intact_pct": round(100 * len(ok) / len(recs), 3) if recs else None,
        "rps": round(len(ok) / seconds, 1) if seconds > 0 else None,
        "errors": dict(errors),
        "ttfb_ms": {"p50": pct(ttfb, 50), "p90": pct(ttfb, 90), "p99": pct(ttfb, 99), "max": pct(ttfb, 100)},
        "total_ms": {"p50": pct(total, 50), "p90": pct(total, 90), "p99": pct(total, 99), "max": pct(total, 100)},
    }


def mark(name: str, t: float) -> None:
    print(f"mark {name} {t:.6f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT/v1/chat/completions")
    ap.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    ap.add_argument("--model", default="bench-model")
    ap.add_argument("--stream", action="store_true", help="stream: true (SSE); default non-streamed JSON")
    ap.add_argument("--chunks", type=int, default=20, help="chunks the mock upstream sends (default 20)")
    ap.add_argument("--delay-ms", type=int, default=0, help="mock upstream's pause between chunks")
    ap.add_argument("-c", "--connections", type=int, default=32, help="concurrent clients (connections)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before the measured window")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--ramp", type=float, default=0.0, help="clients start spread over this many seconds")
    ap.add_argument("--once", action="store_true", help="each client sends one request (hold N streams at once)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1024
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def go() -> dict[str, object]:
        return await Run(args).main()

    result = asyncio.run(go())
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
