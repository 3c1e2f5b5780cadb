#!/usr/bin/env python3
"""Latency a gateway adds to one unloaded stream: time to first byte and to the last byte of
POST /api/chat, against the same request sent straight to the OpenAI-compatible upstream it
forwards to, in one run, sequentially (one client, nothing queues).

    python3 bench/ttfb.py --gateway http://127.0.0.1:4000 --upstream http://127.0.0.1:9100/v1 -n 500

Stdlib only; loopback only. Reports p50/p90/p99 of each and the overhead (gateway - direct).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from urllib.parse import urlsplit


def measure(url: str, path: str, body: bytes, n: int, warmup: int) -> tuple[list[float], list[float]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    ttfb, total = [], []
    for i in range(n + warmup):
        start = time.perf_counter()
        conn.request("POST", parts.path.rstrip("/") + path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        first = response.read1(65536) if hasattr(response, "read1") else response.read(1)
        got_first = time.perf_counter()
        rest = response.read()
        end = time.perf_counter()
        if response.status != 200 or not (first + rest):
            raise SystemExit(f"{url}: HTTP {response.status}: {(first + rest)[:200]!r}")
        if i >= warmup:
            ttfb.append((got_first - start) * 1000)
            total.append((end - start) * 1000)
    conn.close()
    return ttfb, total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", required=True, help="Cortex base URL")
    parser.add_argument("--upstream", required=True, help="the OpenAI-compatible base URL Cortex forwards to")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--label", default="cortex", help="name of the gateway in the table")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    for url in (args.gateway, args.upstream):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("loopback targets only")
    messages = [{"role": "user", "content": "hi"}]
    direct_body = json.dumps({"model": args.model, "messages": messages, "stream": True}).encode()
    gateway_body = json.dumps({"model": args.model, "messages": messages}).encode()
    rows = {
        "direct": measure(args.upstream, "/chat/completions", direct_body, args.n, args.warmup),
        args.label: measure(args.gateway, "/api/chat", gateway_body, args.n, args.warmup),
    }
    print(f"{args.n} sequential streams each, after {args.warmup} warm-up; milliseconds")
    print(f"{'target':8} {'ttfb p50':>9} {'p90':>7} {'p99':>7} {'total p50':>10} {'p90':>7} {'p99':>7}")
    for name, (ttfb, total) in rows.items():
        print(f"{name:8} {pct(ttfb, 50):9.2f} {pct(ttfb, 90):7.2f} {pct(ttfb, 99):7.2f} "
              f"{pct(total, 50):10.2f} {pct(total, 90):7.2f} {pct(total, 99):7.2f}")  # fmt: skip
    d_ttfb, d_total = rows["direct"]
    c_ttfb, c_total = rows[args.label]
    print(f"overhead: ttfb p50 +{statistics.median(c_ttfb) - statistics.median(d_ttfb):.2f} ms, "
          f"total p50 +{statistics.median(c_total) - statistics.median(d_total):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
