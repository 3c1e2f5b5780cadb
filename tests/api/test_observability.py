"""Request ids, the request log and the metrics, in-process through Flask's test client (one
process, so the metrics are read straight from the app's registry)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.request_log import JsonFormatter
from tests.live.helpers import toml_worker

CHAT = {"messages": [{"role": "user", "content": "the secret recipe is 42"}], "max_tokens": 3}


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.cortex_fields for r in caplog.records if r.name == "cortex.request"]  # type: ignore[attr-defined]


def sample(client, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    value = client.application.extensions["cortex_metrics"].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="cortex")
    return caplog


# --- request ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["abc-123", "req:2026.11.25_x", "A" * 128])
def test_a_sane_request_id_is_echoed(client, given):
    assert client.get("/api/health", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


@pytest.mark.parametrize("given", [None, "", "A" * 129, "has space", "semi;colon", "naïve", "a\tb"])
def test_a_missing_or_insane_request_id_is_replaced(client, given):
    headers = {} if given is None else {"X-Request-ID": given}
    returned = client.get("/api/health", headers=headers).headers["X-Request-ID"]
    assert returned != given and len(returned) == 32 and int(returned, 16) >= 0


def test_every_response_has_a_request_id_errors_and_streams_included(make_client):
    secured = make_client(env={"CORTEX_API_KEYS": "sk-client-key-0001"})
    auth = {"Authorization": "Bearer sk-client-key-0001"}
    responses = [
        secured.post("/api/chat", json=CHAT),  # 401 from a before_request hook
        secured.get("/no/such/route"),  # 404
        secured.get("/api/chat", headers=auth),  # 405
        secured.post("/api/chat", data="{", content_type="application/json", headers=auth),  # 400
        secured.post("/api/chat", json=CHAT, headers=auth),  # a stream
        secured.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth),  # 404 model
    ]
    assert [r.status_code for r in responses] == [401, 404, 405, 400, 200, 404]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert len(set(ids)) == len(ids)
    for response in responses:  # else the stream's line is written whenever the GC collects it
        response.close()


# --- the request log -----------------------------------------------------------------------------


def test_a_stream_is_logged_once_when_it_ends_not_when_the_view_returns(client, logs):
    response = client.post("/api/chat", json=CHAT, headers={"X-Request-ID": "stream-1"})
    assert request_lines(logs) == []  # the view has returned; the body is not read yet
    response.get_data()
    [line] = request_lines(logs)
    assert line["request_id"] == "stream-1" and line["route"] == "/api/chat" and line["method"] == "POST"
    assert line["status"] == 200 and line["outcome"] == "completed" and line["provider"] == "demo"
    assert line["model"] == "cortex-demo" and line["attempts"] == 1 and line["client"] is None
    assert line["input_tokens"] == 5 and line["output_tokens"] == 3
    assert isinstance(line["ttft_ms"], float) and line["duration_ms"] >= line["ttft_ms"]  # type: ignore[operator]
    assert "prompt" not in line and "answer" not in line


def test_errors_refused_by_hooks_are_logged_with_their_outcome_and_client(make_client, logs):
    client = make_client(env={"CORTEX_API_KEYS": "sk-client-key-0001"})
    client.post("/v1/chat/completions", json={**CHAT, "model": "auto"})
    client.post("/api/chat/complete", json={**CHAT, "model": "missing-model"},
                headers={"Authorization": "Bearer sk-client-key-0001"})  # fmt: skip
    refused, missing = request_lines(logs)
    assert (refused["status"], refused["outcome"], refused["error"], refused["client"]) == (
        401, "unauthorized", "invalid_api_key", None
    )  # fmt: skip
    assert (missing["status"], missing["outcome"], missing["client"], missing["model"]) == (
        404, "model_not_found", "key-1", "missing-model"
    )  # fmt: skip
    assert "sk-client-key-0001" not in repr(logs.records) + logs.text


def test_health_and_metrics_are_logged_at_debug(client, logs):
    client.get("/api/health")
    client.get("/metrics")
    client.get("/api/providers")
    levels = {r.cortex_fields["route"]: r.levelno for r in logs.records if r.name == "cortex.request"}  # type: ignore[attr-defined]
    assert levels == {"/api/health": logging.DEBUG, "/metrics": logging.DEBUG, "/api/providers": logging.INFO}


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/complete", "/v1/chat/completions"])
def test_content_is_logged_only_with_log_content(make_client, logs, path):
    body = {**CHAT, "model": "cortex-demo"} if path.startswith("/v1") else CHAT
    make_client().post(path, json=body).get_data()
    make_client(env={"LOG_CONTENT": "true"}).post(path, json=body).get_data()
    quiet, loud = request_lines(logs)
    assert "secret recipe" not in json.dumps(quiet)
    assert loud["prompt"] == [{"role": "user", "content": "the secret recipe is 42"}]
    assert loud["answer"] == "Hello from Cortex! "
    assert loud["outcome"] == "completed"


def test_json_lines_parse_and_carry_the_fields(client, logs):
    client.post("/v1/chat/completions", json={**CHAT, "model": "cortex-demo", "stream": True}).get_data()
    [record] = [r for r in logs.records if r.name == "cortex.request"]
    line = json.loads(JsonFormatter().format(record))
    assert {"ts", "level", "pid", "request_id", "method", "route", "status", "client", "provider", "model",
            "attempts", "ttft_ms", "duration_ms", "input_tokens", "output_tokens", "outcome"} <= set(line)  # fmt: skip
    assert line["route"] == "/v1/chat/completions" and line["level"] == "info" and line["outcome"] == "completed"


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_endpoint_is_served_parses_and_is_not_tracked_itself(client):
    client.post("/api/chat", json=CHAT).get_data()
    for _ in range(3):
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"cortex_requests", "cortex_time_to_first_token_seconds", "cortex_stream_duration_seconds",
            "flask_http_request", "flask_http_request_duration_seconds", "cortex_worker_up"} <= set(families)  # fmt: skip
    rules = {s.labels.get("url_rule") for s in families["flask_http_request_duration_seconds"].samples}
    assert rules == {"/api/chat"}  # /metrics is not tracked
    up = {s.labels["provider"]: s.value for s in families["cortex_worker_up"].samples}
    assert up == {"demo": 1.0}


def test_metrics_is_open_when_client_auth_is_on(make_client):
    assert make_client(env={"CORTEX_API_KEYS": "sk-client-key-0001"}).get("/metrics").status_code == 200


def test_chat_requests_are_counted_by_provider_model_and_outcome(client):
    client.post("/api/chat", json=CHAT).get_data()
    client.post("/api/chat/complete", json=CHAT)
    client.post("/api/chat", json={**CHAT, "model": "nobody-serves-this"})
    client.post("/api/chat", json={"messages": []})
    client.get("/api/health")  # not a chat request
    assert sample(client, "cortex_requests_total", provider="demo", model="cortex-demo", outcome="completed") == 2
    assert sample(client, "cortex_requests_total", provider="none", model="none", outcome="model_not_found") == 1
    assert sample(client, "cortex_requests_total", provider="none", model="none", outcome="client_error") == 1
    assert sample(client, "cortex_time_to_first_token_seconds_count", provider="demo") == 2
    assert sample(client, "cortex_stream_duration_seconds_count", provider="demo") == 1
    assert sample(client, "cortex_input_tokens_total", provider="demo") == 10
    assert sample(client, "cortex_output_tokens_total", provider="demo") == 6
    assert sample(client, "cortex_streams_in_flight") == 0


def test_a_scan_of_random_paths_adds_no_label_values(client):
    for _ in range(30):
        client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")
    text = client.get("/metrics").get_data(as_text=True)
    values = {v for f in text_string_to_metric_families(text) for s in f.samples for v in s.labels.values()}
    assert "none" in values and not any(len(v) >= 32 for v in values)


def test_random_model_names_never_become_label_values(make_client, fake_openai):
    fake = fake_openai()
    # No model list: the worker serves any name a client sends, and the label is "other".
    client = make_client(env={"DEMO_PROVIDER": "off"}, toml=toml_worker(name="open", base_url=fake.base_url))
    names = [f"model-{uuid.uuid4().hex}" for _ in range(50)]
    for name in names:
        client.post("/api/chat/complete", json={**CHAT, "model": name})
    text = client.get("/metrics").get_data(as_text=True)
    assert not any(name in text for name in names)
    requests = [s for f in text_string_to_metric_families(text) if f.name == "cortex_requests" for s in f.samples
                if s.name == "cortex_requests_total"]  # fmt: skip
    assert [(s.labels, s.value) for s in requests] == [
        ({"provider": "open", "model": "other", "outcome": "completed"}, 50.0)
    ]


def test_failovers_and_key_cooldowns_are_counted(make_client, fake_openai):
    from tests.fakes.openai_server import Error

    limited = fake_openai()
    limited.rate_limited_keys["sk-upstream-key-0001"] = "30"
    broken = fake_openai(chat=Error(500))
    good = fake_openai()
    toml = (
        toml_worker(
            name="limited",
            base_url=limited.base_url,
            priority=1,
            api_keys=["sk-upstream-key-0001"],
            models=["fake-model"],
        )
        + toml_worker(name="broken", base_url=broken.base_url, priority=2, models=["fake-model"])
        + toml_worker(name="good", base_url=good.base_url, priority=3, models=["fake-model"])
    )
    client = make_client(env={"DEMO_PROVIDER": "off"}, toml=toml)
    response = client.post("/api/chat/complete", json=CHAT)
    assert response.status_code == 200 and response.get_json()["attempts"] == 3
    assert sample(client, "cortex_failovers_total", reason="rate_limited") == 1
    assert sample(client, "cortex_failovers_total", reason="server") == 1
    assert sample(client, "cortex_key_cooldowns_total", provider="limited") == 1
    client.post("/api/chat/complete", json=CHAT)  # the limited key rests: keys_unavailable
    assert sample(client, "cortex_failovers_total", reason="keys_unavailable") == 1


def test_upstream_and_client_rate_limits_are_told_apart(make_client, fake_openai):
    limited = fake_openai()
    limited.rate_limited_keys["sk-upstream-key-0001"] = "30"
    client = make_client(
        env={"DEMO_PROVIDER": "off"},
        toml=toml_worker(
            name="limited", base_url=limited.base_url, api_keys=["sk-upstream-key-0001"], models=["fake-model"]
        ),
    )
    assert client.post("/api/chat", json=CHAT).status_code == 429
    assert sample(client, "cortex_rate_limited_requests_total", scope="upstream") == 1
    assert sample(client, "cortex_requests_total", provider="none", model="none", outcome="rate_limited") == 1
    assert sample(client, "cortex_rate_limited_requests_total", scope="client") == 0


def test_many_apps_in_one_process_each_count_their_own(make_client):
    first, second = make_client(), make_client()
    first.post("/api/chat/complete", json=CHAT)
    assert sample(first, "cortex_requests_total", provider="demo", model="cortex-demo", outcome="completed") == 1
    assert sample(second, "cortex_requests_total", provider="demo", model="cortex-demo", outcome="completed") == 0


def test_a_scrape_reports_the_process_s_idle_upstream_connections_and_loop_watchers(make_client, fake_openai):
    upstream = fake_openai()
    client = make_client(
        env={"DEMO_PROVIDER": "off"}, toml=toml_worker(name="up", base_url=upstream.base_url, models=["fake-model"])
    )
    client.get("/metrics")
    assert sample(client, "cortex_upstream_connections_idle") == 0  # nothing has been sent yet
    assert client.post("/api/chat/complete", json=CHAT).status_code == 200
    client.get("/metrics")
    assert sample(client, "cortex_upstream_connections_idle") == 1  # kept alive for the next request
    assert sample(client, "cortex_event_loop_watchers") >= 0


def test_the_shared_state_gauge_is_1_without_redis_and_0_until_redis_is_reached(make_client):
    local = make_client()
    local.get("/metrics")
    assert sample(local, "cortex_shared_state_up") == 1
    assert sample(local, "cortex_shared_state_errors_total") == 0
    configured = make_client({"REDIS_URL": "redis://127.0.0.1:9/0"})
    configured.get("/metrics")
    assert sample(configured, "cortex_shared_state_up") == 0
    assert 'instance="' not in configured.get("/metrics").get_data(as_text=True)  # Prometheus adds it
