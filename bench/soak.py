#!/usr/bin/env python3
"""Soak: many streams through one gunicorn worker process, with clients that leave at random,
watching the process's memory (RSS) and open file descriptors for a leak.

    .venv/bin/python bench/soak.py                   # 20,000 streams
    .venv/bin/python bench/soak.py -n 2000 -c 8      # a short run

Starts a fake OpenAI-compatible upstream (two workers: one answers at once, one waits before
its first token) and Cortex under gunicorn with one gevent worker process, on loopback ports
only. `-c` clients send streamed requests one after another, each on a new connection, in all
three formats; a share of them (`--disconnects`) close their socket early, half before the
first token and half mid-stream. The worker's RSS and descriptors are read from /proc after a
warm-up (baseline), every `--sample` streams, and after the run once the process is idle.
Every completed stream is checked to be whole. Bounded: `-n` streams and `--max-seconds`.
Writes bench/results/soak-<UTC time>.md. Needs the dev requirements (it reuses the test
suite's fake upstream and gateway runner), like bench/cancel.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeOpenAI, Stream  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402

CHUNKS = [f"tok{i} " for i in range(8)]
CONTENT = "".join(CHUNKS)


@dataclass
class Tally:
    completed: int = 0
    disconnected_before: int = 0
    disconnected_mid: int = 0
    broken: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return self.completed + self.disconnected_before + self.disconnected_mid + len(self.broken)


def request_bytes(kind: str, model: str) -> bytes:
    if kind == "v1":
        path, body = "/v1/chat/completions", {"model": model, "stream": True}
    else:
        path, body = "/api/chat", {"model": model, "stream_format": kind}
    raw = json.dumps({**body, "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nConnection: close\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(raw) + raw


def dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2 :]


def whole(kind: str, body: bytes) -> bool:
    text = dechunk(body).decode()
    if kind == "text":
        return text == CONTENT
    events = [b for b in text.split("\n\n") if b]
    if kind == "sse":
        return (
            events[-1].startswith("event: done")
            and "".join(json.loads(e[6:])["text"] for e in events if e.startswith("data: ")) == CONTENT
        )
    deltas = [json.loads(e[6:]) for e in events[:-1]]
    got = "".join(d["choices"][0]["delta"].get("content", "") for d in deltas if d.get("choices"))
    return events[-1] == "data: [DONE]" and got == CONTENT


def one_stream(port: int, rng: random.Random, disconnects: float, tally: Tally) -> None:
    kind = rng.choice(("text", "sse", "v1"))
    leave = rng.random() < disconnects
    before = leave and rng.random() < 0.5
    model = "slow-model" if before else "fast-model"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(request_bytes(kind, model))
        if before:  # the slow worker holds its first token 200 ms: leave while it is awaited
            time.sleep(rng.uniform(0.0, 0.1))
            with tally.lock:
                tally.disconnected_before += 1
            return
        received = b""
        while b"\r\n\r\n" not in received or (leave and len(received.partition(b"\r\n\r\n")[2]) == 0):
            data = client.recv(65536)
            if not data:
                break
            received += data
        if leave:  # mid-stream: the first body bytes arrived
            with tally.lock:
                tally.disconnected_mid += 1
            return
        while data := client.recv(65536):
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 200") and whole(kind, body)
    with tally.lock:
        if ok:
            tally.completed += 1
        else:
            tally.broken.append(f"{kind}: {received[-300:]!r}")


def proc_figures(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))  # fmt: skip
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def drive(port: int, count: int, clients: int, disconnects: float, seed: int, deadline: float, tally: Tally,
          on_progress=None) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    remaining = [count]
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                one_stream(port, rng, disconnects, tally)
            except OSError as exc:
                with tally.lock:
                    tally.broken.append(f"client error: {exc!r}")
            if on_progress is not None:
                on_progress()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="streams to run (after the warm-up)")
    parser.add_argument("-c", "--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--disconnects", type=float, default=0.2, help="share of clients that leave early")
    parser.add_argument("--warmup", type=int, default=500, help="streams before the baseline")
    parser.add_argument("--sample", type=int, default=2000, help="streams between two samples")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop early after this long")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    fast = FakeOpenAI(chat=Stream(chunks=CHUNKS), models=("fast-model",)).start()
    slow = FakeOpenAI(chat=Stream(chunks=CHUNKS, first_delay=0.2), models=("slow-model",)).start()
    toml = "".join(
        f'[[workers]]\nname = "{name}"\nbase_url = "{fake.base_url}"\nmodels = ["{name}-model"]\n'
        for name, fake in (("fast", fast), ("slow", slow))
    )
    env = {"LOG_LEVEL": "WARNING", "FIRST_TOKEN_TIMEOUT": "30", "IDLE_TIMEOUT": "30", "WORKER_CONNECTIONS": "1000"}
    samples: list[tuple[int, float, int, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(Path(tmp), toml=toml, env=env, workers=1)
        gateway.start()
        try:
            (worker,) = gateway.worker_pids()
            warm = Tally()
            drive(
                gateway.port, args.warmup, args.clients, args.disconnects, args.seed + 7, time.monotonic() + 300, warm
            )
            time.sleep(1.0)
            baseline = proc_figures(worker)
            started = time.monotonic()
            samples.append((0, 0.0, *baseline))
            tally = Tally()
            next_sample = [args.sample]

            def progress() -> None:
                with tally.lock:
                    done = tally.total
                    if done < next_sample[0]:
                        return
                    next_sample[0] += args.sample
                samples.append((done, time.monotonic() - started, *proc_figures(worker)))
                print(f"  {done:6d} streams  rss {samples[-1][2]:7d} KiB  fds {samples[-1][3]:4d}", flush=True)

            drive(gateway.port, args.n, args.clients, args.disconnects, args.seed, started + args.max_seconds,
                  tally, progress)  # fmt: skip
            elapsed = time.monotonic() - started
            time.sleep(2.0)  # let the cancelled upstream calls and idle connections settle
            after = proc_figures(worker)
            problems = gateway.problems()
        finally:
            gateway.stop()
            fast.stop()
            slow.stop()

    during = samples[1:] or samples
    rows = [
        ("baseline (after warm-up)", baseline),
        ("during: max", (max(s[2] for s in during), max(s[3] for s in during))),
        ("after (idle, +2 s)", after),
    ]
    lines = [
        f"# Soak: {tally.total:,} streams through one gevent worker process",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"gunicorn {version('gunicorn')}, gevent {version('gevent')}, Flask {version('flask')}, "
        f"requests {version('requests')}",
        f"- command: `{' '.join(['.venv/bin/python', 'bench/soak.py', *sys.argv[1:]])}`",
        f"- {args.clients} concurrent clients, each stream on a new connection, formats text/SSE/OpenAI at random; "
        f"{args.disconnects:.0%} leave early (half before the first token, half mid-stream); "
        f"{args.warmup} warm-up streams before the baseline",
        f"- {elapsed:.1f} s, {tally.total / elapsed:.0f} streams/s; completed whole {tally.completed:,}, "
        f"left before the first token {tally.disconnected_before:,}, left mid-stream {tally.disconnected_mid:,}, "
        f"broken {len(tally.broken)}; traceback lines in the gateway log: {len(problems)}",
        "",
        "| worker process | RSS (KiB) | open fds |",
        "|---|---|---|",
        *[f"| {name} | {rss:,} | {fds} |" for name, (rss, fds) in rows],
        "",
        f"RSS after - baseline: {after[0] - baseline[0]:+,} KiB; fds after - baseline: {after[1] - baseline[1]:+d}.",
        "",
        "| streams | seconds | RSS (KiB) | fds |",
        "|---|---|---|---|",
        *[f"| {n:,} | {t:.0f} | {rss:,} | {fds} |" for n, t, rss, fds in samples],
    ]
    if len(samples) > 2:
        rss_series = [s[2] for s in samples[1:]]
        lines += [
            "",
            f"RSS over the run: median {statistics.median(rss_series):,.0f} KiB, max {max(rss_series):,} KiB.",
        ]
    if tally.broken:
        lines += ["", "First broken streams:", *[f"- {b}" for b in tally.broken[:5]]]
    report = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
