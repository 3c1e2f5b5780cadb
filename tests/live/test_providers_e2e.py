"""Every provider type at once, through the real server (gunicorn + gevent), configured by TOML
as an operator would: one worker per type, each on its own fake upstream that speaks that
provider's wire format byte for byte and checks the worker's key.

    worker        type           preset     priority  key header the fake checks
    local-llama   ollama         -          0         (none: a local server)
    groq-fast     openai_compat  groq       20        Authorization: Bearer
    gemini-flash  gemini         gemini     30        x-goog-api-key
    cohere-cmd    cohere         cohere     40        Authorization: Bearer
    claude        anthropic      anthropic  60        x-api-key

Priorities are the catalog's defaults. The failover test has its own gateway and upstreams
(the shared `fake_*` fixtures); the others share one gateway and one set of upstreams per
module, whose health checks (every 0.5 s) list the upstreams' models before any test runs.
Requests are counted at the fakes, which refuse a missing or wrong key as the real services do.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import requests

from tests.fakes import anthropic_server, cohere_server, gemini_server, ollama_server, openai_server
from tests.fakes.factory import fake_factory
from tests.fakes.http_server import Request
from tests.gateway_process import GatewayProcess, gateway_factory
from tests.live.helpers import toml_worker

OLLAMA, GROQ, GEMINI, COHERE, CLAUDE = "local-llama", "groq-fast", "gemini-flash", "cohere-cmd", "claude"
WORKERS = (OLLAMA, GROQ, GEMINI, COHERE, CLAUDE)  # priority order
GROQ_KEY = "gsk_e2e-GROQ-secret-key-0001"
GEMINI_KEY = "AIzaSy-e2e-GEMINI-secret-key-0002"
COHERE_KEY = "co-e2e-COHERE-secret-key-0003"
ANTHROPIC_KEY = "sk-ant-api03-e2e-ANTHROPIC-secret-0004"

PROMPT = "Say hello in four languages"  # every fake counts prompt words as input tokens: 5
CHUNKS = ["Hallo, ", "grüß dich — ", "こんにちは", " 👋🏽"]  # one output token per chunk at every fake
ANSWER = "".join(CHUNKS)
CHAT = {"messages": [{"role": "user", "content": PROMPT}]}


@dataclass(frozen=True)
class Provider:
    """One worker and what its upstream must see and say."""

    worker: str
    type: str
    preset: str | None
    model: str  # the worker's default model
    priority: int  # the catalog's default for its preset or type
    fake: Callable[..., Any]  # the fake upstream's class, and its arguments
    fake_kwargs: Mapping[str, Any]
    chat_path: str  # the chat request's path (and query) at the upstream
    models_path: str  # the model list's path at the upstream (query left out)
    key: str | None
    key_header: str | None  # where the adapter puts the key (as a bearer token in Authorization)
    input_tokens: int  # what the upstream reports for PROMPT
    models: tuple[str, ...]  # the worker's models once the health check listed the upstream's

    def toml(self, base_url: str) -> str:
        fields: dict[str, object] = {"name": self.worker}
        fields.update({"preset": self.preset} if self.preset else {"provider": self.type})
        fields.update(base_url=base_url, default_model=self.model)
        if self.key is not None:
            fields["api_keys"] = [self.key]
        return toml_worker(**fields)

    def key_sent(self, request: Request) -> bool:
        """The request carries this worker's key where the provider wants it (and no key at all
        for a keyless worker)."""
        if self.key_header is None:
            return "authorization" not in request.headers
        expected = f"Bearer {self.key}" if self.key_header == "authorization" else self.key
        return request.headers.get(self.key_header) == expected


PROVIDERS = {
    p.worker: p
    for p in (
        Provider(
            worker=OLLAMA, type="ollama", preset=None, model="llama3.2", priority=0,
            fake=ollama_server.FakeOllama,
            fake_kwargs={"chat": ollama_server.Chat(chunks=CHUNKS, split_utf8=True),
                         "models": ("llama3.2:latest", "qwen3:0.6b")},
            chat_path="/api/chat", models_path="/api/tags", key=None, key_header=None, input_tokens=5,
            models=("llama3.2:latest", "llama3.2", "qwen3:0.6b"),  # the adapter adds the untagged name
        ),
        Provider(
            worker=GROQ, type="openai_compat", preset="groq", model="llama-3.1-8b-instant", priority=20,
            fake=openai_server.FakeOpenAI,
            fake_kwargs={"chat": openai_server.Stream(chunks=CHUNKS), "valid_keys": {GROQ_KEY},
                         "models": ("llama-3.1-8b-instant", "openai/gpt-oss-20b")},
            chat_path="/v1/chat/completions", models_path="/v1/models",
            key=GROQ_KEY, key_header="authorization", input_tokens=5,
            models=("llama-3.1-8b-instant", "openai/gpt-oss-20b"),
        ),
        Provider(
            worker=GEMINI, type="gemini", preset="gemini", model="gemini-2.5-flash", priority=30,
            fake=gemini_server.FakeGemini,
            fake_kwargs={"chat": gemini_server.Stream(chunks=CHUNKS, split_writes=True), "valid_keys": {GEMINI_KEY},
                         "models": ("gemini-2.5-flash", "gemini-3.5-flash-lite")},
            chat_path="/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", models_path="/v1beta/models",
            key=GEMINI_KEY, key_header="x-goog-api-key", input_tokens=5,
            models=("gemini-2.5-flash", "gemini-3.5-flash-lite"),  # not its embedding model
        ),
        Provider(
            worker=COHERE, type="cohere", preset="cohere", model="command-a-03-2025", priority=40,
            fake=cohere_server.FakeCohere,
            fake_kwargs={"chat": cohere_server.Stream(chunks=CHUNKS, split_utf8=True), "valid_keys": {COHERE_KEY}},
            chat_path="/v2/chat", models_path="/v1/models",
            # Cohere's `tokens` count (the billed input + 200 of its own), which the adapter prefers
            key=COHERE_KEY, key_header="authorization", input_tokens=205,
            models=("command-a-03-2025", "command-r7b-12-2024"),  # chat models only: not embed-v4.0
        ),
        Provider(
            worker=CLAUDE, type="anthropic", preset="anthropic", model="claude-haiku-4-5", priority=60,
            fake=anthropic_server.FakeAnthropic,
            fake_kwargs={"chat": anthropic_server.Reply(chunks=CHUNKS, split_utf8=True), "valid_keys": {ANTHROPIC_KEY},
                         "models": ("claude-haiku-4-5", "claude-sonnet-4-5")},
            chat_path="/v1/messages", models_path="/v1/models",
            key=ANTHROPIC_KEY, key_header="x-api-key", input_tokens=5,
            models=("claude-haiku-4-5", "claude-sonnet-4-5"),
        ),
    )
}  # fmt: skip
KEYS = [p.key for p in PROVIDERS.values() if p.key]


def start_upstreams(makers: Mapping[str, Callable[..., Any]], **overrides: Any) -> dict[str, Any]:
    """One fake per worker, from `makers[worker]`; `overrides[worker]` replaces constructor
    arguments (worker names have dashes: pass them with `**{...}`)."""
    return {w: makers[w](**{**PROVIDERS[w].fake_kwargs, **overrides.get(w, {})}) for w in WORKERS}


def config(fakes: Mapping[str, Any]) -> str:
    return "".join(PROVIDERS[w].toml(fakes[w].base_url) for w in WORKERS)


def get(gw: GatewayProcess, path: str) -> requests.Response:
    return requests.get(gw.url + path, timeout=5)


def poll(gw: GatewayProcess, path: str, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """GET `path` until its JSON body satisfies `predicate`; fail with the last body."""
    deadline = time.monotonic() + timeout
    while True:
        body = get(gw, path).json()
        if predicate(body):
            return body
        assert time.monotonic() < deadline, f"{path} never got there: {json.dumps(body, indent=1)}"
        time.sleep(0.05)


def assert_chat_requests(calls: list[Request], provider: Provider, count: int) -> None:
    """Exactly `count` chat requests, each the provider's request for PROMPT and the worker's
    default model, with the worker's key (and no key at all for a keyless worker)."""
    assert len(calls) == count, [c.path for c in calls]
    for call in calls:
        assert call.method == "POST" and call.path == provider.chat_path
        assert provider.key_sent(call)
        assert PROMPT in call.body.decode()
        if provider.type != "gemini":  # Gemini names the model in the path
            assert call.json()["model"] == provider.model  # type: ignore[index]


