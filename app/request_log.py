"""The request log: exactly one structured line per request, written when the request ends.

A plain response ends when Flask has built it (`after_request`); a stream ends when the
relay's `finally` runs, however it ended (completed, failed mid-way, client gone), so its
line carries the real duration, tokens and outcome. Each request has an id: the client's
`X-Request-ID` when it is sane (1-128 of `[A-Za-z0-9._:-]`), else a new one; it is sent
back as `X-Request-ID` on every response, errors and streams included.

The per-request accounting object is a `RequestRecord`. The views fill it in and hand it
to the relay as an argument (rule 10: a generator never touches `g`); `finish()` writes
the line and records the request's metrics, once.

With LOG_FORMAT=json every `cortex` log line is one JSON object (ts, level, pid, logger, msg
and the fields); otherwise text, the request's fields as key=value pairs:

    2026-11-25 10:00:00,123 [4242] INFO cortex.request: request request_id=4f1c... method=POST
      route=/api/chat status=200 client=key-1 provider=groq model=llama-3.1-8b attempts=1
      ttft_ms=212.4 duration_ms=1830.2 input_tokens=12 output_tokens=87 outcome=completed error=-

Never a key; message content (the prompt's messages and the answer) only with LOG_CONTENT=true.
/api/health, /metrics and static files are logged at DEBUG (visible with LOG_LEVEL=debug).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from gevent import GreenletExit

from app.auth import current_client
from app.errors import (
    ApiError,
    ClientRateLimited,
    ModelNotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UpstreamRejected,
)
from providers.events import Event, TextDelta, Usage

if TYPE_CHECKING:
    from app.dispatcher import Completion, Dispatch
    from app.gateway import Gateway
    from app.metrics import CortexMetrics
    from app.validation import ChatRequest

log = logging.getLogger("cortex.request")

HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The chat routes: each one is a chat request in cortex_requests_total.
CHAT_ENDPOINTS = frozenset({"api.chat", "api.chat_complete", "v1.chat_completions"})
#: Polled by machines; their lines are DEBUG.
QUIET_ENDPOINTS = frozenset({"api.health", "static", "prometheus_metrics"})


def request_id(header: str | None) -> str:
    """The client's id when it is sane, else a new one (32 hex digits)."""
    if header is not None and _SANE_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()


def outcome_of(error: BaseException | None, status: int | None) -> str:
    """The outcome of a request that ended with `error` (or none) and `status`."""
    if error is None:
        if status is None or status < 400:
            return "completed"
        return "client_error" if status < 500 else "error"
    if isinstance(error, ClientRateLimited):
        return "client_rate_limited"
    if isinstance(error, RateLimited):
        # The dispatcher's 429 lists the attempts; any other 429 is an edge limit.
        return "rate_limited" if "attempts" in error.extra else "client_rate_limited"
    if isinstance(error, ServiceUnavailable):
        return "no_workers"
    if isinstance(error, ModelNotFound):
        return "model_not_found"
    if isinstance(error, Unauthorized):
        return "unauthorized"
    if isinstance(error, UpstreamRejected):
        return "rejected"
    if isinstance(error, ApiError) and 400 <= error.status < 500:
        return "client_error"
    return "error"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@dataclass(slots=True, eq=False)
class RequestRecord:
    """What is known of one request so far; `finish()` turns it into a log line and metrics."""

    accounting: RequestLog = field(repr=False)
    request_id: str
    method: str
    route: str | None
    endpoint: str | None
    started: float
    client: str | None = None
    status: int | None = None
    requested_model: str | None = None
    provider: str | None = None
    model: str | None = None
    attempts: int | None = None
    first_token_at: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    outcome: str | None = None
    error: str | None = None
    prompt: list[dict[str, str]] | None = None
    answer: list[str] | None = None
    #: A relayed stream: finished by the relay, not by after_request.
    deferred: bool = False
    streaming: bool = False
    finished: bool = False

    @property
    def chat(self) -> bool:
        return self.endpoint in CHAT_ENDPOINTS

    # --- filled in by views and the relay ------------------------------------------------------

    def requested(self, req: ChatRequest) -> None:
        self.requested_model = req.model
        if self.accounting.log_content:
            self.prompt = [{"role": m.role, "content": m.content} for m in req.messages]

    def committed(self, dispatch: Dispatch) -> None:
        self.provider, self.model = dispatch.worker.name, dispatch.model
        self.attempts, self.first_token_at = dispatch.attempt_count, dispatch.first_token_at

    def completed(self, result: Completion) -> None:
        self.provider, self.model = result.worker.name, result.model
        self.attempts, self.first_token_at = len(result.attempts) + 1, result.first_token_at
        if result.usage is not None:
            self.took(result.usage)
        if self.accounting.log_content:
            self.answer = [result.text]

    def took(self, event: Event) -> None:
        """An event the relay passed on: counts tokens, keeps text only when content is logged."""
        if isinstance(event, TextDelta):
            if self.accounting.log_content:
                if self.answer is None:
                    self.answer = []
                self.answer.append(event.text)
        elif isinstance(event, Usage):
            self.input_tokens, self.output_tokens = event.input_tokens, event.output_tokens

    def refused(self, error: BaseException) -> None:
        """The request's answer is an error (a status code, or an error event in the stream)."""
        self.outcome = outcome_of(error, self.status)
        self.error = error.code if isinstance(error, ApiError) else "internal_error"

    def stream_began(self) -> None:
        if not self.streaming:
            self.streaming = True
            self.accounting.stream_began()

    # --- the end ---------------------------------------------------------------------------------

    def finish(self, outcome: str | None = None, error: str | None = None) -> None:
        """Write the line and record the metrics; only the first call counts."""
        if self.finished:
            return
        self.finished = True
        if outcome is not None:
            self.outcome = outcome
        if error is not None:
            self.error = error
        if self.outcome is None:
            self.outcome = outcome_of(None, self.status)
        self.accounting.finish(self, time.monotonic())

    def abandon(self) -> None:
        """The response body was closed without the relay finishing the record (it never ran)."""
        self.finish("client_disconnected")

    def fields(self, now: float) -> dict[str, Any]:
        """The log line's fields, in order. Content only when LOG_CONTENT is on."""
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "status": self.status,
            "client": self.client,
            "provider": self.provider,
            "model": self.model if self.model is not None else self.requested_model,
            "attempts": self.attempts,
            "ttft_ms": _ms(ttft),
            "duration_ms": _ms(now - self.started),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "outcome": self.outcome,
            "error": self.error,
        }
        if self.accounting.log_content:
            line["prompt"] = self.prompt
            line["answer"] = None if self.answer is None else "".join(self.answer)
        return line


