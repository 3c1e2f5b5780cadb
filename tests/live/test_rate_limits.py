"""Rate limits through the real server: one limit across the processes of one master (the
SQLite store) and across two masters (a shared Redis), the 429 as the openai SDK sees it,
X-Forwarded-For, a Redis that is down, the per-key upstream quota (rpm), and a preflight."""

from __future__ import annotations

import re
import threading

import openai
import pytest
import requests

from tests.fakes.openai_server import Stream
from tests.gateway_process import free_port
from tests.live.helpers import CHAT, toml_worker, worker_toml

pytestmark = pytest.mark.live

#: gunicorn's access log with the serving process's pid (%(p)s, written <pid>), path and status.
ACCESS_LOG = {"ACCESS_LOG": "-", "GUNICORN_CMD_ARGS": "--access-logformat 'served-by=%(p)s %(U)s status=%(s)s'"}


def post(url: str, body: dict[str, object] = CHAT, **kw) -> requests.Response:  # type: ignore[no-untyped-def]
    """One request on its own connection (a fresh one each time: it may reach any process)."""
    with requests.Session() as session:
        return session.post(url, json=body, timeout=10, **kw)


def test_two_gateways_sharing_redis_enforce_one_limit(fake_openai, gateway, redis_server):
    upstream = fake_openai()
    env = {"RATE_LIMIT": "5/minute", "RATELIMIT_STORAGE_URI": redis_server}
    a = gateway(worker_toml("up", upstream.base_url), env)
    b = gateway(worker_toml("up", upstream.base_url), env)
    responses = [post((a if i % 2 == 0 else b).url + "/api/chat/complete") for i in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["4", "3", "2", "1", "0", "0"]
    assert int(responses[-1].headers["Retry-After"]) >= 1
    assert responses[-1].json()["error"] == "Rate limit exceeded"
    assert post(a.url + "/api/chat/complete").status_code == 429  # both see the spent budget
    assert len(upstream.chat_requests) == 5
    assert "counters in redis://127.0.0.1:" in a.log()


def test_one_master_with_two_processes_enforces_one_exact_limit_without_redis(fake_openai, gateway):
    """Bursts of concurrent clients, each on its own connection, until both worker processes have
    answered some: exactly the limit gets through. With per-process counters every process
    would let the whole limit through (and a process that had served few requests would never
    answer 429)."""
    upstream = fake_openai(chat=Stream(delay=0.02))
    gw = gateway(worker_toml("up", upstream.base_url), {"RATE_LIMIT": "12/minute", **ACCESS_LOG}, workers=2)
    assert "limits.sqlite3" in gw.log()
    codes: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        response = post(gw.url + "/api/chat")
        with lock:
            codes.append(response.status_code)

    def served() -> list[tuple[str, str]]:
        return re.findall(r"served-by=<(\d+)> /api/chat status=(\d+)", gw.log())

    for _ in range(30):
        threads = [threading.Thread(target=client) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        if len(codes) >= 20 and len({pid for pid, _ in served()}) == 2:
            break
    assert len({pid for pid, _ in served()}) == 2, f"one process served everything: {served()}"
    assert codes.count(200) == 12 and codes.count(429) == len(codes) - 12
    assert len(upstream.chat_requests) == 12


def test_openai_sdk_raises_rate_limit_error(fake_openai, gateway):
    upstream = fake_openai()
    gw = gateway(worker_toml("up", upstream.base_url), {"RATE_LIMIT": "1/minute"})
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="anything", max_retries=0, timeout=10) as client:
        client.chat.completions.create(model="fake-model", messages=CHAT["messages"])
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="fake-model", messages=CHAT["messages"])
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-limit"] == "1"


def test_forwarded_for_is_not_trusted_by_default_and_is_with_trusted_proxies(fake_openai, gateway):
    upstream = fake_openai()
    plain = gateway(worker_toml("up", upstream.base_url), {"RATE_LIMIT": "2/minute"})
    spoofed = [post(plain.url + "/api/chat/complete", headers={"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(3)]
    assert [r.status_code for r in spoofed] == [200, 200, 429]

    proxied = gateway(worker_toml("up", upstream.base_url), {"RATE_LIMIT": "2/minute", "TRUSTED_PROXIES": "1"})
    one = [post(proxied.url + "/api/chat/complete", headers={"X-Forwarded-For": "198.51.100.1"}) for _ in range(3)]
    two = [post(proxied.url + "/api/chat/complete", headers={"X-Forwarded-For": "198.51.100.2"}) for _ in range(2)]
    assert [r.status_code for r in one + two] == [200, 200, 429, 200, 200]


def test_a_redis_that_is_down_never_stops_serving(fake_openai, gateway):
    upstream = fake_openai()
    down = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    gw = gateway(worker_toml("up", upstream.base_url), {"RATE_LIMIT": "3/minute", "RATELIMIT_STORAGE_URI": down})
    codes = [post(gw.url + "/api/chat/complete").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # counted in memory meanwhile: still a limit
    log = gw.log()
    assert "Rate limit storage unreachable" in log
    assert "hunter2secret" not in log


def test_upstream_rpm_caps_a_key_then_fails_over(fake_openai, gateway):
    limited, spare = fake_openai(), fake_openai()
    gw = gateway(
        toml_worker(name="limited", base_url=limited.base_url, models=["fake-model"], priority=1,
                    api_keys=["sk-only-key"], rpm=2)
        + worker_toml("spare", spare.base_url, priority=2),
        workers=2,
    )  # fmt: skip
    served = [post(gw.url + "/api/chat/complete").json()["provider"] for _ in range(5)]
    assert served == ["limited", "limited", "spare", "spare", "spare"]
    assert len(limited.chat_requests) == 2 and len(spare.chat_requests) == 3


def test_upstream_rpm_over_quota_everywhere_is_a_429_with_retry_after(fake_openai, gateway):
    limited = fake_openai()
    gw = gateway(toml_worker(name="limited", base_url=limited.base_url, models=["fake-model"],
                             api_keys=["sk-only-key"], rpm=2))  # fmt: skip
    codes = [post(gw.url + "/api/chat").status_code for _ in range(2)]
    refused = post(gw.url + "/v1/chat/completions", {**CHAT, "model": "fake-model"})
    assert codes == [200, 200]
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "rpm" in refused.json()["error"]["message"]
    assert len(limited.chat_requests) == 2


def test_preflight_through_the_server(fake_openai, gateway):
    upstream = fake_openai()
    gw = gateway(
        worker_toml("up", upstream.base_url),
        {"CORS_ORIGINS": "https://app.example", "RATE_LIMIT": "1/minute", "CORTEX_API_KEYS": "sk-cortex-0001"},
    )
    for _ in range(2):
        with requests.options(
            gw.url + "/v1/chat/completions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
            timeout=10,
        ) as response:  # fmt: skip
            assert response.status_code in (200, 204)
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    ok = post(
        gw.url + "/api/chat/complete",
        headers={"Authorization": "Bearer sk-cortex-0001", "Origin": "https://app.example"},
    )
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-RateLimit-Remaining" in ok.headers["Access-Control-Expose-Headers"]
