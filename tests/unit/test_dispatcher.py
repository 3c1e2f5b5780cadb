"""The dispatcher with scripted adapters in-process: commit at the first content event,
fail over on everything before it, key policy, deadlines, and the relay after commit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from app.circuit import Circuit
from app.dispatcher import Dispatcher
from app.errors import NotFound, NoWorkersAvailable, RateLimited, UpstreamRejected
from app.formats.text import TextEncoder
from app.health import HealthMonitor
from app.pool import Worker, WorkerPool
from app.relay import relay
from app.request_log import RequestLog, RequestRecord
from app.settings import Settings, WorkerSpec
from app.strategies import STRATEGIES, make_strategy
from app.validation import ChatRequest
from providers.base import ChatParams, Message, ProviderInfo, Timeouts
from providers.errors import ErrorKind, UpstreamError
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage


def a_record() -> RequestRecord:
    """A request's accounting without metrics: the relay finishes it (and logs its line)."""
    return RequestLog(None, None, log_content=False).begin(None, "POST", "/api/chat", "api.chat")  # type: ignore[arg-type]


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
    # libev caches the loop's time: after tests that blocked this thread without running the
    # loop it is stale, and a scripted pause would end at once instead of after its seconds.
    gevent.get_hub().loop.update_now()
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
    return b"".join(relay(dispatcher.open_stream(req), TextEncoder(), a_record()))


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
    assert b"".join(relay(dispatch, TextEncoder(), a_record())) == b"Hello"
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


def test_all_keys_cooling_gives_429_with_retry_after_of_the_earliest_return():
    limited = UpstreamError(ErrorKind.RATE_LIMITED, "slow down", status=429, retry_after=42)
    dispatcher = make(("main", Scripted(limited)), keys={"main": ("k1", "k2")})
    with pytest.raises(RateLimited) as info:
        dispatcher.open_stream(REQ)
    assert info.value.status == 429 and info.value.retry_after == 42
    with pytest.raises(RateLimited) as again:  # no key left to try: nothing is sent upstream
        dispatcher.open_stream(REQ)
    assert again.value.extra["attempts"][0]["kind"] == "keys_unavailable"


def test_rate_limits_mixed_with_other_failures_or_disabled_keys_are_a_503():
    limited = UpstreamError(ErrorKind.RATE_LIMITED, "slow down", status=429, retry_after=42)
    with pytest.raises(NoWorkersAvailable):
        make(("a", Scripted(limited)), ("b", Scripted(UpstreamError(ErrorKind.CONNECT, "refused")))).open_stream(REQ)
    refused = UpstreamError(ErrorKind.AUTH, "bad key", status=401)
    dispatcher = make(("main", Scripted(refused)), keys={"main": ("k1",)})
    with pytest.raises(NoWorkersAvailable):
        dispatcher.open_stream(REQ)
    with pytest.raises(NoWorkersAvailable) as info:
        dispatcher.open_stream(REQ)
    assert info.value.extra["attempts"][0]["kind"] == "keys_disabled"


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
    stream = relay(dispatch, TextEncoder(), a_record())
    assert next(stream) == b"0 "
    assert next(stream) == b"1 "
    stream.close()  # what the WSGI server does when the client has gone
    assert long.closed == 1 and dispatch.worker.in_flight == 0


# --- circuit, rounds, strategies and health as the dispatcher drives them ------------------

REFUSED = UpstreamError(ErrorKind.CONNECT, "refused")
HTTP_500 = UpstreamError(ErrorKind.SERVER, "HTTP 500", status=500)


def served_by(dispatcher: Dispatcher, req: ChatRequest = REQ) -> str:
    dispatch = dispatcher.open_stream(req)
    dispatch.close()
    return dispatch.worker.name