# --- a. failover across providers that each fail their own way ------------------------------

#: The dispatcher's log line for each failed attempt (the only place a successful request's
#: failed attempts are told).
ATTEMPT_FAILED = re.compile(r"attempt failed: (\S+): (\w+)(?: HTTP (\d+))?: ")
FAILURES = [
    (OLLAMA, "not_found", "404"),
    (GROQ, "rate_limited", "429"),
    (GEMINI, "server", "503"),
    (COHERE, "server", None),
]


def failed_attempts(gw: GatewayProcess) -> list[tuple[str, str, str | None]]:
    return [match.groups() for match in ATTEMPT_FAILED.finditer(gw.log())]  # type: ignore[misc]


def test_failover_past_four_providers_failing_four_ways_to_the_fifth(
    gateway, fake_ollama, fake_openai, fake_gemini, fake_cohere, fake_anthropic
):
    fakes = start_upstreams(
        {OLLAMA: fake_ollama, GROQ: fake_openai, GEMINI: fake_gemini, COHERE: fake_cohere, CLAUDE: fake_anthropic},
        **{
            OLLAMA: {"models": ("qwen3:0.6b",)},  # llama3.2 was never pulled: Ollama's 404
            GEMINI: {"chat": gemini_server.Error(503, gemini_server.OVERLOADED)},  # 503 UNAVAILABLE
            COHERE: {"chat": cohere_server.InBandError(chunks=[])},  # a 200 whose message-end says ERROR
        },
    )
    fakes[GROQ].rate_limited_keys[GROQ_KEY] = "30"  # a 429 with Retry-After on its only key
    gw = gateway(config(fakes), env={"HEALTH_CHECK_INTERVAL": "0.3"})
    poll(gw, "/api/health", lambda b: b["summary"]["healthy"] == 5)

    first = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    assert first.status_code == 200 and first.content.decode("utf-8") == ANSWER
    assert first.headers["X-Cortex-Worker"] == CLAUDE and first.headers["X-Cortex-Attempts"] == "5"
    assert failed_attempts(gw) == FAILURES
    assert f"{COHERE}: server: internal error during generation" in gw.log()  # told in-band, after a 200
    for worker in WORKERS:
        assert_chat_requests(fakes[worker].chat_requests, PROVIDERS[worker], 1)
    answered_at = time.time()

    # Wait for a health round that began after the 429: the live failures of Gemini and Cohere
    # are forgotten (their model lists answer), and Groq's only key is known to be resting.
    def probed_after_the_429(body: Any) -> bool:
        groq, checked = body["workers"][GROQ], body["workers"][GROQ]["last_check"]
        return (
            groq["status"] == "unavailable"
            and groq["error"] == "every API key is cooling down or disabled"
            and datetime.fromisoformat(checked).timestamp() > answered_at
            and all(body["workers"][w]["status"] == "healthy" for w in (OLLAMA, GEMINI, COHERE, CLAUDE))
        )

    poll(gw, "/api/health", probed_after_the_429)
    second = requests.post(gw.url + "/api/chat", json=CHAT, timeout=10)
    assert second.status_code == 200 and second.content.decode("utf-8") == ANSWER
    # The same three failures again; the resting key is not tried (its worker goes last).
    assert second.headers["X-Cortex-Worker"] == CLAUDE and second.headers["X-Cortex-Attempts"] == "4"
    assert failed_attempts(gw) == FAILURES + [f for f in FAILURES if f[0] != GROQ]
    for worker in (OLLAMA, GEMINI, COHERE, CLAUDE):
        assert_chat_requests(fakes[worker].chat_requests, PROVIDERS[worker], 2)
    assert_chat_requests(fakes[GROQ].chat_requests, PROVIDERS[GROQ], 1)

    # Even asked for by name, Groq's resting key stays unused until its Retry-After is over.
    pinned = requests.post(gw.url + "/api/chat/complete", json={**CHAT, "provider": GROQ}, timeout=10)
    assert pinned.status_code == 429 and 20 <= int(pinned.headers["Retry-After"]) <= 30
    assert [(a["worker"], a["kind"]) for a in pinned.json()["attempts"]] == [(GROQ, "keys_unavailable")]
    assert_chat_requests(fakes[GROQ].chat_requests, PROVIDERS[GROQ], 1)
    assert not [key for key in KEYS if key in gw.log()]


