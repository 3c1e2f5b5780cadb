"""Dispatch: choose attempts (worker x key) for a request and try them until one answers.

The commit point is the first content event (FIELD-NOTES 1 and 2): the dispatcher pulls
events until the first non-empty `TextDelta` *before* any response exists, so everything
that goes wrong up to there (refused connection, HTTP error, timeout, an error event, a
stream with no content) is a silent failover to the next key or worker. After the commit,
failures belong to the relay, which ends the stream with an explicit error marker.

Per attempt outcome (decided from `UpstreamError.kind` alone, rule 5):
- rate_limited / quota: the key cools down (Retry-After, else KEY_COOLDOWN), next key;
- auth: the key is disabled, next key;
- bad_request: the client's own input was refused; stop and answer 400;
- anything else: next worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import length_hint
from typing import Any, Protocol, TypeVar, cast

import gevent

from app.deadlines import END, Watchdog, deadline
from app.errors import ModelNotFound, NotFound, NoWorkersAvailable, RateLimited, UpstreamRejected
from app.health import HealthMonitor
from app.pool import Worker, WorkerPool
from app.retry import Move, RetryBudget
from app.routing import resolve_target
from app.settings import Settings
from app.strategies import Strategy
from app.upstream_quota import NoQuota, Quota
from app.validation import ChatRequest
from providers.errors import ErrorKind, UpstreamError
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage

log = logging.getLogger("cortex.dispatch")
R = TypeVar("R")

#: Retry-After sent with a 503 when no key's return time is known.
DEFAULT_RETRY_AFTER = 5.0


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One failed attempt, as safe to show a client: worker name, key position, never a key."""

    worker: str
    key: int | None
    kind: str
    status: int | None
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "worker": self.worker,
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
        }

    def describe(self) -> str:
        status = f" HTTP {self.status}" if self.status else ""
        return f"{self.worker}: {self.kind}{status}: {self.message}"


def close_quietly(stream: Iterator[Event] | None) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - closing must never mask the real outcome
            log.debug("error while closing an upstream stream", exc_info=True)


class Dispatch:
    """A committed answer: a worker produced content. Owns the upstream until `close()`."""

    __slots__ = ("worker", "model", "first", "rest", "attempts", "started", "first_token_at", "deadline", "_open")

    def __init__(self, worker: Worker, model: str, first: list[Event], rest: Iterator[Event],
                 attempts: list[AttemptRecord], started: float, deadline: float) -> None:  # fmt: skip
        self.worker = worker
        self.model = model
        self.first = first
        self.rest = rest
        self.attempts = attempts
        self.started = started
        self.first_token_at = time.monotonic()
        self.deadline = deadline
        self._open = True

    @property
    def attempt_count(self) -> int:
        return len(self.attempts) + 1

    def close(self) -> None:
        if self._open:
            self._open = False
            close_quietly(self.rest)
            self.worker.in_flight -= 1


def follow(dispatch: Dispatch) -> Iterator[tuple[Event, bool]]:
    """The committed stream's events: the buffered first ones, then the rest, each wait bounded
    by the worker's idle timeout and the request's total budget. A timeout or a broken stream
    ends it with a `StreamFailure`; it never raises. With each event comes whether the next
    one is already here (it came in the same piece of the upstream body): the relay writes
    those together."""
    rest = dispatch.rest
    last = len(dispatch.first) - 1
    for index, event in enumerate(dispatch.first):
        yield event, index < last or length_hint(rest) > 0
    idle = dispatch.worker.spec.timeouts.idle
    watchdog = Watchdog()
    try:
        while True:
            remaining = dispatch.deadline - time.monotonic()
            if remaining <= idle:
                wait, message = remaining, "the request exceeded its total time budget (REQUEST_TIMEOUT)"
            else:
                wait, message = idle, f"the upstream went silent for {idle:g}s mid-stream (IDLE_TIMEOUT)"
            if wait <= 0:
                yield StreamFailure(UpstreamError(ErrorKind.TIMEOUT, message)), False
                return
            try:
                got = watchdog.next(rest, wait, message)
            except UpstreamError as error:
                yield StreamFailure(error), False
                return
            if got is END:
                return
            event = cast(Event, got)
            yield event, length_hint(rest) > 0
            if isinstance(event, StreamFailure):
                return
    finally:
        watchdog.close()


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str | None
    usage: Usage | None
    worker: Worker
    model: str
    attempts: list[AttemptRecord]
    #: Monotonic time of the first content event (as Dispatch.first_token_at).
    first_token_at: float | None = None


