"""The admin API under gunicorn with two worker processes: each change is made through one
process and must show in both. Every request opens a fresh connection, and each admin answer
names the process that gave it (`pid`), so a test can wait until it has heard from both.
Back-to-back connections tend to reach the process that just answered; a short pause
before each one spreads them (about evenly, measured on Linux)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.fakes.openai_server import Stream
from tests.live.helpers import CHAT, toml_worker, worker_toml

TOKEN = "live-admin-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"CORTEX_ADMIN_TOKEN": TOKEN}
#: Requests a test may spend hearing from both processes (the kernel picks who accepts).
BOUND = 50
PAUSE = 0.02


def admin(gw, method: str, path: str, **kwargs: Any) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.request(method, gw.url + "/api/admin" + path, headers=AUTH, timeout=10, **kwargs)


def worker_of(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((w for w in body["workers"] if w["name"] == name), None)


def every_process(gw, check: Callable[[dict[str, Any]], bool], between: Callable[[], object] | None = None) -> set[int]:  # type: ignore[no-untyped-def]
    """List workers on fresh connections until two processes have each answered with a view
    that passes `check` (calling `between` before each look); returns the pids that did."""
    passed: set[int] = set()
    for _ in range(BOUND):
        if between is not None:
            between()
            time.sleep(PAUSE)
        body = admin(gw, "GET", "/workers").json()
        if check(body):
            passed.add(body["pid"])
        if len(passed) == 2:
            return passed
        time.sleep(PAUSE)
    raise AssertionError(f"only processes {passed} passed within {BOUND} requests")


def chat(gw, **fields: Any) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.post(gw.url + "/api/chat/complete", json={**CHAT, **fields}, timeout=10)


def test_an_added_worker_is_routed_to_by_every_process(fake_openai, gateway):
    base, extra = fake_openai(), fake_openai()
    gw = gateway(worker_toml("base", base.base_url, priority=10), env=ENV, workers=2)

    worker = {"name": "added", "base_url": extra.base_url, "models": ["fake-model"], "priority": 1,
              "api_keys": ["sk-added-secret-0001"]}  # fmt: skip
    response = admin(gw, "POST", "/workers", json=worker)
    assert response.status_code == 201, response.text
    assert "sk-added-secret" not in response.text

    def used_added_key(body: dict[str, Any]) -> bool:
        added = worker_of(body, "added")
        return added is not None and added["keys"][0]["used"] >= 1  # this process sent it a request

    every_process(gw, used_added_key, between=lambda: chat(gw).raise_for_status())
    assert extra.chat_requests and not base.chat_requests  # priority 1 beats 10 in both
    assert admin(gw, "POST", "/workers", json=worker).status_code == 409


def test_a_removed_worker_finishes_its_streams_and_no_process_routes_to_it(fake_openai, gateway):
    gate = threading.Event()
    doomed, other = fake_openai(chat=Stream(gate=gate)), fake_openai()
    gw = gateway(worker_toml("doomed", doomed.base_url, priority=1) + worker_toml("other", other.base_url, priority=5),
                 env=ENV, workers=2)  # fmt: skip

    with requests.post(gw.url + "/api/chat", json=CHAT, stream=True, timeout=10) as held:
        assert held.headers["X-Cortex-Worker"] == "doomed"
        chunks = held.iter_content(chunk_size=None)
        first = next(chunks)
        removed = admin(gw, "DELETE", "/workers/doomed")
        assert removed.status_code == 200 and removed.json()["removed"] == "doomed"
        gate.set()
        assert (first + b"".join(chunks)).decode() == "Hello from the fake!"  # finished normally

    every_process(gw, lambda body: worker_of(body, "doomed") is None)
    before = len(doomed.chat_requests)
    for _ in range(10):
        assert chat(gw).json()["provider"] == "other"
    assert len(doomed.chat_requests) == before
    assert admin(gw, "DELETE", "/workers/doomed").status_code == 404


def test_a_reload_after_editing_the_file_reaches_every_process(fake_openai, gateway):
    one, two = fake_openai(), fake_openai()
    gw = gateway(worker_toml("one", one.base_url) + worker_toml("gone", one.base_url), env=ENV, workers=2)
    admin(gw, "POST", "/workers", json={"name": "runtime", "provider": "demo"}).raise_for_status()
    every_process(gw, lambda body: worker_of(body, "runtime") is not None)

    config = gw.workdir / "cortex.toml"
    config.write_text(
        worker_toml("one", one.base_url)
        + toml_worker(name="two", base_url=two.base_url, models=["fake-model"], priority=1)
    )
    response = admin(gw, "POST", "/reload")
    assert response.status_code == 200, response.text
    assert response.json()["workers"] == {
        "kept": ["one"],
        "replaced": [],
        "added": ["two"],
        "removed": ["gone", "runtime"],
    }

    every_process(gw, lambda body: [w["name"] for w in body["workers"]] == ["two", "one"])
    for _ in range(6):
        assert chat(gw).json()["provider"] == "two"

    config.write_text("[[workers]]\nname = 'broken'\n")
    refused = admin(gw, "POST", "/reload")
    assert refused.status_code == 422 and "base_url" in refused.json()["details"]
    every_process(gw, lambda body: [w["name"] for w in body["workers"]] == ["two", "one"])


def test_a_key_disabled_in_each_process_is_enabled_in_all_by_one_call(fake_openai, gateway):
    bad, good = "sk-refused-key-00000001", "sk-accepted-key-0000002"
    upstream = fake_openai(valid_keys={good})
    gw = gateway(worker_toml("w", upstream.base_url, keys=[bad, good]), env=ENV, workers=2)

    def key_one(state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda body: worker_of(body, "w")["keys"][0]["state"] == state  # type: ignore[index]

    # Each process's first request tries key 1 (round robin starts there), gets a 401 and
    # disables it, then answers with key 2.
    every_process(gw, key_one("disabled"), between=lambda: chat(gw).raise_for_status())
    response = admin(gw, "POST", "/workers/w/keys/1/enable")
    assert response.status_code == 200 and worker_of({"workers": [response.json()["worker"]]}, "w")
    assert response.json()["worker"]["keys"][0]["state"] == "ready"
    every_process(gw, key_one("ready"))
    listed = admin(gw, "GET", "/workers")
    assert [k["key"] for k in worker_of(listed.json(), "w")["keys"]] == ["sk-…0001", "sk-…0002"]  # type: ignore[index]
    text = listed.text + response.text
    assert bad not in text and good not in text
    assert bad not in gw.log() and good not in gw.log()


def test_a_health_check_now_updates_every_process(fake_openai, gateway):
    upstream = fake_openai()
    gw = gateway(worker_toml("w", upstream.base_url), env=ENV, workers=2)  # HEALTH_CHECK_INTERVAL=0: no probes
    every_process(gw, lambda body: worker_of(body, "w")["health"]["last_check"] is None)  # type: ignore[index]

    response = admin(gw, "POST", "/health-check")
    assert response.status_code == 200
    assert response.json()["workers"]["w"]["status"] == "healthy" and response.json()["last_check"]
    # The process that got the call probed before answering; the other probes in the background.
    every_process(gw, lambda body: worker_of(body, "w")["health"]["status"] == "healthy")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        views = [requests.get(gw.url + "/api/health", timeout=5).json() for _ in range(10)]
        if all(v["workers"]["w"]["status"] == "healthy" and v["last_check"] for v in views):
            break
    else:
        raise AssertionError("a process's /api/health still shows no check")


def test_a_process_started_later_replays_the_journal(fake_openai, gateway):
    """gunicorn replaces a worker process that exits: the new one starts from the file, then
    replays the journal from the last reload, and so agrees with the process that stayed."""
    upstream = fake_openai()
    gw = gateway(worker_toml("base", upstream.base_url), env=ENV, workers=2)
    admin(gw, "POST", "/workers", json={"name": "runtime", "provider": "demo"}).raise_for_status()
    admin(gw, "POST", "/reload").raise_for_status()  # drops "runtime"
    admin(gw, "POST", "/workers", json={"name": "later", "provider": "demo"}).raise_for_status()
    before = every_process(gw, lambda body: worker_of(body, "later") is not None)

    leaving = min(before)
    os.kill(leaving, signal.SIGTERM)
    replayed = re.compile(r"\[(\d+)\] INFO cortex.admin: admin journal: replaying 2 change\(s\)")
    deadline = time.monotonic() + 15  # the old process drains, the new one imports the app
    while not ({int(pid) for pid in replayed.findall(gw.log())} - before):
        assert time.monotonic() < deadline, gw.log()
        time.sleep(0.05)
    names = ["base", "later"]
    after = every_process(gw, lambda body: body["pid"] != leaving and [w["name"] for w in body["workers"]] == names)
    assert leaving not in after and len(after - before) == 1


def test_sighup_restarts_from_the_file_without_replaying_older_changes(fake_openai, gateway):
    upstream = fake_openai()
    gw = gateway(worker_toml("base", upstream.base_url), env=ENV, workers=2)
    admin(gw, "POST", "/workers", json={"name": "runtime", "provider": "demo"}).raise_for_status()
    old = every_process(gw, lambda body: worker_of(body, "runtime") is not None)

    (gw.workdir / "cortex.toml").write_text(
        worker_toml("base", upstream.base_url) + worker_toml("new", upstream.base_url)
    )
    assert gw.process is not None
    gw.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while True:
        try:
            every_process(
                gw, lambda body: body["pid"] not in old and [w["name"] for w in body["workers"]] == ["base", "new"]
            )
            break
        except (AssertionError, requests.ConnectionError):
            assert time.monotonic() < deadline, gw.log()
