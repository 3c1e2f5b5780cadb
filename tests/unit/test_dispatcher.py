"""The dispatcher with scripted adapters in-process: commit at the first content event,
fail over on everything before it, key policy, deadlines, and the relay after commit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from app.circuit import Circuit
from app.dispatcher import Dispatcher
from app.errors import NotFound, NoWorkersAvailable, UpstreamRejected
from app.formats.text import TextEncoder
from app.health import HealthMonitor
from app.pool import Worker, WorkerPool
from app.relay import relay
from app.settings import Settings, WorkerSpec
from app.strategies import STRATEGIES, make_strategy
from app.validation import ChatRequest
from providers.base import ChatParams, Message, ProviderInfo, Timeouts
from providers.errors import ErrorKind, UpstreamError
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage

REQ = ChatRequest((Message("user", "hi"),))
OK = [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(1, 2)]


class Scripted:
    """An adapter that plays one behaviour per call: a list of events (items that are numbers
    are pauses, in seconds), or an UpstreamError raised when opening."""

    def __init__(self, *behaviours: object) -> None:
        self.behaviours = list(behaviours)
        self.calls: list[tuple[str, str | None]] = []
        self.closed = 0

    def describe(self) -> ProviderInfo:
        return ProviderInfo("scripted", ("chat",))

    def list_models(self, key: str | None, timeout: float) -> tuple[str, ...]:
        return ("m",)

    def stream_chat(self, params: ChatParams, key: str | None, timeouts: Timeouts) -> Iterator[Event]:
        self.calls.append((params.model, key))
        behaviour = self.behaviours.pop(0) if len(self.behaviours) > 1 else self.behaviours[0]
        if isinstance(behaviour, UpstreamError):
            raise behaviour
        return self._play(behaviour)  # type: ignore[arg-type]

    def _play(self, items: list[object]) -> Iterator[Event]:
        try:
            for item in items:
                if isinstance(item, (int, float)):
                    gevent.sleep(item)
                else:
                    yield item  # type: ignore[misc]
        finally:
            self.closed += 1


def make(
    *adapters: tuple[str, Scripted],
    keys: dict[str, tuple[str, ...]] | None = None,
    settings: dict[str, object] | None = None,
    clock: list[float] | None = None,
    **timeouts: float,
) -> Dispatcher:
    t = Timeouts(**timeouts)
    specs = [
        WorkerSpec(name, "openai_compat", "http://x", (keys or {}).get(name, ()), ("m",), "m", i, t)
        for i, (name, _) in enumerate(adapters)
    ]
    pool = WorkerPool([Worker(spec, adapter) for spec, (_, adapter) in zip(specs, adapters, strict=True)])
    options: dict[str, Any] = {
        "key_cooldown": 60,
        "retry_backoff_base": 0.001,
        "retry_backoff_max": 0.002,
        **(settings or {}),
    }
    config = Settings(workers=tuple(specs), timeouts=t, **options)
    for worker in pool:
        worker.circuit = Circuit(config.circuit_failures, config.circuit_cooldown)
    health = HealthMonitor(pool, interval=0, timeout=1, degraded_latency=1)
    now = clock if clock is not None else [1000.0]
    strategies = {name: make_strategy(name) for name in STRATEGIES}
    return Dispatcher(pool, health, strategies, "priority", config, clock=lambda: now[0])


def body(dispatcher: Dispatcher, req: ChatRequest = REQ) -> bytes:
    return b"".join(relay(dispatcher.open_stream(req), TextEncoder()))


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamError(ErrorKind.CONNECT, "refused"),
        UpstreamError(ErrorKind.SERVER, "HTTP 500", status=500),
        UpstreamError(ErrorKind.NOT_FOUND, "no such model", status=404),
        [StreamFailure(UpstreamError(ErrorKind.SERVER, "error event before content"))],
        [Finish("stop")],  # a 200 with no content at all
        [TextDelta(""), Usage(1, 0), Finish("stop")],
        [StreamFailure(UpstreamError(ErrorKind.INTERRUPTED, "cut before content"))],
    ],
)
def test_any_failure_before_content_fails_over(failure):
    bad, good = Scripted(failure), Scripted(OK)
    dispatcher = make(("bad", bad), ("good", good))
    dispatch = dispatcher.open_stream(REQ)
    assert dispatch.worker.name == "good" and dispatch.attempt_count == 2
    assert b"".join(relay(dispatch, TextEncoder())) == b"Hello"
    assert good.closed == 1 and dispatch.worker.in_flight == 0
    assert bad.closed == (0 if isinstance(failure, UpstreamError) else 1)


def test_failure_after_content_is_an_explicit_marker_not_a_failover():
    cut = Scripted([TextDelta("partial "), StreamFailure(UpstreamError(ErrorKind.INTERRUPTED, "connection broke"))])
    spare = Scripted(OK)
    text = body(make(("cut", cut), ("spare", spare))).decode()
    assert text == "partial \n[cortex-error] interrupted: connection broke\n"
    assert spare.calls == []


def test_complete_fails_over_even_after_content_because_nothing_was_sent():
    cut = Scripted([TextDelta("partial "), StreamFailure(UpstreamError(ErrorKind.INTERRUPTED, "connection broke"))])
    spare = Scripted(OK)
    result = make(("cut", cut), ("spare", spare)).complete(REQ)
    assert result.text == "Hello" and result.worker.name == "spare" and result.usage == Usage(1, 2)
    assert result.finish_reason == "stop" and len(result.attempts) == 1


def test_first_token_timeout_fails_over_and_closes_the_hung_stream():
    hung = Scripted([5.0, TextDelta("too late")])
    fast = Scripted(OK)
    dispatch = make(("hung", hung), ("fast", fast), first_token=0.05).open_stream(REQ)
    assert dispatch.worker.name == "fast"
    assert dispatch.attempts[0].kind == "timeout" and "first token" in dispatch.attempts[0].message
    assert hung.closed == 1
    dispatch.close()


def test_idle_timeout_after_content_ends_with_marker():
    stalls = Scripted([TextDelta("a"), 5.0, TextDelta("b")])
    text = body(make(("stalls", stalls), idle=0.05)).decode()
    assert text.startswith("a\n[cortex-error] timeout: ") and "IDLE_TIMEOUT" in text
    assert stalls.closed == 1


def test_total_budget_bounds_a_trickling_stream():
    trickle = Scripted(
        [TextDelta("a"), 0.03, TextDelta("b"), 0.03, TextDelta("c"), 0.03, TextDelta("d"), 0.5, TextDelta("e")]
    )
    text = body(make(("trickle", trickle), idle=1, total=0.2)).decode()
    assert "REQUEST_TIMEOUT" in text and "e" not in text.split("\n")[0]


def test_rate_limited_key_moves_to_next_key_before_next_worker():
    limited = UpstreamError(ErrorKind.RATE_LIMITED, "slow down", status=429, retry_after=30)
    main = Scripted(limited, OK)
    other = Scripted(OK)
    dispatcher = make(("main", main), ("other", other), keys={"main": ("k1", "k2")})
    dispatch = dispatcher.open_stream(REQ)
    assert dispatch.worker.name == "main" and main.calls == [("m", "k1"), ("m", "k2")]
    dispatch.close()
    assert dispatcher.pool.get("main").keys.available_at(1000) is None  # k2 still usable
    assert dispatcher.pool.get("main").keys.candidates(1029) == [1]  # k1 rests for 30 s


def test_auth_failure_disables_the_key():
    main = Scripted(UpstreamError(ErrorKind.AUTH, "bad key", status=401), OK)
    dispatcher = make(("main", main), keys={"main": ("bad", "good")})
    dispatcher.open_stream(REQ).close()
    assert dispatcher.pool.get("main").keys.stats(0)[0]["state"] == "disabled"


def test_all_keys_cooling_gives_503_with_retry_after_of_the_earliest_return():
    limited = UpstreamError(ErrorKind.RATE_LIMITED, "slow down", status=429, retry_after=42)
    dispatcher = make(("main", Scripted(limited)), keys={"main": ("k1", "k2")})
    with pytest.raises(NoWorkersAvailable) as info:
        dispatcher.open_stream(REQ)
    assert info.value.retry_after == 42
    with pytest.raises(NoWorkersAvailable) as again:  # no key left to try: nothing is sent upstream
        dispatcher.open_stream(REQ)
    assert again.value.extra["attempts"][0]["kind"] == "keys_unavailable"


def test_bad_request_stops_dispatch():
    picky = Scripted(UpstreamError(ErrorKind.BAD_REQUEST, "context too long", status=400))
    spare = Scripted(OK)
    with pytest.raises(UpstreamRejected, match="context too long"):
        make(("picky", picky), ("spare", spare)).open_stream(REQ)
    assert spare.calls == []


def test_all_not_found_is_404_and_mixed_failures_are_503():
    missing = UpstreamError(ErrorKind.NOT_FOUND, "no model", status=404)
    with pytest.raises(NotFound):
        make(("a", Scripted(missing)), ("b", Scripted(missing))).open_stream(REQ)
    with pytest.raises(NoWorkersAvailable) as info:
        make(("a", Scripted(missing)), ("b", Scripted(UpstreamError(ErrorKind.CONNECT, "refused")))).open_stream(REQ)
    assert info.value.status == 503 and "a: not_found HTTP 404: no model; b: connect: refused" in info.value.details


def test_a_safety_block_tries_other_providers_and_is_a_400_when_all_refuse():
    blocked = [StreamFailure(UpstreamError(ErrorKind.BLOCKED, "the prompt was blocked (SAFETY)"))]
    spare = Scripted(OK)
    assert body(make(("strict", Scripted(blocked)), ("spare", spare))) == b"Hello"
    with pytest.raises(UpstreamRejected, match=r"safety filter refused.*strict: blocked: the prompt was blocked"):
        make(("strict", Scripted(blocked)), ("stricter", Scripted(blocked))).open_stream(REQ)


def test_provider_and_model_routing():
    a, b = Scripted(OK), Scripted(OK)
    dispatcher = make(("a", a), ("b", b))
    dispatcher.open_stream(ChatRequest(REQ.messages, provider="b")).close()
    assert b.calls == [("m", None)] and a.calls == []
    dispatcher.open_stream(ChatRequest(REQ.messages, provider="b", model="custom")).close()
    assert b.calls[-1] == ("custom", None)
    with pytest.raises(NotFound, match="not served"):
        dispatcher.open_stream(ChatRequest(REQ.messages, model="unknown"))
    with pytest.raises(NotFound, match="unknown provider"):
        dispatcher.open_stream(ChatRequest(REQ.messages, provider="c"))
    dispatcher.open_stream(ChatRequest(REQ.messages, provider="openai_compat")).close()  # by type
    assert a.calls == [("m", None)]


def test_client_leaving_mid_stream_closes_the_upstream():
    long = Scripted([TextDelta(f"{i} ") for i in range(100)])
    dispatch = make(("long", long)).open_stream(REQ)
    stream = relay(dispatch, TextEncoder())
    assert next(stream) == b"0 "
    assert next(stream) == b"1 "
    stream.close()  # what the WSGI server does when the client has gone
    assert long.closed == 1 and dispatch.worker.in_flight == 0