def _until_content(stream: Iterator[Event]) -> list[Event]:
    """Pull events up to and including the first non-empty text; fail on anything else."""
    buffered: list[Event] = []
    for event in stream:
        if isinstance(event, StreamFailure):
            raise event.error
        buffered.append(event)
        if isinstance(event, TextDelta) and event.text:
            return buffered
    if any(isinstance(e, Finish) and e.reason == "content_filter" for e in buffered):
        raise UpstreamError(ErrorKind.EMPTY, "the upstream's content filter returned no content")
    raise UpstreamError(ErrorKind.EMPTY, "the upstream answered with no content")


#: Failures that say something about the worker (its circuit counts them); rate limits, auth
#: and quota are about one key, bad requests, missing models and safety blocks about the request.
_WORKER_FAILURES = frozenset({ErrorKind.CONNECT, ErrorKind.TIMEOUT, ErrorKind.SERVER, ErrorKind.MALFORMED_STREAM,
                              ErrorKind.INTERRUPTED, ErrorKind.EMPTY})  # fmt: skip
#: Failures worth another round after a backoff: the server was there and may answer next
#: time. A refused connection or a timeout would only cost the same again.
_TRANSIENT = frozenset({ErrorKind.SERVER, ErrorKind.MALFORMED_STREAM, ErrorKind.INTERRUPTED, ErrorKind.EMPTY})
_NOTHING = object()
#: Attempt kinds that mean "this key or worker is rate limited right now".
_RATE_KINDS = frozenset({ErrorKind.RATE_LIMITED.value, ErrorKind.QUOTA.value, "keys_unavailable", "upstream_rpm"})


@dataclass(slots=True)
class _Run:
    """One request's dispatch state."""

    req: ChatRequest
    attempt: Callable[..., Any]
    started: float
    budget_end: float
    budget: RetryBudget
    attempts: list[AttemptRecord] = field(default_factory=list)
    retry_at: list[float] = field(default_factory=list)
    rounds: int = 0


class DispatchObserver(Protocol):
    """Told what dispatch does, for metrics (app/metrics.py); worker names and attempt kinds only."""

    def attempt_failed(self, worker: str, kind: str) -> None: ...

    def key_cooled(self, worker: str) -> None: ...


class _NoObserver:
    def attempt_failed(self, worker: str, kind: str) -> None:
        pass

    def key_cooled(self, worker: str) -> None:
        pass