# --- b, c, d: one gateway for the module, every provider healthy ------------------------------


@dataclass
class Stack:
    gw: GatewayProcess
    fakes: dict[str, Any]
    #: What each upstream had received when the health check had listed its models, before
    #: any test sent a chat: the health probes alone.
    probes: dict[str, list[Request]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with ExitStack() as on_exit:
        makers = {w: on_exit.enter_context(fake_factory(PROVIDERS[w].fake)) for w in WORKERS}
        fakes = start_upstreams(makers)
        start_gateway = on_exit.enter_context(gateway_factory(tmp_path_factory.mktemp("providers-e2e")))
        gw = start_gateway(config(fakes), env={"HEALTH_CHECK_INTERVAL": "0.5"})

        def discovered(body: Any) -> bool:
            listed = {p["name"]: tuple(p["models"]) for p in body["providers"]}
            return all(listed[w] == PROVIDERS[w].models for w in WORKERS)

        poll(gw, "/api/providers", discovered)
        yield Stack(gw, fakes, {w: list(fakes[w].requests) for w in WORKERS})


def sse_events(body: bytes) -> list[str]:
    """The `data` of every event of an SSE body (keep-alive comments skipped)."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        data = [line.removeprefix("data: ") for line in block.split("\n") if line.startswith("data: ")]
        if data:
            events.append("\n".join(data))
    return events


@pytest.mark.parametrize("worker", WORKERS)
def test_each_provider_answers_alone_on_every_route(stack, worker):
    provider, fake = PROVIDERS[worker], stack.fakes[worker]
    url, before = stack.gw.url, len(fake.chat_requests)
    usage = (provider.input_tokens, len(CHUNKS))

    # /api/chat, pinned by "<worker>/<model>": chunked plain text
    text = requests.post(url + "/api/chat", json={**CHAT, "model": f"{worker}/{provider.model}"}, timeout=10)
    assert text.status_code == 200 and text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.content.decode("utf-8") == ANSWER
    assert text.headers["X-Cortex-Worker"] == worker and text.headers["X-Cortex-Attempts"] == "1"
    assert text.headers["X-Cortex-Model"] == provider.model

    # /api/chat/complete, pinned by "provider": the worker's default model, usage mapped
    complete = requests.post(url + "/api/chat/complete", json={**CHAT, "provider": worker}, timeout=10)
    assert complete.status_code == 200
    assert complete.json() == {
        "response": ANSWER, "provider": worker, "model": provider.model, "finish_reason": "stop", "attempts": 1,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1], "total_tokens": sum(usage)},
    }  # fmt: skip

    # /v1/chat/completions streamed with include_usage: OpenAI chunks, then the usage chunk
    body = {**CHAT, "model": f"{worker}/{provider.model}", "stream": True, "stream_options": {"include_usage": True}}
    stream = requests.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert stream.status_code == 200 and stream.headers["X-Cortex-Worker"] == worker
    events = sse_events(stream.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {provider.model}
    *answer, usage_chunk = chunks
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in answer) == ANSWER
    assert answer[0]["choices"][0]["delta"]["role"] == "assistant"
    assert answer[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in answer)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": usage[0],
        "completion_tokens": usage[1],
        "total_tokens": sum(usage),
    }

    # exactly three requests reached the upstream, each the provider's own, with its key
    assert_chat_requests(fake.chat_requests[before:], provider, 3)


def test_providers_lists_every_worker_with_discovered_models_and_no_key(stack):
    response = get(stack.gw, "/api/providers")
    assert response.status_code == 200
    body = response.json()
    assert [p["name"] for p in body["providers"]] == list(WORKERS)
    assert body["total_count"] == 5 and body["healthy_count"] == 5
    for listed in body["providers"]:
        provider = PROVIDERS[listed["name"]]
        assert listed["type"] == provider.type and listed["preset"] == provider.preset
        assert listed["priority"] == provider.priority and listed["status"] == "healthy"
        assert listed["models"] == list(provider.models) and listed["default_model"] == provider.model
        assert listed["capabilities"] == ["chat", "streaming", "usage", "models"]
        assert listed["keys"] == (0 if provider.key is None else 1) and listed["demo"] is False
    # Not listed: Gemini's embedding model and Cohere's embed model (no chat).
    assert "gemini-embedding-001" not in response.text and "embed-v4.0" not in response.text
    for path in ("/api/providers", "/api/health", "/v1/models"):
        text = get(stack.gw, path).text
        assert not [key for key in KEYS if key in text], path
    assert not [key for key in KEYS if key in stack.gw.log()]


def test_health_probes_each_worker_on_its_model_list_never_a_chat(stack):
    response = get(stack.gw, "/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["summary"]["healthy"] == 5
    for worker in WORKERS:
        provider, health = PROVIDERS[worker], body["workers"][worker]
        assert health["type"] == provider.type and health["status"] == "healthy"
        assert health["error"] is None and health["last_check"] and health["latency_ms"] is not None
        # Before any test chatted, the upstream had seen probes only: GETs of its model list,
        # with the worker's key.
        probes = stack.probes[worker]
        assert probes and all(r.method == "GET" and r.path.split("?")[0] == provider.models_path for r in probes)
        assert all(provider.key_sent(r) for r in probes)
        # And ever since: every GET is a probe, every chat request a POST from a test.
        for request in stack.fakes[worker].requests:
            is_probe = request.method == "GET" and request.path.split("?")[0] == provider.models_path
            assert is_probe or (request.method == "POST" and request.path == provider.chat_path), request.path


def test_v1_models_lists_the_union_of_every_workers_models(stack):
    response = get(stack.gw, "/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    expected = [(model, w) for w in WORKERS for model in PROVIDERS[w].models]
    assert [(m["id"], m["owned_by"]) for m in body["data"]] == expected
    assert {m["object"] for m in body["data"]} == {"model"}
