"""The Gemini adapter's pure parts: request building, stream parsing, errors, models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers import gemini as gm
from providers.base import ChatParams, Endpoint, Message
from providers.catalog import PRESETS, PROVIDERS
from providers.errors import ErrorKind, UpstreamError
from providers.events import Finish, StreamFailure, TextDelta, Usage
from tests.fakes import gemini_server as fake

DATA = Path(__file__).resolve().parent.parent / "data"
NOW = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC).timestamp()
KEY = "AIzaSyFAKE-key-0123456789abcdefghijkl"


def parse(raw: bytes, chunk: int | None = None) -> list:  # type: ignore[type-arg]
    parser = gm.StreamParser()
    events = []
    if chunk is None:
        events += parser.feed(raw)
    else:
        for i in range(0, len(raw), chunk):
            events += parser.feed(raw[i : i + chunk])
    return events + parser.finish()


def parse_split(raw: bytes, at: int) -> list:  # type: ignore[type-arg]
    parser = gm.StreamParser()
    return parser.feed(raw[:at]) + parser.feed(raw[at:]) + parser.finish()


def text_of(events: list) -> str:  # type: ignore[type-arg]
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def failure(events: list) -> UpstreamError:  # type: ignore[type-arg]
    assert isinstance(events[-1], StreamFailure), events
    assert not any(isinstance(e, StreamFailure) for e in events[:-1])
    return events[-1].error


def event(doc: object) -> bytes:
    return fake.sse_event(doc)


def answer(text: str, finish: str | None = None, **usage: int) -> bytes:
    candidate: dict[str, object] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    doc: dict[str, object] = {"candidates": [candidate]}
    if usage:
        doc["usageMetadata"] = usage
    return event(doc)


# --- requests -----------------------------------------------------------------------------


def test_build_streaming_chat_request():
    endpoint = Endpoint("https://generativelanguage.googleapis.com/v1beta/", {"X-Extra": "1"})
    params = ChatParams(
        (Message("system", "be brief"), Message("user", "héllo"), Message("assistant", "hi"),
         Message("system", "answer in French"), Message("user", "again")),
        "gemini-2.5-flash", 0.5, 64, 0.9, ("END", "STOP"),
    )  # fmt: skip
    call = gm.build_chat(endpoint, params, KEY)
    assert call.method == "POST"
    assert call.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert call.headers["x-goog-api-key"] == KEY and call.headers["X-Extra"] == "1"
    assert call.headers["Accept"] == "text/event-stream" and call.headers["Accept-Encoding"] == "identity"
    assert call.headers["Content-Type"] == "application/json"
    assert call.body is not None and "héllo".encode() in call.body and b": " not in call.body  # compact UTF-8
    assert json.loads(call.body) == {
        "contents": [
            {"role": "user", "parts": [{"text": "héllo"}]},
            {"role": "model", "parts": [{"text": "hi"}]},
            {"role": "user", "parts": [{"text": "again"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "answer in French"}]},
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 64, "topP": 0.9, "stopSequences": ["END", "STOP"]},
    }
    assert KEY not in repr(call) and KEY not in call.url


def test_build_non_streaming_request_and_unset_parameters_are_omitted():
    call = gm.build_chat(Endpoint("http://h/v1beta", stream=False), ChatParams((Message("user", "hi"),), "m"), None)
    assert call.url == "http://h/v1beta/models/m:generateContent"
    assert call.headers["Accept"] == "application/json" and "x-goog-api-key" not in call.headers
    assert json.loads(call.body or b"") == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_consecutive_turns_of_one_role_are_merged():
    params = ChatParams((Message("user", "a"), Message("user", "b"), Message("assistant", "c")), "m")
    body = json.loads(gm.build_chat(Endpoint("http://h"), params, None).body or b"")
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
    ]


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "/models/gemini-2.5-flash:"),
        ("models/gemini-2.5-flash", "/models/gemini-2.5-flash:"),
        ("tunedModels/my-model-42", "/tunedModels/my-model-42:"),
        ("x?key=leak#y", "/models/x%3Fkey%3Dleak%23y:"),
    ],
)
def test_model_names_become_one_resource_path(model, path):
    call = gm.build_chat(Endpoint("http://h/v1beta"), ChatParams((Message("user", "hi"),), model), "k")
    assert call.url.startswith("http://h/v1beta" + path)
    assert "models/models/" not in call.url and call.url.count("?") == 1


def test_build_models_request():
    call = gm.build_models(Endpoint("https://generativelanguage.googleapis.com/v1beta", {"X-Extra": "1"}), KEY)
    assert call.method == "GET"
    assert call.url == "https://generativelanguage.googleapis.com/v1beta/models?pageSize=1000"
    assert call.headers["x-goog-api-key"] == KEY and call.headers["X-Extra"] == "1" and KEY not in call.url


def test_catalog_entries():
    assert PROVIDERS["gemini"].protocol is gm.PROTOCOL and PROVIDERS["gemini"].default_priority == 30
    preset = PRESETS["gemini"]
    assert (preset.provider, preset.base_url, preset.priority) == (
        "gemini", "https://generativelanguage.googleapis.com/v1beta", 30,
    )  # fmt: skip
    assert preset.default_model.startswith("gemini-")


# --- streams ------------------------------------------------------------------------------


RECORDED = (DATA / "gemini_stream.sse").read_bytes()
EXPECTED = [TextDelta("héllo wörld"), TextDelta(" 日本語 👋"), Finish("stop"), Usage(9, 39)]


def test_recording_is_what_gemini_sends():
    assert RECORDED.count(b"\r\n\r\n") == 3 and b"[DONE]" not in RECORDED
    assert "日本語".encode() in RECORDED  # raw UTF-8, not \\u escapes


def test_recording_gives_text_finish_and_usage_at_every_split_point():
    assert parse(RECORDED) == EXPECTED
    for at in range(len(RECORDED) + 1):
        assert parse_split(RECORDED, at) == EXPECTED, f"split at {at}"
    for size in (1, 2, 3, 7, 64):
        assert parse(RECORDED, size) == EXPECTED


def test_thought_parts_are_not_the_answer_but_count_as_output():
    events = parse(RECORDED)
    assert "Greeting in several languages" not in text_of(events)
    assert Usage(9, 7 + 32) in events


def test_every_text_part_of_the_first_candidate_only():
    raw = event({"candidates": [
        {"content": {"parts": [{"text": "A"}, {"thoughtSignature": "c2ln", "text": ""}, {"text": "B"}]}, "index": 0},
        {"content": {"parts": [{"text": "other candidate"}]}, "index": 1},
    ]}) + answer("C", "STOP")  # fmt: skip
    assert parse(raw) == [TextDelta("A"), TextDelta("B"), TextDelta("C"), Finish("stop")]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
     ("IMAGE_SAFETY", "content_filter"), ("LANGUAGE", "language"), ("OTHER", "other"),
     ("MALFORMED_FUNCTION_CALL", "malformed_function_call")],
)  # fmt: skip
def test_finish_reasons(reason, expected):
    events = parse(answer("some text", reason))
    assert events == [TextDelta("some text"), Finish(expected)]


def test_usage_is_emitted_once_at_the_end_and_the_last_one_wins():
    raw = (
        answer("a", promptTokenCount=5, totalTokenCount=5)
        + answer("b", "STOP", promptTokenCount=5, candidatesTokenCount=2, totalTokenCount=7)
        + event({"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}})
    )
    assert parse(raw) == [TextDelta("a"), TextDelta("b"), Finish("stop"), Usage(5, 3)]


def test_usage_without_candidate_count_has_no_output():
    assert parse(answer("a", "STOP", promptTokenCount=4, totalTokenCount=4))[-1] == Usage(4, None)


def test_stream_without_finish_reason_is_interrupted():
    cut = RECORDED[: RECORDED.index(b'data: {"candidates": [{"content": {"parts": [{"text": " ')]
    events = parse(cut)
    assert text_of(events) == "héllo wörld" and Usage(9, 32) in events
    assert failure(events).kind is ErrorKind.INTERRUPTED
    assert failure(parse(RECORDED[:-3])).kind is ErrorKind.INTERRUPTED  # cut inside the last event
    assert failure(parse(b"")).kind is ErrorKind.INTERRUPTED


def test_finish_is_the_end_marker_and_later_garbage_is_ignored():
    raw = answer("ok", "STOP") + b"data: {not json\r\n\r\n" + answer("late") + fake.OVERLOADED
    assert parse(raw) == [TextDelta("ok"), Finish("stop")]


def test_error_written_outside_sse_framing_mid_stream():
    raw = (DATA / "gemini_midstream_error.sse").read_bytes()
    for at in range(len(raw) + 1):
        events = parse_split(raw, at)
        assert text_of(events) == "Okay, ça commence", f"split at {at}"
        error = failure(events)
        assert error.kind is ErrorKind.SERVER and error.message == "The model is overloaded. Please try again later."
    assert failure(parse(raw.rstrip(b"\n"))).kind is ErrorKind.SERVER  # no final newline


@pytest.mark.parametrize(
    ("body", "kind", "retry_after"),
    [
        (fake.OVERLOADED, ErrorKind.SERVER, None),
        (fake.INTERNAL, ErrorKind.SERVER, None),
        (fake.rate_limit_body("gemini-2.5-flash", retry_delay="7s"), ErrorKind.RATE_LIMITED, 7.0),
        (fake.rate_limit_body("gemini-2.5-flash", per_day=True), ErrorKind.QUOTA, None),
        (b'{"error": {"message": "no code"}}\n', ErrorKind.SERVER, None),
    ],
)
def test_in_band_errors_are_classified(body, kind, retry_after):
    for raw in (answer("a") + body, answer("a") + event(json.loads(body))):  # bare, or as a data: event
        events = parse(raw + answer("ignored", "STOP"))
        error = failure(events)
        assert events[0] == TextDelta("a") and "ignored" not in text_of(events)
        assert error.kind is kind and error.retry_after == retry_after and error.message


@pytest.mark.parametrize("raw", [b"data: {not json}\r\n\r\n", b"data: [1, 2]\r\n\r\n", b"<html>\n<body>oops</body>\n"])
def test_garbage_is_malformed(raw):
    events = parse(answer("a") + raw + answer("ignored", "STOP"))
    assert failure(events).kind is ErrorKind.MALFORMED_STREAM and "ignored" not in text_of(events)


def test_endless_stray_lines_are_malformed():
    events = parse(answer("a") + b"{\n" + b'  "x": "' + b"y" * 70000 + b'",\n')
    assert failure(events).kind is ErrorKind.MALFORMED_STREAM


def test_sse_comments_and_other_fields_are_not_stray():
    raw = b": keep-alive\r\nevent: message\r\nid: 1\r\n" + answer("a", "STOP")
    assert parse(raw) == [TextDelta("a"), Finish("stop")]


def test_prompt_blocked_is_blocked():
    raw = (DATA / "gemini_prompt_blocked.sse").read_bytes()
    for at in range(len(raw) + 1):
        error = failure(parse_split(raw, at))
        assert error.kind is ErrorKind.BLOCKED and "PROHIBITED_CONTENT" in error.message and "prompt" in error.message


def test_answer_blocked_before_any_text_is_blocked_and_names_the_category():
    ratings = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
               {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]  # fmt: skip
    raw = event({"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "SAFETY",
                                 "safetyRatings": ratings}]})  # fmt: skip
    error = failure(parse(raw))
    assert error.kind is ErrorKind.BLOCKED
    assert "SAFETY" in error.message and "HARM_CATEGORY_DANGEROUS_CONTENT" in error.message
    assert "HARASSMENT" not in error.message


def test_filter_after_some_text_is_a_content_filter_finish():
    assert parse(answer("partial", "SAFETY"))[-1] == Finish("content_filter")


def test_no_input_after_a_failure():
    parser = gm.StreamParser()
    assert isinstance(parser.feed(b"data: nope\r\n\r\n")[-1], StreamFailure)
    assert parser.feed(answer("more", "STOP")) == [] and parser.finish() == []


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after", "code"),
    [
        (400, {}, fake.INVALID_KEY, ErrorKind.AUTH, None, "API_KEY_INVALID"),
        (403, {}, fake.MISSING_KEY, ErrorKind.AUTH, None, "PERMISSION_DENIED"),
        (400, {}, fake.FREE_TIER_UNAVAILABLE, ErrorKind.AUTH, None, "FAILED_PRECONDITION"),
        (429, {}, fake.rate_limit_body("gemini-2.5-flash"), ErrorKind.RATE_LIMITED, 37.0, "RESOURCE_EXHAUSTED"),
        (429, {"Retry-After": "5"}, fake.rate_limit_body("m"), ErrorKind.RATE_LIMITED, 5.0, "RESOURCE_EXHAUSTED"),
        (429, {"retry-after": "Wed, 25 Nov 2026 16:00:30 GMT"}, fake.rate_limit_body("m", retry_delay=None),
         ErrorKind.RATE_LIMITED, 30.0, "RESOURCE_EXHAUSTED"),
        (429, {}, fake.rate_limit_body("m", retry_delay="0.25s"), ErrorKind.RATE_LIMITED, 0.25, "RESOURCE_EXHAUSTED"),
        (429, {}, fake.rate_limit_body("m", per_day=True), ErrorKind.QUOTA, None, "RESOURCE_EXHAUSTED"),
        (429, {}, fake.rate_limit_body("m", limit=0), ErrorKind.QUOTA, None, "RESOURCE_EXHAUSTED"),
        (402, {}, fake.error_body(402, "Your prepayment credits are depleted.", "RESOURCE_EXHAUSTED"),
         ErrorKind.QUOTA, None, "RESOURCE_EXHAUSTED"),
        (404, {}, fake.not_found_body("gemini-9"), ErrorKind.NOT_FOUND, None, "NOT_FOUND"),
        (404, {}, fake.html_404("/v1beta/nope"), ErrorKind.NOT_FOUND, None, None),
        (400, {}, fake.TOO_MANY_TOKENS, ErrorKind.BAD_REQUEST, None, "INVALID_ARGUMENT"),
        (500, {}, fake.INTERNAL, ErrorKind.SERVER, None, "INTERNAL"),
        (503, {}, fake.OVERLOADED, ErrorKind.SERVER, None, "UNAVAILABLE"),
        (504, {}, fake.error_body(504, "Deadline expired before operation could complete.", "DEADLINE_EXCEEDED"),
         ErrorKind.SERVER, None, "DEADLINE_EXCEEDED"),
        (502, {}, b"upstream connect error", ErrorKind.SERVER, None, None),
        (503, {}, b"", ErrorKind.SERVER, None, None),
        (429, {}, b'[{"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}]',
         ErrorKind.RATE_LIMITED, None, "RESOURCE_EXHAUSTED"),
    ],
)  # fmt: skip
def test_parse_error(status, headers, body, kind, retry_after, code):
    error = gm.parse_error(status, headers, body, NOW)
    assert error.kind is kind and error.status == status and error.code == code
    assert error.retry_after == retry_after
    assert error.message and "<" not in error.message and "{" not in error.message and len(error.message) <= 300


def test_parse_error_messages():
    assert gm.parse_error(400, {}, fake.INVALID_KEY, NOW).message == "API key not valid. Please pass a valid API key."
    assert gm.parse_error(404, {}, fake.html_404("/x"), NOW).message == "HTTP 404"
    assert gm.parse_error(502, {}, b"upstream connect error", NOW).message == "upstream connect error"
    quota = gm.parse_error(429, {}, fake.rate_limit_body("m"), NOW).message
    assert quota.startswith("You exceeded your current quota") and "\n" not in quota


def test_a_bad_argument_is_not_retried_elsewhere_but_a_bad_key_is():
    assert not gm.parse_error(400, {}, fake.TOO_MANY_TOKENS, NOW).retryable
    assert gm.parse_error(400, {}, fake.INVALID_KEY, NOW).retryable


# --- models and whole answers -------------------------------------------------------------


def test_parse_models_keeps_chat_models_without_prefix():
    body = json.dumps({"models": [
        {"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent", "countTokens"]},
        {"name": "models/gemini-embedding-001", "supportedGenerationMethods": ["embedContent"]},
        {"name": "models/no-methods"},
        {"displayName": "nameless", "supportedGenerationMethods": ["generateContent"]},
        {"name": "models/gemma-3-27b-it", "supportedGenerationMethods": ["generateContent"]},
    ], "nextPageToken": "abc"}).encode()  # fmt: skip
    assert gm.parse_models(body) == ("gemini-2.5-flash", "gemma-3-27b-it")
    assert gm.parse_models(b"{}") == ()
    for bad in (b"<html>", b"[]", b'{"models": 3}'):
        with pytest.raises(UpstreamError) as info:
            gm.parse_models(bad)
        assert info.value.kind is ErrorKind.MALFORMED_STREAM


def completion(text: str = "Bonjour 👋", finish: str = "STOP") -> bytes:
    parts = [{"text": "thinking…", "thought": True}, {"text": text[:3]}, {"text": text[3:]}]
    return fake.pretty({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": finish,
                                        "index": 0}],
                        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 17,
                                          "thoughtsTokenCount": 10},
                        "modelVersion": "gemini-2.5-flash", "responseId": "abc"})  # fmt: skip


def test_parse_completion():
    assert gm.parse_completion(completion()) == [TextDelta("Bonjour 👋"), Finish("stop"), Usage(4, 13)]
    assert gm.parse_completion(completion("cut", "MAX_TOKENS"))[1] == Finish("length")


def test_parse_completion_of_a_json_array_stream():
    docs = [json.loads(answer("a").removeprefix(b"data: ")), json.loads(answer("b", "STOP").removeprefix(b"data: "))]
    assert gm.parse_completion(json.dumps(docs).encode()) == [TextDelta("ab"), Finish("stop")]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"<html>", ErrorKind.MALFORMED_STREAM),
        (b"[1]", ErrorKind.MALFORMED_STREAM),
        (fake.OVERLOADED, ErrorKind.SERVER),
        (fake.rate_limit_body("m"), ErrorKind.RATE_LIMITED),
        (
            fake.pretty({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}),
            ErrorKind.BLOCKED,
        ),
        (fake.pretty({"candidates": [{"finishReason": "PROHIBITED_CONTENT", "index": 0}]}), ErrorKind.BLOCKED),
    ],
)
def test_parse_completion_failures(body, kind):
    events = gm.parse_completion(body)
    assert len(events) == 1 and isinstance(events[0], StreamFailure) and events[0].error.kind is kind


def test_parse_completion_without_candidates_is_an_empty_answer():
    assert gm.parse_completion(b'{"usageMetadata": {"promptTokenCount": 3}}') == [Finish(None), Usage(3, None)]
