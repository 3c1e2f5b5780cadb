"""The Cohere v2 adapter's pure parts: request building, stream parsing, errors, models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers import cohere
from providers.base import ChatParams, Endpoint, Message
from providers.catalog import PRESETS, PROVIDERS
from providers.errors import ErrorKind, UpstreamError, excerpt
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage
from tests.fakes import cohere_server as fake

DATA = Path(__file__).resolve().parent.parent / "data"
TEXT = "héllo wörld 日本語 👋"


def parse(raw: bytes) -> list[Event]:
    parser = cohere.StreamParser()
    return parser.feed(raw) + parser.finish()


def parse_split(raw: bytes, at: int) -> list[Event]:
    parser = cohere.StreamParser()
    return parser.feed(raw[:at]) + parser.feed(raw[at:]) + parser.finish()


def parse_bytewise(raw: bytes) -> list[Event]:
    parser = cohere.StreamParser()
    events: list[Event] = []
    for i in range(len(raw)):
        events += parser.feed(raw[i : i + 1])
    return events + parser.finish()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def failure(events: list[Event]) -> UpstreamError:
    assert isinstance(events[-1], StreamFailure), events
    assert sum(isinstance(e, StreamFailure) for e in events) == 1
    return events[-1].error


RECORDINGS = {
    "cohere_stream.sse": (TEXT, [Finish("stop"), Usage(506, 8)]),
    "cohere_stream.ndjson": (TEXT, [Finish("stop"), Usage(506, 8)]),
    # thinking is skipped, MAX_TOKENS is length, usage falls back to billed_units, [DONE] is ignored
    "cohere_stream_reasoning.sse": ("Bonjour ! Ça va ? — 🙂", [Finish("length"), Usage(12, 20)]),
}


@pytest.mark.parametrize("name", RECORDINGS)
def test_recordings_give_the_same_events_split_at_every_point(name):
    raw = (DATA / name).read_bytes()
    text, tail = RECORDINGS[name]
    whole = parse(raw)
    assert text_of(whole) == text
    assert [e for e in whole if not isinstance(e, TextDelta)] == tail
    for at in range(len(raw) + 1):
        assert parse_split(raw, at) == whole, f"split at {at}"
    assert parse_bytewise(raw) == whole


def test_crlf_framing_split_everywhere_gives_the_same_events():
    raw = (DATA / "cohere_stream.sse").read_bytes().replace(b"\n", b"\r\n")
    whole = parse(raw)
    assert text_of(whole) == TEXT and whole[-1] == Usage(506, 8)
    for at in range(len(raw) + 1):
        assert parse_split(raw, at) == whole
    ndjson = (DATA / "cohere_stream.ndjson").read_bytes().replace(b"\n", b"\r\n")
    assert parse(ndjson) == whole


def test_stream_cut_before_message_end_is_interrupted():
    raw = (DATA / "cohere_stream.sse").read_bytes()
    for cut in (raw[: raw.index(b"event: message-end")], raw[: raw.index(b'"finish_reason"')], b""):
        events = parse(cut)
        error = failure(events)
        assert (
            error.kind is ErrorKind.INTERRUPTED and error.message == "the upstream stream ended before it was complete"
        )
        assert not any(isinstance(e, (Finish, Usage)) for e in events)
    events = parse(raw[: raw.index(b"event: message-end")])
    assert text_of(events) == TEXT


def test_done_without_message_end_is_interrupted():
    raw = (DATA / "cohere_stream.sse").read_bytes()
    cut = raw[: raw.index(b"event: content-end")] + b"data: [DONE]\n\n"
    assert failure(parse(cut)).kind is ErrorKind.INTERRUPTED


def test_everything_after_message_end_is_ignored():
    raw = (DATA / "cohere_stream.sse").read_bytes()
    extra = fake.event_bytes(fake.content_delta("late")) + b"data: {broken\n\n"
    assert parse(raw + extra) == parse(raw)
    parser = cohere.StreamParser()
    parser.feed(raw)
    assert parser.feed(extra) == [] and parser.finish() == []


def test_ndjson_last_line_without_newline_still_completes():
    raw = (DATA / "cohere_stream.ndjson").read_bytes().rstrip(b"\n")
    assert parse(raw)[-2:] == [Finish("stop"), Usage(506, 8)]


def test_events_are_read_by_their_type_and_unknown_ones_skipped():
    body = b"".join(
        fake.event_bytes(doc)
        for doc in (
            fake.message_start(),
            {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will look it up"}}},
            {
                "type": "tool-call-start",
                "index": 0,
                "delta": {
                    "message": {
                        "tool_calls": {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
                    }
                },
            },  # fmt: skip
            {"type": "tool-call-end", "index": 0},
            {
                "type": "citation-start",
                "index": 0,
                "delta": {"message": {"citations": {"start": 0, "end": 1, "text": "A"}}},
            },
            {"type": "citation-end", "index": 0},
            {"type": "debug", "prompt": "raw prompt"},
            {"type": "some-future-event", "delta": {"message": {"content": {"text": "not text"}}}},
            fake.content_start(),
            {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": None}}}},
            fake.content_delta("A"),
            fake.message_end("TOOL_CALL", None),
        )
    )
    assert parse(body) == [TextDelta("A"), Finish("tool_calls")]


def test_type_missing_from_data_falls_back_to_the_event_line():
    body = b'event: content-delta\ndata: {"delta":{"message":{"content":{"text":"x"}}}}\n\n'
    body += b'event: message-end\ndata: {"delta":{"finish_reason":"STOP_SEQUENCE"}}\n\n'
    assert parse(body) == [TextDelta("x"), Finish("stop")]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls"),
     ("SOMETHING_NEW", "something_new"), (None, None)],
)  # fmt: skip
def test_finish_reasons_are_normalised(reason, expected):
    end = {"type": "message-end", "delta": {"finish_reason": reason}} if reason else {"type": "message-end"}
    assert parse(fake.event_bytes(fake.content_delta("a")) + fake.event_bytes(end)) == [
        TextDelta("a"),
        Finish(expected),
    ]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"billed_units": {"input_tokens": 5, "output_tokens": 26}, "tokens": {"input_tokens": 71, "output_tokens": 26}},
         Usage(71, 26)),
        ({"billed_units": {"input_tokens": 5.0, "output_tokens": 26.0}}, Usage(5, 26)),
        ({"tokens": {"input_tokens": 7}, "billed_units": {"output_tokens": 3}, "cached_tokens": 2}, Usage(7, 3)),
        ({"billed_units": {"search_units": 1}}, None),
        ({"tokens": {"input_tokens": True, "output_tokens": "9"}}, None),
        ("nonsense", None),
    ],
)  # fmt: skip
def test_usage_prefers_tokens_and_falls_back_to_billed_units(usage, expected):
    events = parse(fake.event_bytes({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}}))
    assert events == [Finish("stop")] + ([expected] if expected else [])


@pytest.mark.parametrize(
    ("reason", "error", "kind"),
    [
        ("ERROR", "internal error during generation", ErrorKind.SERVER),
        ("ERROR", None, ErrorKind.SERVER),
        ("TIMEOUT", None, ErrorKind.TIMEOUT),
        ("TIMEOUT", "generation exceeded the time limit", ErrorKind.TIMEOUT),
        ("ERROR", "blocked output: the answer may violate our Usage Guidelines", ErrorKind.BLOCKED),
        ("ERROR_TOXIC", None, ErrorKind.BLOCKED),
        (
            "ERROR",
            "You are past the per minute request limit, please wait and try again later.",
            ErrorKind.RATE_LIMITED,
        ),
        ("COMPLETE", "an error in a complete message still fails", ErrorKind.SERVER),
    ],
)
def test_failed_generation_at_message_end_is_a_failure_not_an_answer(reason, error, kind):
    end = fake.message_end(reason, fake.usage(3, 0), error)
    for prefix in (b"", fake.event_bytes(fake.content_delta("partial"))):
        events = parse(fake.event_bytes(fake.message_start()) + prefix + fake.event_bytes(end))
        err = failure(events)
        assert err.kind is kind and err.message
        assert not any(isinstance(e, Finish) for e in events)
        assert Usage(203, 0) in events  # usage is still reported, before the failure
        if error:
            assert err.message == error


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"event: content-delta\ndata: {not json}\n\n", ErrorKind.MALFORMED_STREAM),
        (b"event: content-delta\ndata: [1, 2]\n\n", ErrorKind.MALFORMED_STREAM),
        (b'event: error\ndata: {"id":"x","message":"internal server error"}\n\n', ErrorKind.SERVER),
        (b'data: {"id":"x","message":"You are past the per minute request limit, please wait and try again later."}\n\n',
         ErrorKind.RATE_LIMITED),
        (b'data: {"id":"x","message":"You are using a Trial key, which is limited to 1000 API calls / month."}\n\n',
         ErrorKind.QUOTA),
        (b'data: {"id":"x","message":"blocked input: please adjust your prompt and try again"}\n\n', ErrorKind.BLOCKED),
    ],
)  # fmt: skip
def test_in_band_errors_and_garbage_end_the_stream(raw, kind):
    events = parse(fake.event_bytes(fake.content_delta("a")) + raw + fake.event_bytes(fake.content_delta("ignored")))
    assert events[0] == TextDelta("a")
    assert failure(events).kind is kind
    assert "ignored" not in text_of(events)


def test_ndjson_garbage_is_malformed():
    assert failure(parse(b'{"type":"message-start"}\nnot json\n')).kind is ErrorKind.MALFORMED_STREAM


def test_build_chat_streaming_request():
    endpoint = Endpoint("https://api.cohere.com/", {"X-Client-Name": "cortex"})
    params = ChatParams(
        (Message("system", "be brief"), Message("user", "héllo"), Message("assistant", "hi"), Message("user", "again")),
        "command-a-03-2025", 0.5, 10, 0.9, ("END", "STOP"),
    )  # fmt: skip
    call = cohere.build_chat(endpoint, params, "co-secret-key")
    assert call.method == "POST" and call.url == "https://api.cohere.com/v2/chat"
    assert call.headers["Authorization"] == "Bearer co-secret-key" and call.headers["X-Client-Name"] == "cortex"
    assert call.headers["Accept"] == "text/event-stream" and call.headers["Accept-Encoding"] == "identity"
    assert call.headers["Content-Type"] == "application/json"
    assert call.body is not None and "héllo".encode() in call.body and b" " not in call.body.replace(b"be brief", b"")
    assert json.loads(call.body) == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "héllo"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"},
        ],
        "stream": True,
        "temperature": 0.5,
        "max_tokens": 10,
        "p": 0.9,
        "stop_sequences": ["END", "STOP"],
    }
    assert "co-secret-key" not in repr(call) and "co-secret-key" not in call.url
    assert b"co-secret-key" not in call.body


def test_build_chat_omits_unset_parameters_and_the_key_when_there_is_none():
    call = cohere.build_chat(Endpoint("http://h:1"), ChatParams((Message("user", "hi"),), "m"), None)
    assert json.loads(call.body or b"") == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    assert "Authorization" not in call.headers


def test_non_streaming_request_when_the_worker_streams_off():
    call = cohere.build_chat(Endpoint("http://h", stream=False), ChatParams((Message("user", "hi"),), "m", 0.0), "k")
    body = json.loads(call.body or b"")
    assert body["stream"] is False and body["temperature"] == 0.0
    assert call.headers["Accept"] == "application/json" and "Accept-Encoding" not in call.headers


def test_build_models():
    call = cohere.build_models(Endpoint("https://api.cohere.com", {"X-Extra": "1"}), "co-secret-key")
    assert call.method == "GET" and call.url == "https://api.cohere.com/v1/models?endpoint=chat&page_size=1000"
    assert call.headers["Authorization"] == "Bearer co-secret-key" and call.headers["X-Extra"] == "1"
    assert call.body is None and "co-secret-key" not in repr(call)


def test_parse_models():
    body = json.dumps({"models": [{"name": "command-a-03-2025", "endpoints": ["chat"]}, {"name": "command-r7b-12-2024"},
                                  {"endpoints": ["chat"]}, {"name": ""}, "junk"], "next_page_token": "t"}).encode()  # fmt: skip
    assert cohere.parse_models(body) == ("command-a-03-2025", "command-r7b-12-2024")
    for bad in (b"<html>", b'{"data": []}', b"[]"):
        with pytest.raises(UpstreamError) as info:
            cohere.parse_models(bad)
        assert info.value.kind is ErrorKind.MALFORMED_STREAM


NOW = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after"),
    [
        (400, {}, fake.BAD_TEMPERATURE, ErrorKind.BAD_REQUEST, None),
        (400, {}, fake.TOO_MANY_TOKENS, ErrorKind.BAD_REQUEST, None),
        (400, {}, fake.error_body("invalid request: model 'command-r' is not supported by the generate API"),
         ErrorKind.NOT_FOUND, None),
        (400, {}, fake.error_body("invalid request: multi step is not supported by the provided model: command."),
         ErrorKind.BAD_REQUEST, None),
        (401, {}, fake.INVALID_TOKEN, ErrorKind.AUTH, None),
        (401, {}, fake.NO_API_KEY, ErrorKind.AUTH, None),
        (403, {}, b"Forbidden", ErrorKind.AUTH, None),
        (402, {}, fake.PAYMENT_REQUIRED, ErrorKind.QUOTA, None),
        (404, {}, fake.model_not_found("command-x"), ErrorKind.NOT_FOUND, None),
        (422, {}, fake.error_body("invalid request: messages must not be empty"), ErrorKind.BAD_REQUEST, None),
        (429, {"Retry-After": "7"}, fake.RATE_LIMITED, ErrorKind.RATE_LIMITED, 7.0),
        (429, {"retry-after": "Wed, 25 Nov 2026 16:00:30 GMT"}, fake.RATE_LIMITED, ErrorKind.RATE_LIMITED, 30.0),
        (429, {}, fake.error_body("trial token rate limit exceeded, limit is 100000 tokens per minute"),
         ErrorKind.RATE_LIMITED, None),
        (429, {}, fake.TRIAL_MONTHLY_LIMIT, ErrorKind.QUOTA, None),
        (498, {}, fake.BLOCKED_INPUT, ErrorKind.BLOCKED, None),
        (499, {}, fake.REQUEST_CANCELLED, ErrorKind.SERVER, None),
        (500, {}, fake.INTERNAL_ERROR, ErrorKind.SERVER, None),
        (500, {}, b"<html><body>oops</body></html>", ErrorKind.SERVER, None),
        (503, {}, fake.UNAVAILABLE, ErrorKind.SERVER, None),
        (504, {}, b"", ErrorKind.SERVER, None),
    ],
)  # fmt: skip
def test_parse_error(status, headers, body, kind, retry_after):
    error = cohere.parse_error(status, headers, body, NOW)
    assert error.kind is kind and error.status == status and error.retry_after == retry_after
    assert error.message and "<html>" not in error.message and "{" not in error.message
    message = json.loads(body).get("message") if body.startswith(b"{") else None
    if message:
        assert error.message == excerpt(message)


def test_parse_error_without_a_message_says_the_status():
    assert cohere.parse_error(500, {}, b'{"id":"x"}', NOW).message == "HTTP 500"


def test_parse_completion():
    body = json.dumps({
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "message": {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "héllo "},
                                                     {"type": "text", "text": "👋"}]},
        "finish_reason": "COMPLETE",
        "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 418}, "tokens": {"input_tokens": 71, "output_tokens": 418}},
    }, ensure_ascii=False).encode()  # fmt: skip
    assert cohere.parse_completion(body) == [TextDelta("héllo 👋"), Finish("stop"), Usage(71, 418)]


def test_parse_completion_tool_call_without_text_and_max_tokens():
    body = b'{"id":"x","message":{"role":"assistant","tool_plan":"plan","tool_calls":[]},"finish_reason":"TOOL_CALL"}'
    assert cohere.parse_completion(body) == [Finish("tool_calls")]
    body = b'{"id":"x","message":{"role":"assistant","content":[{"type":"text","text":"cut"}]},"finish_reason":"MAX_TOKENS"}'
    assert cohere.parse_completion(body) == [TextDelta("cut"), Finish("length")]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"<html>", ErrorKind.MALFORMED_STREAM),
        (b"[]", ErrorKind.MALFORMED_STREAM),
        (b'{"id":"x"}', ErrorKind.MALFORMED_STREAM),
        (fake.INTERNAL_ERROR, ErrorKind.SERVER),
        (fake.BLOCKED_INPUT, ErrorKind.BLOCKED),
        (b'{"id":"x","message":{"role":"assistant","content":[]},"finish_reason":"ERROR"}', ErrorKind.SERVER),
        (b'{"id":"x","message":{"role":"assistant","content":[{"type":"text","text":"a"}]},"finish_reason":"TIMEOUT"}',
         ErrorKind.TIMEOUT),
    ],
)  # fmt: skip
def test_parse_completion_failures(body, kind):
    events = cohere.parse_completion(body)
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is kind
    assert not any(isinstance(e, (Finish, TextDelta)) for e in events)


def test_parse_completion_reads_a_whole_newline_delimited_stream():
    raw = (DATA / "cohere_stream.ndjson").read_bytes()
    assert cohere.parse_completion(raw) == parse(raw)
    cut = raw[: raw.index(b'{"type":"message-end"')]
    assert failure(cohere.parse_completion(cut)).kind is ErrorKind.INTERRUPTED


def test_registered_in_the_catalog():
    assert PROVIDERS["cohere"].protocol is cohere.PROTOCOL and PROVIDERS["cohere"].default_priority == 40
    assert PROVIDERS["cohere"].info.type == "cohere"
    preset = PRESETS["cohere"]
    assert (preset.provider, preset.base_url, preset.priority) == ("cohere", "https://api.cohere.com", 40)
    assert preset.default_model == "command-a-03-2025"
