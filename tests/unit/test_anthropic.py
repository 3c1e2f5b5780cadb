"""The Anthropic adapter's pure parts: request building, stream parsing, errors, models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers import anthropic as an
from providers.base import ChatParams, Endpoint, Message
from providers.errors import ErrorKind, UpstreamError
from providers.events import Finish, StreamFailure, TextDelta, Usage

DATA = Path(__file__).resolve().parent.parent / "data"
NOW = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC).timestamp()
RECORDINGS = (
    "anthropic_stream.sse",
    "anthropic_thinking_stream.sse",
    "anthropic_refusal.sse",
    "anthropic_overloaded.sse",
)


def parse(raw: bytes) -> list:  # type: ignore[type-arg]
    parser = an.MessageStreamParser()
    return parser.feed(raw) + parser.finish()


def parse_split(raw: bytes, at: int) -> list:  # type: ignore[type-arg]
    parser = an.MessageStreamParser()
    return parser.feed(raw[:at]) + parser.feed(raw[at:]) + parser.finish()


def parse_bytewise(raw: bytes) -> list:  # type: ignore[type-arg]
    parser = an.MessageStreamParser()
    events = []
    for i in range(len(raw)):
        events += parser.feed(raw[i : i + 1])
    return events + parser.finish()


def text_of(events: list) -> str:  # type: ignore[type-arg]
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def others(events: list) -> list:  # type: ignore[type-arg]
    return [e for e in events if not isinstance(e, TextDelta)]


def failure(events: list) -> UpstreamError:  # type: ignore[type-arg]
    assert isinstance(events[-1], StreamFailure), events
    return events[-1].error


def comparable(events: list) -> list:  # type: ignore[type-arg]
    """Events with failures reduced to what matters (UpstreamError has no equality)."""
    return [("failure", e.error.kind, e.error.message) if isinstance(e, StreamFailure) else e for e in events]


# --- the stream parser ------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORDINGS)
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_recordings_give_the_same_events_at_every_split_point(name, line_end):
    raw = (DATA / name).read_bytes().replace(b"\n", line_end)
    whole = comparable(parse(raw))
    assert whole and comparable(parse_bytewise(raw)) == whole
    for at in range(1, len(raw)):
        assert comparable(parse_split(raw, at)) == whole, f"split at byte {at}"


def test_text_stream_with_multibyte_text_finish_and_usage():
    events = parse((DATA / "anthropic_stream.sse").read_bytes())
    assert text_of(events) == "héllo wörld 日本語 👋"
    assert others(events) == [Finish("stop"), Usage(21, 12)]


def test_thinking_is_not_text_and_cached_input_counts():
    events = parse((DATA / "anthropic_thinking_stream.sse").read_bytes())
    assert text_of(events) == "Voilà ton café ☕ — bon appétit"
    # input 30 + cache creation 0 + cache read 8; output is the last cumulative count
    assert others(events) == [Finish("length"), Usage(38, 40)]


def test_refusal_without_text_is_blocked():
    events = parse((DATA / "anthropic_refusal.sse").read_bytes())
    assert len(events) == 1
    error = failure(events)
    assert error.kind is ErrorKind.BLOCKED and error.code == "refusal"
    assert "refusal" in error.message and "cyber" in error.message and "refused due to policy" in error.message


def test_refusal_after_some_text_is_a_content_filter_finish():
    raw = (DATA / "anthropic_refusal.sse").read_bytes()
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I"}}\n\n'
    raw = raw.replace(b"event: content_block_stop", delta + b"event: content_block_stop", 1)
    events = parse(raw)
    assert events == [TextDelta("I"), Finish("content_filter"), Usage(20, 0)]


def test_in_band_overloaded_error_ends_the_stream():
    events = parse((DATA / "anthropic_overloaded.sse").read_bytes())
    assert events[0] == TextDelta("Partial ")
    error = failure(events)
    assert error.kind is ErrorKind.SERVER and error.code == "overloaded_error" and error.message == "Overloaded"


@pytest.mark.parametrize(
    ("raw", "kind", "code"),
    [
        (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n', ErrorKind.SERVER, "overloaded_error"),
        (b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"Internal server error"}}\n\n', ErrorKind.SERVER, "api_error"),
        (b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}\n\n', ErrorKind.RATE_LIMITED, "rate_limit_error"),
        (b'event: error\ndata: {"type":"error","error":{"type":"billing_error","message":"Billing issue"}}\n\n', ErrorKind.QUOTA, "billing_error"),
        (b'event: error\ndata: {"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}\n\n', ErrorKind.TIMEOUT, "timeout_error"),
        (b'event: error\ndata: {"type":"error","error":{"type":"invalid_request_error","message":"bad"}}\n\n', ErrorKind.BAD_REQUEST, "invalid_request_error"),
        (b'event: error\ndata: {"type":"error","error":{"type":"new_error","message":"?"}}\n\n', ErrorKind.SERVER, "new_error"),
        (b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n', ErrorKind.SERVER, "overloaded_error"),
        (b"event: error\ndata: upstream exploded\n\n", ErrorKind.SERVER, None),
        (b'event: content_block_delta\ndata: {"type":"content_block_delta",\n\n', ErrorKind.MALFORMED_STREAM, None),
        (b"event: message_delta\ndata: [1, 2]\n\n", ErrorKind.MALFORMED_STREAM, None),
    ],
)  # fmt: skip
def test_in_band_errors_and_garbage_become_a_final_failure(raw, kind, code):
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s"}}\n\n'
    events = parse(delta % b"a" + raw + delta % b"ignored" + b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert events[0] == TextDelta("a") and len(events) == 2
    assert failure(events).kind is kind and failure(events).code == code


def test_in_band_error_keeps_the_request_id():
    raw = b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"},"request_id":"req_011X"}\n\n'
    assert failure(parse(raw)).message == "boom (request req_011X)"


def test_stream_ending_without_message_stop_is_interrupted():
    raw = (DATA / "anthropic_stream.sse").read_bytes()
    after_delta = raw[: raw.index(b"event: message_stop")]
    events = parse(after_delta)
    assert text_of(events) == "héllo wörld 日本語 👋"
    assert others(events)[:2] == [Finish("stop"), Usage(21, 12)]
    error = failure(events)
    assert error.kind is ErrorKind.INTERRUPTED and error.message == "the upstream stream ended before it was complete"
    mid_event = raw[: raw.index("wörld".encode()) + 2]  # inside an event, inside a character
    events = parse(mid_event)
    assert text_of(events) == "héllo" and failure(events).kind is ErrorKind.INTERRUPTED
    assert failure(parse(b"")).kind is ErrorKind.INTERRUPTED


def test_input_after_message_stop_is_ignored():
    raw = (DATA / "anthropic_stream.sse").read_bytes()
    events = parse(raw + b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"late"}}\n\n')
    assert not any(isinstance(e, StreamFailure) for e in events) and events[-1] == Usage(21, 12)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "pause_turn"),
        ("Something_New", "something_new"),
    ],
)
def test_stop_reasons_are_normalised(reason, expected):
    raw = (
        (DATA / "anthropic_stream.sse")
        .read_bytes()
        .replace(b'"stop_reason":"end_turn"', f'"stop_reason":"{reason}"'.encode())
    )
    assert Finish(expected) in parse(raw)
    body = json.dumps({"type": "message", "content": [{"type": "text", "text": "x"}], "stop_reason": reason}).encode()
    assert an.parse_completion(body) == [TextDelta("x"), Finish(expected)]


def test_tool_use_input_json_is_not_text():
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )  # fmt: skip
    assert parse(raw) == [TextDelta("Okay"), Finish("tool_calls"), Usage(472, 89)]


def test_unknown_events_and_event_name_only_frames_are_tolerated():
    raw = (
        b'event: brand_new_event\ndata: {"type":"brand_new_event","x":1}\n\n'
        b': a comment\n\n'
        b'event: content_block_delta\ndata: {"index":0,"delta":{"type":"text_delta","text":"hi"}}\n\n'
        b'event: message_stop\ndata: {}\n\n'
    )  # fmt: skip
    assert parse(raw) == [TextDelta("hi")]


# --- building requests ------------------------------------------------------------------------


def body_of(call) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return json.loads(call.body)


def test_build_chat_request():
    endpoint = Endpoint("https://api.anthropic.com/", {"X-Extra": "1"})
    params = ChatParams(
        (Message("system", "be brief"), Message("user", "héllo 👋"), Message("system", "answer in French")),
        "claude-haiku-4-5", 0.5, 100, 0.9, ("END", "STOP"),
    )  # fmt: skip
    call = an.build_chat(endpoint, params, "sk-ant-secret")
    assert call.method == "POST" and call.url == "https://api.anthropic.com/v1/messages"
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["x-api-key"] == "sk-ant-secret" and headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json" and headers["accept"] == "text/event-stream"
    assert headers["accept-encoding"] == "identity" and headers["x-extra"] == "1"
    assert "authorization" not in headers
    assert body_of(call) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "be brief\n\nanswer in French",
        "messages": [{"role": "user", "content": "héllo 👋"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END", "STOP"],
        "stream": True,
    }
    assert "héllo 👋".encode() in (call.body or b"") and b'": ' not in (call.body or b"")  # raw UTF-8, compact
    assert "sk-ant-secret" not in repr(call) and "sk-ant-secret" not in call.url
    assert b"sk-ant-secret" not in (call.body or b"")


def test_defaults_and_non_streaming():
    call = an.build_chat(Endpoint("http://h:1", stream=False), ChatParams((Message("user", "hi"),), "m"), None)
    assert body_of(call) == {"model": "m", "max_tokens": an.DEFAULT_MAX_TOKENS, "stream": False,
                             "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    assert call.headers["accept"] == "application/json" and "x-api-key" not in call.headers


def test_temperature_is_capped_at_anthropics_maximum():
    call = an.build_chat(Endpoint("http://h"), ChatParams((Message("user", "hi"),), "m", temperature=1.7), None)
    assert body_of(call)["temperature"] == 1.0


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (  # consecutive turns of one role merge
            [("user", "a"), ("user", "b"), ("assistant", "c"), ("assistant", "d"), ("user", "e")],
            [("user", "a\n\nb"), ("assistant", "c\n\nd"), ("user", "e")],
        ),
        (  # a conversation may not start with the assistant
            [("system", "s"), ("assistant", "hello, how can I help?"), ("user", "hi")],
            [("user", an.LEADING_USER_TEXT), ("assistant", "hello, how can I help?"), ("user", "hi")],
        ),
        ([("system", "only a system prompt")], [("user", an.LEADING_USER_TEXT)]),
        (  # a prefill keeps its text but not its trailing whitespace
            [("user", "Greek name for Sun? (A) Sol (B) Helios"), ("assistant", "The best answer is ( \n")],
            [("user", "Greek name for Sun? (A) Sol (B) Helios"), ("assistant", "The best answer is (")],
        ),
        ([("user", ""), ("user", "x")], [("user", "x")]),
    ],
)
def test_roles_are_shaped_for_the_messages_api(messages, expected):
    params = ChatParams(tuple(Message(r, c) for r, c in messages), "m")
    body = body_of(an.build_chat(Endpoint("http://h"), params, None))
    assert [(m["role"], m["content"]) for m in body["messages"]] == expected


def test_operator_headers_can_override_the_version_and_add_a_beta_but_not_our_key_or_framing():
    extra = {"Anthropic-Version": "2024-01-01", "anthropic-beta": "context-1m-2025-08-07",
             "X-Api-Key": "operator", "Accept-Encoding": "gzip"}  # fmt: skip
    call = an.build_chat(Endpoint("http://h", extra), ChatParams((Message("user", "hi"),), "m"), "sk-key")
    lowered = [k.lower() for k in call.headers]
    assert len(lowered) == len(set(lowered)), "no header twice in different cases"
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["anthropic-version"] == "2024-01-01" and headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert headers["x-api-key"] == "sk-key" and headers["accept-encoding"] == "identity"


def test_build_models_and_parse_models():
    call = an.build_models(Endpoint("https://api.anthropic.com/"), "sk-key")
    assert call.method == "GET" and call.url == "https://api.anthropic.com/v1/models?limit=1000"
    assert call.headers["x-api-key"] == "sk-key" and call.headers["anthropic-version"] == "2023-06-01"
    assert call.body is None
    body = (
        b'{"data":[{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5",'
        b'"created_at":"2025-09-29T00:00:00Z"},{"type":"model","id":"claude-haiku-4-5-20251001",'
        b'"display_name":"Claude Haiku 4.5","created_at":"2025-10-15T00:00:00Z"},{"type":"model"}],'
        b'"has_more":false,"first_id":"claude-sonnet-4-5-20250929","last_id":"claude-haiku-4-5-20251001"}'
    )
    assert an.parse_models(body) == ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")
    for bad in (b"<html>", b'{"models":[]}'):
        with pytest.raises(UpstreamError) as info:
            an.parse_models(bad)
        assert info.value.kind is ErrorKind.MALFORMED_STREAM


# --- errors -------------------------------------------------------------------------------


def err(type_: str, message: str, request_id: str | None = "req_011CSHoEeqs5C35K2UUqR7Fy", **extra) -> bytes:  # type: ignore[no-untyped-def]
    error = {"type": type_, "message": message, **extra}
    doc = {"type": "error", "error": error} | ({"request_id": request_id} if request_id else {})
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after", "code"),
    [
        (400, {}, err("invalid_request_error", 'messages: roles must alternate between "user" and "assistant"'),
         ErrorKind.BAD_REQUEST, None, "invalid_request_error"),
        (400, {}, err("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
         ErrorKind.BAD_REQUEST, None, "invalid_request_error"),
        (400, {}, err("invalid_request_error", "Your credit balance is too low to access the Anthropic API. "
                      "Please go to Plans & Billing to upgrade or purchase credits."), ErrorKind.QUOTA, None,
         "invalid_request_error"),
        (400, {}, err("invalid_request_error", "You have reached your specified API usage limits. "
                      "You will regain access on 2026-12-01 at 00:00 UTC."), ErrorKind.QUOTA, 5 * 86400 + 8 * 3600,
         "invalid_request_error"),
        (401, {}, err("authentication_error", "invalid x-api-key"), ErrorKind.AUTH, None, "authentication_error"),
        (402, {}, err("billing_error", "Your account has a billing issue."), ErrorKind.QUOTA, None, "billing_error"),
        (403, {}, err("permission_error", "Your API key does not have permission to use the specified resource."),
         ErrorKind.AUTH, None, "permission_error"),
        (404, {}, err("not_found_error", "model: claude-x"), ErrorKind.NOT_FOUND, None, "not_found_error"),
        (413, {}, err("request_too_large", "Request exceeds the maximum allowed number of bytes.", None),
         ErrorKind.BAD_REQUEST, None, "request_too_large"),
        (413, {}, b"<html><body><h1>413 Request Entity Too Large</h1></body></html>", ErrorKind.BAD_REQUEST, None, None),
        (429, {"retry-after": "7"}, err("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
         ErrorKind.RATE_LIMITED, 7.0, "rate_limit_error"),
        (429, {"Retry-After": "Wed, 25 Nov 2026 16:00:30 GMT"}, err("rate_limit_error", "Rate limited"),
         ErrorKind.RATE_LIMITED, 30.0, "rate_limit_error"),
        (429, {"anthropic-ratelimit-requests-remaining": "12", "anthropic-ratelimit-requests-reset": "2026-11-25T16:00:05Z",
               "anthropic-ratelimit-input-tokens-remaining": "0", "anthropic-ratelimit-input-tokens-reset": "2026-11-25T16:00:42Z",
               "anthropic-ratelimit-output-tokens-remaining": "0", "anthropic-ratelimit-output-tokens-reset": "2026-11-25T16:00:20.5Z"},
         err("rate_limit_error", "Rate limited"), ErrorKind.RATE_LIMITED, 42.0, "rate_limit_error"),
        (429, {"anthropic-ratelimit-requests-reset": "2026-11-25T16:00:05Z", "anthropic-ratelimit-tokens-reset": "2026-11-25T16:00:09Z",
               "anthropic-ratelimit-output-tokens-reset": "not a date"},
         err("rate_limit_error", "Rate limited"), ErrorKind.RATE_LIMITED, 5.0, "rate_limit_error"),
        (429, {"anthropic-ratelimit-requests-reset": "2026-11-25T15:00:00Z"}, err("rate_limit_error", "Rate limited"),
         ErrorKind.RATE_LIMITED, 0.0, "rate_limit_error"),
        (429, {}, err("rate_limit_error", "You have reached your monthly spend limit.",
                      details={"error_code": "enforced_spend_limit_reached"}), ErrorKind.QUOTA, None,
         "enforced_spend_limit_reached"),
        (500, {}, err("api_error", "Internal server error"), ErrorKind.SERVER, None, "api_error"),
        (504, {}, err("timeout_error", "Request timed out"), ErrorKind.TIMEOUT, None, "timeout_error"),
        (529, {}, err("overloaded_error", "Overloaded"), ErrorKind.SERVER, None, "overloaded_error"),
        (529, {"retry-after": "3"}, err("overloaded_error", "Overloaded"), ErrorKind.SERVER, 3.0, "overloaded_error"),
        (503, {}, b"<html>upstream connect error</html>", ErrorKind.SERVER, None, None),
        (502, {}, b"Bad Gateway", ErrorKind.SERVER, None, None),
        (500, {}, b'{"unexpected":true}', ErrorKind.SERVER, None, None),
    ],
)  # fmt: skip
def test_parse_error(status, headers, body, kind, retry_after, code):
    error = an.parse_error(status, headers, body, NOW)
    assert error.kind is kind and error.status == status and error.code == code
    assert error.retry_after == retry_after
    assert error.message and "<html>" not in error.message and "{" not in error.message


def test_error_messages_carry_the_request_id_from_body_or_header():
    error = an.parse_error(529, {}, err("overloaded_error", "Overloaded", "req_011Body"), NOW)
    assert error.message == "Overloaded (request req_011Body)"
    error = an.parse_error(500, {"request-id": "req_011Header"}, err("api_error", "boom", None), NOW)
    assert error.message == "boom (request req_011Header)"
    assert an.parse_error(503, {}, b"", NOW).message == "HTTP 503"


# --- whole answers ------------------------------------------------------------------------


def test_parse_completion():
    body = json.dumps({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, {"type": "text", "text": "Bonjour 👋"},
                    {"type": "text", "text": " — ça va ?"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 2095, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 503},
    }, ensure_ascii=False).encode()  # fmt: skip
    assert an.parse_completion(body) == [TextDelta("Bonjour 👋 — ça va ?"), Finish("stop"), Usage(2200, 503)]


def test_parse_completion_failures():
    refusal = json.dumps({"type": "message", "content": [], "stop_reason": "refusal",
                          "stop_details": {"type": "refusal", "category": None, "explanation": None}}).encode()  # fmt: skip
    [blocked] = an.parse_completion(refusal)
    assert isinstance(blocked, StreamFailure) and blocked.error.kind is ErrorKind.BLOCKED
    [error] = an.parse_completion(err("overloaded_error", "Overloaded"))
    assert isinstance(error, StreamFailure) and error.error.kind is ErrorKind.SERVER
    for garbage in (b"not json", b"[]", b'{"type":"message"}'):
        [bad] = an.parse_completion(garbage)
        assert isinstance(bad, StreamFailure) and bad.error.kind is ErrorKind.MALFORMED_STREAM
    empty = json.dumps({"type": "message", "content": [], "stop_reason": "end_turn"}).encode()
    assert an.parse_completion(empty) == [Finish("stop")]
