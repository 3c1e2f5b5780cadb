#!/usr/bin/env python3
"""What each edge (client auth, rate limits, CORS) adds per request, in-process.

    .venv/bin/python bench/edges.py [-n 1500]

Sends the same non-streaming /v1 request through Flask's test client to the demo worker (no
delay), first with no edge on, then with one edge at a time, and prints the difference in
milliseconds per request. No network and no gunicorn: this isolates the edges' own Python
cost from the server's; the shared harness (../shared/bench) measures the whole server.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app  # noqa: E402
from app.settings import load_settings  # noqa: E402

BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
KEY = "sk-bench-client-1"


def per_request_ms(env: dict[str, str], count: int) -> float:
    app = create_app(load_settings({"DEMO_DELAY_MS": "0", **env}))
    logging.getLogger("cortex").setLevel("WARNING")  # the request log is measured by the harness
    client = app.test_client()
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(100):
        client.post("/v1/chat/completions", json=BODY, headers=headers)
    started = time.perf_counter()
    for _ in range(count):
        client.post("/v1/chat/completions", json=BODY, headers=headers)
    return (time.perf_counter() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1500, help="requests per configuration")
    count = parser.parse_args().n
    state = tempfile.mkdtemp(prefix="cortex-bench-")
    base = per_request_ms({}, count)
    print(f"baseline, no edge: {base:.3f} ms/req")
    for name, env in [
        ("client auth (CORTEX_API_KEYS)", {"CORTEX_API_KEYS": KEY}),
        ("RATE_LIMIT, memory://", {"RATE_LIMIT": "10000000/minute", "RATELIMIT_STORAGE_URI": "memory://"}),
        ("RATE_LIMIT, the shared SQLite file", {"RATE_LIMIT": "10000000/minute", "CORTEX_STATE_DIR": state}),
        ("CORS_ORIGINS=*", {"CORS_ORIGINS": "*"}),
    ]:
        print(f"{name}: {per_request_ms(env, count) - base:+.3f} ms/req")


if __name__ == "__main__":
    main()