class RequestLog:
    """The app's accounting: makes a record per request, and at its end logs it and feeds metrics."""

    def __init__(self, gateway: Gateway, metrics: CortexMetrics | None, *, log_content: bool) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.log_content = log_content

    def begin(self, header: str | None, method: str, route: str | None, endpoint: str | None) -> RequestRecord:
        return RequestRecord(self, request_id(header), method, route, endpoint, time.monotonic())

    def stream_began(self) -> None:
        if self.metrics is not None:
            self.metrics.stream_started()

    def finish(self, record: RequestRecord, now: float) -> None:
        """Never raises: it runs in the relay's `finally` (rule 9)."""
        try:
            level = logging.DEBUG if record.endpoint in QUIET_ENDPOINTS else logging.INFO
            log.log(level, "request", extra={"cortex_fields": record.fields(now)})
            if self.metrics is not None:
                self._measure(self.metrics, record, now)
        except Exception:  # noqa: BLE001 - accounting must never break a response
            log.exception("accounting for request %s failed", record.request_id)

    def _measure(self, metrics: CortexMetrics, record: RequestRecord, now: float) -> None:
        from app.metrics import model_label, provider_label

        provider = provider_label(self.gateway, record.provider)
        if record.streaming:
            metrics.stream_ended(provider, now - record.started)
        ttft = None if record.first_token_at is None else record.first_token_at - record.started
        metrics.request_ended(
            provider=provider,
            model=model_label(self.gateway, record.provider, record.model),
            outcome=record.outcome or "completed",
            ttft=ttft,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            chat=record.chat,
        )


def current_record() -> RequestRecord:
    """This request's record (views only; generators get it as an argument)."""
    record: RequestRecord = g.cortex_record
    return record


def install_request_log(app: Flask, accounting: RequestLog) -> None:
    """Must be installed before every other before_request hook, so that a request refused by
    one of them (401, 429) still has an id, a header and a line."""

    @app.before_request
    def begin_request() -> None:
        rule = request.url_rule
        g.cortex_record = accounting.begin(
            request.headers.get(HEADER), request.method, rule.rule if rule is not None else None, request.endpoint
        )

    @app.after_request
    def end_request(response: Response) -> Response:
        record: RequestRecord | None = g.get("cortex_record")
        if record is None:
            return response
        response.headers[HEADER] = record.request_id
        client = current_client()
        record.client = client.name if client is not None else None
        record.status = response.status_code
        error = g.get("cortex_error")
        if error is not None:
            record.refused(error)
        if not record.deferred:
            record.finish()
        return response

    @app.teardown_request
    def end_unanswered(exc: BaseException | None) -> None:
        """A request that produced no response: the client left (ClientGone), or a hook failed."""
        record: RequestRecord | None = g.get("cortex_record")
        if record is None or record.finished or (record.deferred and exc is None):
            return
        gone = isinstance(exc, GreenletExit)
        # 499: nginx's "client closed request"; there was no response to take a status from.
        record.status = 499 if gone else (record.status or 500)
        record.finish("client_disconnected" if gone else "error")


# --- formatting ----------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9._:/@+-]+")


_SECOND: list[Any] = [None, ""]


def _iso(ts: float) -> str:
    """UTC, to the millisecond: 2026-11-25T20:15:10.123Z. The date and time of the current
    second are formatted once (this runs for every log line)."""
    second = math.floor(ts)
    micro = round((ts - second) * 1e6)  # rounded to the microsecond first, as datetime does
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    if _SECOND[0] != second:
        _SECOND[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_SECOND[1]}.{micro // 1000:03d}Z"


def logfmt_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)  # quoted, with newlines and quotes escaped


def logfmt(fields: Mapping[str, object]) -> str:
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items())


class TextFormatter(logging.Formatter):
    """The usual text line, then the record's `cortex_fields` (if any) as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        fields = getattr(record, "cortex_fields", None)
        return f"{text} {logfmt(fields)}" if fields else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, pid, logger, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "cortex_fields", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Give the `cortex` logger a handler on stderr in the chosen format, unless the host
    (pytest, an embedding application) already handles logging at the root."""
    logger = logging.getLogger("cortex")
    logger.setLevel(level)
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    ours = [h for h in logger.handlers if getattr(h, "cortex", False)]
    for handler in ours:
        handler.setFormatter(formatter)
    if ours or logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.cortex = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    logger.addHandler(handler)
