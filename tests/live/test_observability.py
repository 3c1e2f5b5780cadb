"""Metrics and request logs through gunicorn with two worker processes: the counts of every
process add up in one scrape, each request has one JSON log line and an id, and no key ever
appears in a log, a scrape, a status page or a response."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.http_server import eventually
from tests.fakes.openai_server import Error, Hang, Stream
from tests.gateway_process import GatewayProcess
from tests.live.helpers import CHAT, toml_worker, worker_toml
from tests.live.test_disconnect import read_until, send

JSON_LOGS = {"LOG_FORMAT": "json", "CIRCUIT_FAILURES": "1000"}


def scrape(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    with requests.get(gw.url + "/metrics", timeout=10) as response:
        assert response.status_code == 200
        text = response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    )


def request_lines(gw: GatewayProcess) -> list[dict[str, object]]:
    lines = []
    for raw in gw.log().splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("logger") == "cortex.request":
                lines.append(line)
    return lines


def post(gw: GatewayProcess, path: str, body: dict[str, object], **headers: str) -> requests.Response:
    """A fresh connection per request (no Session), so the kernel may hand it to either process."""
    response = requests.post(gw.url + path, json=body, headers={"Connection": "close", **headers}, timeout=10)
    response.content  # noqa: B018 - read the whole stream
    response.close()
    return response


def traffic() -> Iterator[tuple[str, dict[str, object], bool]]:
    """(path, body, succeeds) in a fixed rotation: streamed and whole, native and OpenAI, and a
    model nobody serves."""
    while True:
        yield "/api/chat", CHAT, True
        yield "/api/chat/complete", CHAT, True
        yield "/v1/chat/completions", {**CHAT, "model": "fake-model", "stream": True}, True
        yield "/v1/chat/completions", {**CHAT, "model": "fake-model"}, True
        yield "/api/chat", {**CHAT, "model": "no-such-model"}, False


def test_counts_of_both_worker_processes_add_up_in_one_scrape(fake_openai, gateway):
    broken = fake_openai(chat=Error(500))
    good = fake_openai(chat=Stream(chunks=["all ", "good"]))
    gw = gateway(
        worker_toml("broken", broken.base_url, priority=1) + worker_toml("good", good.base_url, priority=2),
        env=JSON_LOGS,
        workers=2,
    )
    before = scrape(gw)
    sent, succeeded, streamed, failovers, native_streams = 0, 0, 0, 0, 0
    rotation = traffic()
    # Until both processes have served requests (by the pids of the log lines), at least 40.
    while sent < 40 or len({line["pid"] for line in request_lines(gw) if line["route"] != "/api/health"}) < 2:
        assert sent < 400, "one process served everything"
        path, body, ok = next(rotation)
        response = post(gw, path, body)
        sent += 1
        native_streams += path == "/api/chat"
        if ok:
            assert response.status_code == 200, response.text
            succeeded += 1
            streamed += bool(path == "/api/chat" or body.get("stream"))
            failovers += int(response.headers.get("X-Cortex-Attempts") or response.json()["attempts"]) - 1
        else:
            assert response.status_code == 404
    time.sleep(0.2)  # the last stream's line is written in the relay's finally, after the body
    after = scrape(gw)

    assert total(after, "cortex_requests_total") == sent
    assert total(after, "cortex_requests_total", provider="good", model="fake-model", outcome="completed") == succeeded
    assert (
        total(after, "cortex_requests_total", provider="none", model="none", outcome="model_not_found")
        == sent - succeeded
    )
    assert total(after, "cortex_time_to_first_token_seconds_count", provider="good") == succeeded
    assert total(after, "cortex_stream_duration_seconds_count", provider="good") == streamed
    assert failovers == succeeded  # the broken worker is tried first every time
    assert total(after, "cortex_failovers_total", reason="server") == failovers
    assert total(after, "cortex_streams_in_flight") == 0
    # the exporter's counter, also summed over both processes (its scrapes are not counted)
    assert total(after, "flask_http_request_total") - total(before, "flask_http_request_total") == sent
    assert total(after, "flask_http_request_duration_seconds_count", url_rule="/api/chat") == native_streams
    assert total(after, "cortex_worker_up", provider="good") == 1

    lines = [line for line in request_lines(gw) if line["route"] != "/api/health"]
    assert len(lines) == sent and len({line["pid"] for line in lines}) == 2
    assert len({line["request_id"] for line in lines}) == sent
    done = [line for line in lines if line["outcome"] == "completed"]
    assert len(done) == succeeded
    assert all(line["provider"] == "good" and line["attempts"] == 2 and line["status"] == 200 for line in done)
    assert all(line["duration_ms"] >= line["ttft_ms"] > 0 for line in done)  # type: ignore[operator]


def test_request_ids_on_streams_and_errors_and_in_the_log(fake_openai, gateway):
    good = fake_openai()
    gw = gateway(worker_toml("good", good.base_url), env={**JSON_LOGS, "CORTEX_API_KEYS": "sk-client-key-0001"})
    auth = {"Authorization": "Bearer sk-client-key-0001"}

    stream = post(gw, "/api/chat", CHAT, **auth, **{"X-Request-ID": "client-chosen-1"})
    refused = post(gw, "/api/chat", CHAT, **{"X-Request-ID": "refused:2"})
    missing = post(gw, "/v1/chat/completions", {**CHAT, "model": "nope"}, **auth, **{"X-Request-ID": "bad id!"})
    assert (stream.status_code, refused.status_code, missing.status_code) == (200, 401, 404)
    assert stream.headers["X-Request-ID"] == "client-chosen-1" and refused.headers["X-Request-ID"] == "refused:2"
    generated = missing.headers["X-Request-ID"]
    assert generated != "bad id!" and len(generated) == 32

    time.sleep(0.2)
    lines = {line["request_id"]: line for line in request_lines(gw)}
    assert lines["client-chosen-1"]["outcome"] == "completed" and lines["client-chosen-1"]["client"] == "key-1"
    assert lines["client-chosen-1"]["output_tokens"] == 5 and lines["client-chosen-1"]["route"] == "/api/chat"
    assert (lines["refused:2"]["status"], lines["refused:2"]["outcome"]) == (401, "unauthorized")
    assert (lines[generated]["status"], lines[generated]["outcome"]) == (404, "model_not_found")
    assert not any("prompt" in line or "answer" in line for line in lines.values())  # LOG_CONTENT is off


def test_content_is_logged_with_log_content(fake_openai, gateway):
    good = fake_openai(chat=Stream(chunks=["the ", "answer"]))
    gw = gateway(worker_toml("good", good.base_url), env={**JSON_LOGS, "LOG_CONTENT": "true"})
    secret = {"messages": [{"role": "user", "content": "my private question"}]}
    post(gw, "/api/chat", secret, **{"X-Request-ID": "with-content"})
    time.sleep(0.2)
    [line] = [x for x in request_lines(gw) if x["request_id"] == "with-content"]
    assert line["prompt"] == secret["messages"] and line["answer"] == "the answer"


UPSTREAM_KEYS = ["sk-UPSTREAM-SECRET-refused-7f3a", "sk-UPSTREAM-SECRET-valid-91c2"]
CLIENT_KEY = "ck-CLIENT-SECRET-55aa01"
WRONG_CLIENT_KEY = "ck-WRONG-SECRET-presented-0b7e"
ADMIN_TOKEN = "adm-ADMIN-SECRET-token-3d9f"
SECRETS = [*UPSTREAM_KEYS, CLIENT_KEY, WRONG_CLIENT_KEY, ADMIN_TOKEN]


def test_no_key_appears_in_logs_metrics_status_or_responses(fake_openai, gateway):
    upstream = fake_openai(valid_keys={UPSTREAM_KEYS[1]})  # the first key gets a 401
    refusing = fake_openai(valid_keys={"sk-something-else-entirely"})
    gw = gateway(
        toml_worker(name="refusing", base_url=refusing.base_url, models=["fake-model"], priority=1,
                    api_keys=[UPSTREAM_KEYS[0]])
        + toml_worker(name="main", base_url=upstream.base_url, models=["fake-model"], priority=2,
                      api_keys=UPSTREAM_KEYS),
        env={"CORTEX_API_KEYS": CLIENT_KEY, "CORTEX_ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "debug"},
        workers=2,
    )  # fmt: skip
    good = {"Authorization": f"Bearer {CLIENT_KEY}"}
    wrong = {"Authorization": f"Bearer {WRONG_CLIENT_KEY}"}
    seen: list[str] = []
    for _ in range(3):
        for path, body in (
            ("/api/chat", CHAT),
            ("/api/chat/complete", CHAT),
            ("/v1/chat/completions", {**CHAT, "model": "fake-model", "stream": True}),
            ("/v1/chat/completions", {**CHAT, "model": "fake-model"}),
        ):
            for headers in (good, wrong):
                response = post(gw, path, body, **headers)
                assert response.status_code == (200 if headers is good else 401), response.text
                seen.append(response.text + json.dumps(dict(response.headers)))
    for path in ("/api/providers", "/api/health", "/metrics", "/v1/models"):
        response = requests.get(gw.url + path, headers=good, timeout=10)
        seen.append(response.text + json.dumps(dict(response.headers)))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for method, path, headers, status in (
        ("get", "/api/admin/workers", admin, 200),
        ("post", "/api/admin/workers/main/keys/1/enable", admin, 200),
        ("post", "/api/admin/health-check", admin, 200),
        ("get", "/api/admin/workers", wrong, 401),
        ("get", "/api/admin/workers", good, 401),  # a client key does not open the admin API
    ):
        response = getattr(requests, method)(gw.url + path, headers=headers, timeout=10)
        assert response.status_code == status, response.text
        seen.append(response.text + json.dumps(dict(response.headers)))
    time.sleep(0.2)
    assert "attempt failed: refusing: auth HTTP 401" in gw.log()  # the failures did happen
    everything = gw.log() + "".join(seen)
    for secret in SECRETS:
        assert secret not in everything, f"{secret} leaked"


def test_streams_are_accounted_when_they_end_however_they_end(fake_openai, gateway):
    gate = threading.Event()
    gated = fake_openai(chat=Stream(chunks=["first ", "second"], gate=gate, gate_at=1))
    late = fake_openai(chat=Stream(first_delay=0.8, cut_after=0))
    hung = fake_openai(chat=Hang(seconds=30))
    gw = gateway(
        worker_toml("gated", gated.base_url) + worker_toml("late", late.base_url) + worker_toml("hung", hung.base_url),
        env={**JSON_LOGS, "SSE_KEEPALIVE_INTERVAL": "0.3", "FIRST_TOKEN_TIMEOUT": "60", "IDLE_TIMEOUT": "60"},
    )
    try:
        # 1. the client leaves mid-stream, while the upstream pauses: only the watch notices
        client = send(gw.port, "/api/chat", {**CHAT, "provider": "gated"}, "X-Request-ID: left-mid-stream\r\n")
        read_until(client, b"first ")
        client.close()
        # 2. keep-alives commit the 200, then the only worker fails: an error event in the stream
        refused = post(gw, "/api/chat", {**CHAT, "provider": "late"}, Accept="text/event-stream",
                       **{"X-Request-ID": "refused-in-stream"})  # fmt: skip
        assert refused.status_code == 200 and b"no_workers_available" in refused.content
        # 3. the client leaves a whole-answer request before the upstream said anything
        client = send(gw.port, "/api/chat/complete", {**CHAT, "provider": "hung"}, "X-Request-ID: left-early\r\n")
        time.sleep(0.5)
        client.close()
        assert eventually(lambda: {"left-mid-stream", "left-early"} <= {x["request_id"] for x in request_lines(gw)})
    finally:
        gate.set()
    lines = {line["request_id"]: line for line in request_lines(gw)}
    mid, in_stream, early = lines["left-mid-stream"], lines["refused-in-stream"], lines["left-early"]
    assert (mid["status"], mid["outcome"], mid["provider"], mid["ttft_ms"] is not None) == (
        200, "client_disconnected", "gated", True
    )  # fmt: skip
    assert (in_stream["status"], in_stream["outcome"], in_stream["error"]) == (
        200,
        "no_workers",
        "no_workers_available",
    )
    assert (early["status"], early["outcome"], early["provider"]) == (499, "client_disconnected", None)
    samples = scrape(gw)
    assert total(samples, "cortex_requests_total", outcome="client_disconnected") == 2
    assert total(samples, "cortex_requests_total", provider="none", outcome="no_workers") == 1
    assert total(samples, "cortex_stream_duration_seconds_count") == 2  # the two streams
    assert total(samples, "cortex_streams_in_flight") == 0


def test_a_dead_worker_process_keeps_its_counts_and_loses_its_live_gauges(fake_openai, gateway, tmp_path):
    good = fake_openai()
    state = tmp_path / "state"
    gw = gateway(worker_toml("good", good.base_url), env={**JSON_LOGS, "CORTEX_STATE_DIR": str(state)}, workers=2)
    sent = 0
    while sent < 20 or len({line["pid"] for line in request_lines(gw) if line["route"] == "/api/chat"}) < 2:
        assert sent < 400, "one process served everything"
        assert post(gw, "/api/chat", CHAT).status_code == 200
        sent += 1
    victim = int(request_lines(gw)[-1]["pid"])  # type: ignore[call-overload]
    metrics_dir = state / "metrics"
    assert list(metrics_dir.glob(f"gauge_livesum_{victim}.db"))  # cortex_streams_in_flight of that process
    os.kill(victim, signal.SIGKILL)
    assert eventually(lambda: not list(metrics_dir.glob(f"gauge_live*_{victim}.db")), timeout=10)
    assert eventually(lambda: "Booting worker" in gw.log().split(f"(pid:{victim})")[-1], timeout=10)
    samples = scrape(gw)
    assert total(samples, "cortex_requests_total", outcome="completed") == sent  # the dead process's counts stay
    assert total(samples, "cortex_streams_in_flight") == 0
    assert post(gw, "/api/chat", CHAT).status_code == 200
    # the replacement was forked after child_exit ran in the master, which imports nothing
    # networked: the fixture fails the test on a MonkeyPatchWarning or a traceback in the log
