#!/usr/bin/env python3
"""How fast a client's disconnect reaches the upstream: the time from the client closing its
socket to the upstream seeing its own connection closed, in each state a request can be in.

    .venv/bin/python bench/cancel.py -n 20

Starts a fake OpenAI-compatible upstream and Cortex (gunicorn + gevent) on loopback ports, with
first-token and idle timeouts of 60 s so that only the disconnect can close the upstream. Needs
the dev requirements (it reuses the test suite's fake upstream and gateway runner).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeOpenAI, Hang, Stream  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402

BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def request(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))  # fmt: skip
    return client


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def measure(state: str, n: int) -> list[float]:
    gate = threading.Event()
    behaviour = {
        "before the response": Hang(seconds=60),
        "waiting for the first token": Stream(chunks=["a", "b"], gate=gate, gate_at=0),
        "mid-stream pause": Stream(chunks=["first ", "second"], gate=gate, gate_at=1),
    }[state]
    fake = FakeOpenAI(chat=behaviour).start()
    toml = f'[[workers]]\nname = "up"\nbase_url = "{fake.base_url}"\nmodels = ["fake-model"]\n'
    env = {"FIRST_TOKEN_TIMEOUT": "60", "IDLE_TIMEOUT": "60", "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(Path(tmp), toml=toml, env=env)
        gateway.start()
        samples = []
        try:
            for i in range(n):
                client = request(gateway.port)
                if state == "before the response":
                    wait_for(lambda i=i: len(fake.hung) > i)
                    closed = fake.hung[i].closed_by_peer
                else:
                    wait_for(lambda i=i: len(fake.streams) > i)
                    if state == "mid-stream pause":
                        received = b""
                        while b"first " not in received:
                            received += client.recv(65536)
                    closed = fake.streams[i].closed_by_peer
                started = time.perf_counter()
                client.close()
                exchange = fake.hung[i] if state == "before the response" else fake.streams[i].exchange
                while not exchange.peer_closed():  # polled here, at 1 ms, rather than by the fake
                    if time.perf_counter() - started > 10:
                        raise TimeoutError("the upstream connection stayed open")
                    time.sleep(0.001)
                samples.append(time.perf_counter() - started)
                assert closed.is_set()
        finally:
            gate.set()
            gateway.stop()
            fake.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="disconnects per state")
    args = parser.parse_args()
    print(f"client close -> upstream connection closed, {args.n} disconnects per state (ms)")
    for state in ("before the response", "waiting for the first token", "mid-stream pause"):
        samples = sorted(s * 1000 for s in measure(state, args.n))
        print(f"  {state:30s} p50 {statistics.median(samples):6.1f}   max {samples[-1]:6.1f}")


if __name__ == "__main__":
    main()