class Dispatcher:
    #: Replaced by create_app with the app's metrics; a no-op otherwise (unit tests).
    observer: DispatchObserver = _NoObserver()

    def __init__(self, pool: WorkerPool, health: HealthMonitor, strategies: Mapping[str, Strategy], default: str,
                 settings: Settings, clock: Callable[[], float] = time.time,
                 quota: Quota | None = None) -> None:  # fmt: skip
        """`strategies` holds one instance of each strategy, shared by every request of the
        process; `default` names the one used when a request does not choose. `quota` counts
        each key's requests against its worker's `rpm` (app/upstream_quota.py); default: none."""
        self.quota: Quota = quota if quota is not None else NoQuota()
        self.pool = pool
        self.health = health
        self.strategies = strategies
        self.strategy = strategies[default]
        self.settings = settings
        self.clock = clock
        self._provider_names: tuple[int, frozenset[str]] | None = None

    @property
    def provider_names(self) -> frozenset[str]:
        """Every name a request may use as a provider: worker names, types and presets;
        derived again only after the pool was swapped (the admin API)."""
        cached = self._provider_names
        if cached is None or cached[0] != self.pool.generation:
            names = frozenset(name for w in self.pool for name in (w.name, w.type, w.spec.preset) if name is not None)
            cached = self._provider_names = (self.pool.generation, names)
        return cached[1]

    def reconfigure(self, settings: Settings) -> None:
        """Dispatch settings of a configuration reload: strategy, aliases, timeouts, retries."""
        self.settings = settings
        self.strategy = self.strategies[settings.routing_strategy]

    # --- planning -----------------------------------------------------------------------

    def plan(self, req: ChatRequest) -> list[tuple[Worker, str]]:
        """Eligible (worker, model) pairs in the order to try them, in strategy order: workers
        a health probe saw fail after the rest, workers whose circuit is open (live failures)
        last, as a last resort."""
        snapshot = self.health.snapshot
        target = resolve_target(req.model, req.provider, self.provider_names, self.settings.model_aliases)
        if target.provider is not None:
            candidates = [w for w in self.pool if w.name == target.provider] or [
                w for w in self.pool if target.provider in (w.type, w.spec.preset)
            ]
            if not candidates:
                known = ", ".join(w.name for w in self.pool) or "none"
                raise NotFound(f"unknown provider {target.provider!r} (configured workers: {known})")
        else:
            candidates = list(self.pool)
        if not candidates:
            raise NoWorkersAvailable("no workers are configured", retry_after=DEFAULT_RETRY_AFTER)
        models: dict[str, str] = {}
        for worker in candidates:
            discovered = snapshot.of(worker.name).models
            if target.provider is not None:
                model = target.model or worker.resolve_model(None, discovered)
            else:
                model = worker.resolve_model(target.model, discovered)
            if model is not None:
                models[worker.name] = model
        eligible = [w for w in candidates if w.name in models]
        if not eligible:
            if target.model is not None:
                raise ModelNotFound(f"model {target.model!r} is not served by any configured worker")
            raise NoWorkersAvailable("no worker has a default model configured", retry_after=DEFAULT_RETRY_AFTER)
        now = self.clock()
        strategy = self.strategies[req.strategy] if req.strategy else self.strategy
        ranked = strategy.order(eligible, now)
        # A stable sort keeps the strategy's order within each group.
        ranked.sort(key=lambda w: (w.circuit.blocked(now), snapshot.of(w.name).demoted))
        return [(w, models[w.name]) for w in ranked]

    # --- the two ways to consume an answer -------------------------------------------------

    def open_stream(self, req: ChatRequest) -> Dispatch:
        """Commit to the first worker that produces content; the caller relays the rest."""
        return self._run(req, self._open_attempt)

    def complete(self, req: ChatRequest) -> Completion:
        """A whole answer. Nothing reaches the client until the end, so even a failure after
        the first token fails over to the next worker."""
        return self._run(req, self._complete_attempt)

    # --- attempts --------------------------------------------------------------------------

    def _run(self, req: ChatRequest, attempt: Callable[..., R]) -> R:
        """Try the plan's workers in order; then, while attempts and time remain, those whose
        failure was transient (a 5xx, a broken or empty stream) again after a backoff."""
        started = time.monotonic()
        budget_end = started + self.settings.timeouts.total
        run = _Run(req, attempt, started, budget_end, RetryBudget(
            budget_end, self.settings.max_attempts, self.settings.retry_backoff_base, self.settings.retry_backoff_max
        ))  # fmt: skip
        todo = self.plan(req)
        while todo:
            again: list[tuple[Worker, str]] = []
            for position, (worker, model) in enumerate(todo):
                move = (
                    Move.NEW_ROUND
                    if run.rounds and position == 0
                    else (Move.FIRST if not run.attempts else Move.NEXT_WORKER)
                )
                result, retry = self._try_worker(run, worker, model, move)
                if result is not _NOTHING:
                    return result  # type: ignore[return-value]
                if retry:
                    again.append((worker, model))
            run.rounds += 1
            todo = again
        raise self._give_up(run.attempts, run.retry_at, None)

    def _try_worker(self, run: _Run, worker: Worker, model: str, move: Move) -> tuple[object, bool]:
        """Each usable key of one worker in turn. Returns (result or _NOTHING, worth another round)."""
        now = self.clock()
        keys = worker.keys.candidates(now)
        if not keys:
            back = worker.keys.available_at(now)
            if back is not None and back != float("inf"):
                run.retry_at.append(back)
                record = AttemptRecord(worker.name, None, "keys_unavailable", None,
                                       "every API key is cooling down or disabled")  # fmt: skip
            else:
                record = AttemptRecord(worker.name, None, "keys_disabled", None,
                                       "every API key was refused by the provider and is disabled")  # fmt: skip
            run.attempts.append(record)
            self.observer.attempt_failed(worker.name, record.kind)
            return _NOTHING, False
        over_quota: list[float] = []
        for key_index in keys:
            # Counted before the budget: a key over quota costs no attempt and no backoff.
            resets_in = self.quota.take(worker.name, worker.spec.rpm, key_index)
            if resets_in is not None:
                over_quota.append(resets_in)
                continue
            wait = run.budget.admit(time.monotonic(), move)
            if wait is None:
                reason = "no attempt left within MAX_ATTEMPTS and the time budget (REQUEST_TIMEOUT)"
                raise self._give_up(run.attempts, run.retry_at, reason)
            if wait:
                gevent.sleep(wait)
            move = Move.NEXT_KEY
            trial = worker.circuit.allow(self.clock())
            attempt_started = time.monotonic()
            try:
                result = run.attempt(worker, model, key_index, run.req, run.attempts, run.started, run.budget_end)
            except UpstreamError as error:
                record = AttemptRecord(worker.name, None if key_index is None else key_index + 1,
                                       error.kind.value, error.status, error.message)  # fmt: skip
                run.attempts.append(record)
                self.observer.attempt_failed(worker.name, record.kind)
                log.warning("attempt failed: %s", record.describe())
                self._circuit_verdict(worker, error, trial)
                if not self._after_failure(worker, key_index, error, run.retry_at):
                    return _NOTHING, error.kind in _TRANSIENT
                continue
            except BaseException:  # the client left (GreenletExit) or a bug: no verdict on the worker
                if trial:
                    worker.circuit.release_trial()
                raise
            now = self.clock()
            worker.circuit.record_success(now)
            self.health.record_live(worker.name, True)
            self._observe(worker.name, time.monotonic() - attempt_started, True, now)
            return result, False
        if over_quota:
            run.retry_at.append(self.clock() + min(over_quota))
            run.attempts.append(AttemptRecord(worker.name, None, "upstream_rpm", None,
                                              f"{len(over_quota)} of its keys reached the worker's rpm "
                                              f"({worker.spec.rpm} requests per minute per key)"))  # fmt: skip
        return _NOTHING, False

    def _circuit_verdict(self, worker: Worker, error: UpstreamError, trial: bool) -> None:
        """Worker-level failures count against its circuit; key- and request-level ones do not."""
        now = self.clock()
        if error.kind in _WORKER_FAILURES:
            worker.circuit.record_failure(now)
            self.health.record_live(worker.name, False, f"{error.kind.value}: {error.message}")
            self._observe(worker.name, None, False, now)
        elif trial:
            worker.circuit.release_trial()

    def _observe(self, worker: str, ttfb: float | None, ok: bool, now: float) -> None:
        for strategy in self.strategies.values():
            strategy.observe(worker, ttfb, ok, now)

    def _after_failure(
        self, worker: Worker, key_index: int | None, error: UpstreamError, retry_at: list[float]
    ) -> bool:
        """Apply key policy; True means 'try the next key of this worker'."""
        worker.keys.record_failure(key_index)
        now = self.clock()
        if not error.retryable:  # the client's own input: every worker would refuse it
            raise UpstreamRejected(f"{worker.name} refused the request: {error.message}")
        if error.kind in (ErrorKind.RATE_LIMITED, ErrorKind.QUOTA):
            seconds = error.retry_after if error.retry_after is not None else self.settings.key_cooldown
            worker.keys.cool_down(key_index, now, seconds)
            if key_index is not None:
                self.observer.key_cooled(worker.name)
            retry_at.append(now + seconds)
            return key_index is not None
        if error.kind is ErrorKind.AUTH:
            worker.keys.disable(key_index)
            if key_index is not None:
                log.error(
                    "worker %s: key #%d was refused (%s) and is disabled", worker.name, key_index + 1, error.message
                )
            return key_index is not None
        return False

    def _give_up(self, attempts: list[AttemptRecord], retry_at: list[float], reason: str | None) -> Exception:
        if attempts and all(a.kind == ErrorKind.NOT_FOUND.value for a in attempts):
            return ModelNotFound(
                "; ".join(a.describe() for a in attempts), extra={"attempts": [a.as_dict() for a in attempts]}
            )
        if attempts and all(a.kind == ErrorKind.BLOCKED.value for a in attempts):
            return UpstreamRejected(
                "every provider's safety filter refused the request: " + "; ".join(a.describe() for a in attempts)
            )
        retry_after = max(1.0, min(retry_at) - self.clock()) if retry_at else DEFAULT_RETRY_AFTER
        summary = "; ".join(a.describe() for a in attempts) or "no worker could be tried"
        extra = {"attempts": [a.as_dict() for a in attempts]}
        if attempts and all(a.kind in _RATE_KINDS for a in attempts):
            # Every provider said "slow down": that is a 429 with the moment a key returns, so
            # clients back off (the OpenAI SDKs raise RateLimitError and honour Retry-After)
            # instead of treating the gateway as broken (FIELD-NOTES 9 and 14).
            return RateLimited(f"every provider is rate limiting: {summary}", retry_after=retry_after, extra=extra)
        details = f"{reason}: {summary}" if reason else f"every worker failed: {summary}"
        return NoWorkersAvailable(details, retry_after=retry_after, extra=extra)

    def _open_attempt(self, worker: Worker, model: str, key_index: int | None, req: ChatRequest,
                      attempts: list[AttemptRecord], started: float, budget_end: float) -> Dispatch:  # fmt: skip
        timeouts = worker.spec.timeouts
        remaining = budget_end - time.monotonic()
        if remaining < timeouts.first_token:
            wait, message = remaining, "the request's time budget (REQUEST_TIMEOUT) ran out before the first token"
        else:
            wait, message = (
                timeouts.first_token,
                f"no first token within {timeouts.first_token:g}s (FIRST_TOKEN_TIMEOUT)",
            )
        worker.keys.record_attempt(key_index, self.clock())
        worker.in_flight += 1
        stream: Iterator[Event] | None = None
        try:
            with deadline(wait, message):
                stream = worker.adapter.stream_chat(req.params(model), worker.keys.key(key_index), timeouts)
                first = _until_content(stream)
        except BaseException:
            close_quietly(stream)
            worker.in_flight -= 1
            raise
        assert stream is not None  # opened inside the try, or we raised
        worker.keys.record_success(key_index)
        return Dispatch(worker, model, first, stream, list(attempts), started, budget_end)

    def _complete_attempt(self, worker: Worker, model: str, key_index: int | None, req: ChatRequest,
                          attempts: list[AttemptRecord], started: float, budget_end: float) -> Completion:  # fmt: skip
        dispatch = self._open_attempt(worker, model, key_index, req, attempts, started, budget_end)
        parts: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        try:
            for event, _ in follow(dispatch):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Finish):
                    finish = event.reason
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, StreamFailure):
                    raise event.error
        finally:
            dispatch.close()
        return Completion("".join(parts), finish, usage, worker, model, dispatch.attempts, dispatch.first_token_at)