def test_circuit_opens_after_five_failures_in_a_row_then_skips_tries_last_and_closes_after_one_trial():
    """A single live failure does not demote a worker: it stays first until its circuit opens."""
    clock = [1000.0]
    flaky = Scripted(REFUSED, HTTP_500, REFUSED, HTTP_500, REFUSED, REFUSED)
    spare = Scripted(OK)
    dispatcher = make(("flaky", flaky), ("spare", spare), clock=clock)
    circuit = dispatcher.pool.get("flaky").circuit  # type: ignore[union-attr]
    for n in range(1, 6):
        dispatch = dispatcher.open_stream(REQ)
        dispatch.close()
        assert (dispatch.worker.name, dispatch.attempt_count, len(flaky.calls)) == ("spare", 2, n)
    assert circuit.state(clock[0]) == "open"

    for _ in range(3):  # open: the spare answers and the flaky worker is not called at all
        assert served_by(dispatcher) == "spare"
    assert len(flaky.calls) == 5

    spare.behaviours.insert(0, REFUSED)  # the spare fails once: the open worker is the last resort
    with pytest.raises(NoWorkersAvailable) as info:
        dispatcher.open_stream(REQ)
    assert [a["worker"] for a in info.value.extra["attempts"]] == ["spare", "flaky"]
    assert len(flaky.calls) == 6 and circuit.state(clock[0]) == "open"

    clock[0] += 30  # the cooldown has passed: half-open, exactly one trial at a time
    flaky.behaviours = [[0.05, *OK]]
    trial = gevent.spawn(served_by, dispatcher)
    gevent.sleep(0.01)  # the trial is now waiting for the flaky worker's first token
    assert circuit.trial_in_progress
    assert served_by(dispatcher) == "spare"  # a concurrent request skips the worker on trial
    assert trial.get(timeout=2) == "flaky" and len(flaky.calls) == 7
    assert circuit.state(clock[0]) == "closed" and circuit.consecutive_failures == 0
    assert served_by(dispatcher) == "flaky"  # closed: back to its place in the order


def test_a_failed_trial_opens_the_circuit_again():
    clock = [1000.0]
    flaky, spare = Scripted(REFUSED), Scripted(OK)
    dispatcher = make(("flaky", flaky), ("spare", spare), clock=clock, settings={"circuit_failures": 2})
    for _ in range(2):
        served_by(dispatcher)
    clock[0] += 30
    assert served_by(dispatcher) == "spare" and len(flaky.calls) == 3  # the trial went to flaky and failed
    circuit = dispatcher.pool.get("flaky").circuit  # type: ignore[union-attr]
    assert circuit.state(clock[0]) == "open" and not circuit.trial_in_progress
    assert served_by(dispatcher) == "spare" and len(flaky.calls) == 3


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamError(ErrorKind.RATE_LIMITED, "slow down", status=429, retry_after=1),
        UpstreamError(ErrorKind.QUOTA, "no credit", status=429),
        UpstreamError(ErrorKind.AUTH, "bad key", status=401),
        UpstreamError(ErrorKind.NOT_FOUND, "no such model", status=404),
    ],
    ids=["rate_limited", "quota", "auth", "not_found"],
)
def test_key_and_request_failures_do_not_count_against_the_circuit(failure):
    picky, spare = Scripted(failure), Scripted(OK)
    dispatcher = make(("picky", picky), ("spare", spare), settings={"circuit_failures": 2})
    for _ in range(4):
        assert served_by(dispatcher) == "spare"
    circuit = dispatcher.pool.get("picky").circuit  # type: ignore[union-attr]
    assert len(picky.calls) == 4  # a keyless worker: nothing rests, it is tried first every time
    assert circuit.state(1000.0) == "closed" and circuit.consecutive_failures == 0


def test_bad_request_does_not_count_against_the_circuit():
    picky = Scripted(UpstreamError(ErrorKind.BAD_REQUEST, "context too long", status=400))
    dispatcher = make(("picky", picky), settings={"circuit_failures": 2})
    for _ in range(3):
        with pytest.raises(UpstreamRejected):
            dispatcher.open_stream(REQ)
    assert dispatcher.pool.get("picky").circuit.consecutive_failures == 0  # type: ignore[union-attr]


