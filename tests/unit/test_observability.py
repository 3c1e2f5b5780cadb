"""The pure parts of the request log and the metrics: ids, outcomes, label bounding, formatting."""

from __future__ import annotations

import json
import logging

import pytest

from app.errors import (
    ApiError,
    BadRequest,
    ClientRateLimited,
    ModelNotFound,
    NotFound,
    NoWorkersAvailable,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UpstreamRejected,
    ValidationError,
)
from app.metrics import FAILOVER_REASONS, OUTCOMES, bounded
from app.request_log import JsonFormatter, TextFormatter, logfmt, outcome_of, request_id
from providers.errors import ErrorKind


def test_request_id_keeps_sane_ids_and_replaces_the_rest():
    assert request_id("abc-DEF_1.2:3") == "abc-DEF_1.2:3"
    for insane in ("", " ", "a b", "x" * 129, "é", "a\nb", "a/b", "<script>"):
        generated = request_id(insane)
        assert generated != insane and len(generated) == 32
    assert request_id(None) != request_id(None)


@pytest.mark.parametrize(
    ("error", "status", "outcome"),
    [
        (None, 200, "completed"),
        (None, 404, "client_error"),
        (None, 500, "error"),
        (ClientRateLimited("slow down"), 429, "client_rate_limited"),
        (RateLimited("every provider", extra={"attempts": []}), 429, "rate_limited"),
        (RateLimited("from an edge hook"), 429, "client_rate_limited"),
        (NoWorkersAvailable("none"), 503, "no_workers"),
        (ModelNotFound("m"), 404, "model_not_found"),
        (NotFound("unknown provider"), 404, "client_error"),
        (Unauthorized(), 401, "unauthorized"),
        (UpstreamRejected("no"), 400, "rejected"),
        (ValidationError("messages", "empty"), 400, "client_error"),
        (PayloadTooLarge(), 413, "client_error"),
        (BadRequest(), 400, "client_error"),
        (ApiError("bug"), 500, "error"),
        (RuntimeError("bug"), 500, "error"),
    ],
)
def test_outcomes_come_from_a_fixed_set(error, status, outcome):
    assert outcome_of(error, status) == outcome
    assert outcome in OUTCOMES


def test_bounded_labels():
    assert bounded("groq", {"groq", "local"}) == "groq"
    assert bounded("gpt-5-from-a-client", {"groq"}) == "other"
    assert bounded(None, {"groq"}) == "none"
    assert bounded("", {"groq"}) == "other"
    assert {k.value for k in ErrorKind} <= FAILOVER_REASONS
    assert bounded("keys_unavailable", FAILOVER_REASONS) == "keys_unavailable"
    assert bounded("something new", FAILOVER_REASONS) == "other"


def test_logfmt_quotes_only_what_needs_it():
    line = logfmt({"a": "plain-value_1.2:/x", "b": None, "c": 3, "d": 1.5, "e": True, "f": 'say "hi"\nbye',
                   "g": "two words", "h": [{"role": "user", "content": "x"}]})  # fmt: skip
    assert line == (
        'a=plain-value_1.2:/x b=- c=3 d=1.5 e=true f="say \\"hi\\"\\nbye" g="two words" '
        'h=[{"role": "user", "content": "x"}]'
    )
    assert "\n" not in line


def record_with(fields: dict[str, object] | None, msg: str = "request") -> logging.LogRecord:
    record = logging.LogRecord("cortex.request", logging.INFO, __file__, 1, msg, None, None)
    if fields is not None:
        record.cortex_fields = fields
    return record


def test_text_lines_append_the_fields():
    text = TextFormatter().format(record_with({"request_id": "r1", "status": 200, "client": None}))
    assert text.endswith("INFO cortex.request: request request_id=r1 status=200 client=-")
    assert "[" in text and "]" in text  # the pid
    assert TextFormatter().format(record_with(None, "plain")).endswith("cortex.request: plain")


def test_json_lines_are_one_object_with_ts_level_pid_and_the_fields():
    text = JsonFormatter().format(record_with({"request_id": "r1", "answer": "two\nlines", "status": 200}))
    assert "\n" not in text
    line = json.loads(text)
    assert list(line)[:5] == ["ts", "level", "pid", "logger", "msg"]
    assert line["level"] == "info" and isinstance(line["pid"], int) and line["ts"].endswith("Z")
    assert line["request_id"] == "r1" and line["answer"] == "two\nlines" and line["status"] == 200


def test_json_lines_carry_exceptions_in_the_object():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("cortex.relay", logging.ERROR, __file__, 1, "relay failed", None, sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "relay failed" and "ValueError: boom" in line["exception"]


def test_log_timestamps_match_datetimes_iso_format() -> None:
    """`_iso` formats each second once; its milliseconds must still be datetime's (which rounds
    to the microsecond first, so .8919997 is .892), at second boundaries too."""
    import random
    from datetime import UTC, datetime

    from app.request_log import _iso

    rng = random.Random(20261125)
    samples = [0.0, 1795638530.7696571, 1795638530.9999996, 153194124.8919997]
    samples += [rng.uniform(0, 2e9) for _ in range(20000)]
    for ts in samples:
        assert _iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