def test_a_lone_worker_that_answers_500_once_is_retried_after_a_backoff():
    lone = Scripted(HTTP_500, OK)
    dispatch = make(("lone", lone)).open_stream(REQ)
    dispatch.close()
    assert dispatch.worker.name == "lone" and dispatch.attempt_count == 2 and len(lone.calls) == 2
    assert dispatch.attempts[0].kind == "server"


def test_a_refused_connection_is_not_retried_in_a_new_round():
    lone = Scripted(REFUSED, OK)
    with pytest.raises(NoWorkersAvailable, match="lone: connect: refused"):
        make(("lone", lone)).open_stream(REQ)
    assert len(lone.calls) == 1


def test_max_attempts_bounds_the_workers_tried_and_the_503_says_why():
    a, b, c = Scripted(HTTP_500), Scripted(HTTP_500), Scripted(HTTP_500)
    with pytest.raises(NoWorkersAvailable) as info:
        make(("a", a), ("b", b), ("c", c), settings={"max_attempts": 2}).open_stream(REQ)
    assert len(a.calls) == 1 and len(b.calls) == 1 and c.calls == []
    assert info.value.details.startswith("no attempt left within MAX_ATTEMPTS")
    assert [x["worker"] for x in info.value.extra["attempts"]] == ["a", "b"]


def test_transient_failures_get_rounds_until_max_attempts():
    a, b = Scripted(HTTP_500), Scripted([Finish("stop")])  # a 500 and an empty answer: both transient
    with pytest.raises(NoWorkersAvailable) as info:
        make(("a", a), ("b", b), settings={"max_attempts": 5}).open_stream(REQ)
    assert [x["worker"] for x in info.value.extra["attempts"]] == ["a", "b", "a", "b", "a"]


def test_a_request_may_choose_its_strategy_and_the_default_stays_priority():
    a, b, c = Scripted(OK), Scripted(OK), Scripted(OK)
    dispatcher = make(("a", a), ("b", b), ("c", c))
    rotating = ChatRequest(REQ.messages, strategy="round_robin")
    served = []
    for _ in range(2):
        for _ in range(3):
            served.append(served_by(dispatcher, rotating))
            served.append(served_by(dispatcher))
    assert served[0::2] == ["a", "b", "c", "a", "b", "c"]
    assert served[1::2] == ["a"] * 6


def test_the_latency_strategy_learns_from_every_request_whatever_the_strategy():
    slow, failing, fast = Scripted([0.05, *OK]), Scripted(REFUSED), Scripted(OK)
    dispatcher = make(("slow", slow), ("failing", failing), ("fast", fast))
    latency = dispatcher.strategies["latency"]
    assert latency.latency("slow") is None  # type: ignore[attr-defined]
    served_by(dispatcher)  # priority: slow answers
    served_by(dispatcher, ChatRequest(REQ.messages, provider="fast"))
    with pytest.raises(NoWorkersAvailable):
        dispatcher.open_stream(ChatRequest(REQ.messages, provider="failing"))
    slow_ttfb, fast_ttfb = latency.latency("slow"), latency.latency("fast")  # type: ignore[attr-defined]
    assert 0.04 <= slow_ttfb < 1 and 0 <= fast_ttfb < slow_ttfb
    assert latency.latency("failing") == latency.failure_penalty  # type: ignore[attr-defined]


def test_health_follows_live_traffic():
    lone = Scripted(REFUSED, OK)
    dispatcher = make(("lone", lone))
    assert dispatcher.health.snapshot.of("lone").status == "unknown"
    with pytest.raises(NoWorkersAvailable):
        dispatcher.open_stream(REQ)
    health = dispatcher.health.snapshot.of("lone")
    assert health.status == "unavailable" and health.error == "live request: connect: refused"
    assert served_by(dispatcher) == "lone"
    assert dispatcher.health.snapshot.of("lone").status == "healthy"
