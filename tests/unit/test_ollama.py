"""Ollama's native protocol, pure parts: request building, stream parsing, errors, models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers import ollama
from providers.base import ChatParams, Endpoint, Message
from providers.errors import ErrorKind, UpstreamError
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage

DATA = Path(__file__).resolve().parent.parent / "data"
CHAT = (DATA / "ollama_chat.ndjson").read_bytes()
THINKING = (DATA / "ollama_thinking.ndjson").read_bytes()


def parse(raw: bytes) -> list[Event]:
    parser = ollama.ChatParser()
    return parser.feed(raw) + parser.finish()


def parse_split(raw: bytes, at: int) -> list[Event]:
    parser = ollama.ChatParser()
    return parser.feed(raw[:at]) + parser.feed(raw[at:]) + parser.finish()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def failure(events: list[Event]) -> UpstreamError:
    assert isinstance(events[-1], StreamFailure), events
    assert not any(isinstance(e, StreamFailure) for e in events[:-1])
    return events[-1].error


# --- requests ------------------------------------------------------------------------------


def test_build_streaming_chat_request():
    endpoint = Endpoint("http://127.0.0.1:11434", {"X-Extra": "1"})
    messages = (Message("system", "be brief"), Message("user", "hi"), Message("assistant", "yo"), Message("user", "é?"))
    params = ChatParams(messages, "llama3.2", temperature=0.5, max_tokens=10, top_p=0.9, stop=("END", "\n\n"))
    call = ollama.build_chat(endpoint, params, "sk-proxy-key")
    assert call.method == "POST" and call.url == "http://127.0.0.1:11434/api/chat"
    assert call.headers["Authorization"] == "Bearer sk-proxy-key" and call.headers["X-Extra"] == "1"
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["Accept"] == "application/x-ndjson" and call.headers["Accept-Encoding"] == "identity"
    assert call.body is not None and "é".encode() in call.body and b" " not in call.body.replace(b"be brief", b"")
    assert json.loads(call.body) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "é?"},
        ],
        "stream": True,
        "options": {"temperature": 0.5, "num_predict": 10, "top_p": 0.9, "stop": ["END", "\n\n"]},
    }
    assert "sk-proxy-key" not in repr(call) and "sk-proxy-key" not in call.url


def test_build_request_without_key_options_or_keep_alive():
    call = ollama.build_chat(Endpoint("http://h:11434"), ChatParams((Message("user", "hi"),), "m"), None)
    assert "Authorization" not in call.headers
    assert json.loads(call.body or b"") == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }


def test_non_streaming_request():
    call = ollama.build_chat(Endpoint("http://h:11434", stream=False), ChatParams((Message("user", "hi"),), "m"), None)
    assert json.loads(call.body or b"")["stream"] is False
    assert call.headers["Accept"] == "application/json"


@pytest.mark.parametrize(
    ("configured", "sent"),
    [("5m", "5m"), ("1h30m", "1h30m"), ("-1", -1), ("300", 300), ("0", 0), ("2.5", 2.5), (" 10m ", "10m")],
)
def test_keep_alive_numbers_go_out_as_numbers(configured, sent):
    endpoint = Endpoint("http://h:11434", keep_alive=configured)
    body = json.loads(ollama.build_chat(endpoint, ChatParams((Message("user", "hi"),), "m"), None).body or b"")
    assert body["keep_alive"] == sent and type(body["keep_alive"]) is type(sent)


def test_build_models_request():
    call = ollama.build_models(Endpoint("http://h:11434"), "k")
    assert (call.method, call.url, call.body) == ("GET", "http://h:11434/api/tags", None)
    assert call.headers["Authorization"] == "Bearer k"


# --- streams -------------------------------------------------------------------------------


def test_recorded_stream_at_every_split_point():
    expected = [TextDelta("H"), TextDelta("éllo"), TextDelta(" wörld"), TextDelta(" 日本語"), TextDelta(" 👋"),
                TextDelta(" & <b>bye</b>"), Finish("stop"), Usage(31, 7)]  # fmt: skip
    assert parse(CHAT) == expected
    for at in range(len(CHAT) + 1):
        assert parse_split(CHAT, at) == expected, f"split at {at}"
    parser = ollama.ChatParser()
    bytewise = [e for i in range(len(CHAT)) for e in parser.feed(CHAT[i : i + 1])] + parser.finish()
    assert bytewise == expected


def test_thinking_is_skipped_and_a_cached_prompt_has_no_input_count():
    expected = [
        TextDelta("Ça"),
        TextDelta(" va très bien"),
        TextDelta(", merci ! 🙂"),
        Finish("length"),
        Usage(None, 12),
    ]
    for at in range(len(THINKING) + 1):
        assert parse_split(THINKING, at) == expected, f"split at {at}"


def test_crlf_lines_are_accepted():
    assert parse(CHAT.replace(b"\n", b"\r\n")) == parse(CHAT)


def test_done_line_without_reason_or_counts():
    raw = b'{"message":{"role":"assistant","content":"a"},"done":false}\n{"message":{"role":"assistant","content":"b"},"done":true}\n'
    assert parse(raw) == [TextDelta("a"), TextDelta("b"), Finish(None)]


def test_unknown_done_reason_is_lower_cased():
    assert parse(b'{"message":{"role":"assistant","content":"x"},"done":true,"done_reason":"Tool_Calls"}\n')[
        1
    ] == Finish("tool_calls")


@pytest.mark.parametrize("reason", ["load", "unload"])
def test_load_or_unload_without_text_is_empty(reason):
    raw = b'{"model":"llama3.2","created_at":"2024-09-12T21:17:29.110811Z","message":{"role":"assistant","content":""},"done_reason":"%s","done":true}\n'
    error = failure(parse(raw % reason.encode()))
    assert error.kind is ErrorKind.EMPTY and reason in error.message


def test_stream_ending_without_done_line_is_interrupted():
    cut = CHAT[: CHAT.index(b'{"model":"llama3.2","created_at":"2025-11-24T16:00:00.532861Z"')]
    events = parse(cut)
    assert text_of(events) == "Héllo wörld 日本語 👋 & <b>bye</b>"
    error = failure(events)
    assert error.kind is ErrorKind.INTERRUPTED and error.message == "the upstream stream ended before it was complete"


def test_stream_cut_inside_a_line_is_interrupted():
    events = parse(CHAT[: CHAT.index(" wörld".encode()) + 3])
    assert text_of(events) == "Héllo" and failure(events).kind is ErrorKind.INTERRUPTED


def test_done_line_without_final_newline_completes():
    assert parse(CHAT.rstrip(b"\n"))[-2:] == [Finish("stop"), Usage(31, 7)]


@pytest.mark.parametrize(
    ("line", "kind", "message"),
    [
        (
            b'{"error":"an error was encountered while running the model"}\n',
            ErrorKind.SERVER,
            "an error was encountered",
        ),
        (b'{"error":"rate limit exceeded"}\n', ErrorKind.RATE_LIMITED, "rate limit exceeded"),
        (b'{"error":"model is overloaded"}\n', ErrorKind.SERVER, "model is overloaded"),
        (b'{"error":{"message":"proxy says no","type":"server_error"}}\n', ErrorKind.SERVER, "proxy says no"),
        (b'{"error":""}\n', ErrorKind.SERVER, "mid-stream"),
        (b"not json\n", ErrorKind.MALFORMED_STREAM, "not JSON"),
        (b"[1,2]\n", ErrorKind.MALFORMED_STREAM, "not a JSON object"),
        (b'{"t":"\xff"}\n', ErrorKind.MALFORMED_STREAM, "UTF-8"),
    ],
)
def test_in_band_errors_and_garbage_end_the_stream(line, kind, message):
    before = b'{"model":"m","created_at":"t","message":{"role":"assistant","content":"a"},"done":false}\n'
    after = b'{"model":"m","created_at":"t","message":{"role":"assistant","content":"ignored"},"done":true,"done_reason":"stop"}\n'
    events = parse(before + line + after)
    assert events[0] == TextDelta("a")
    error = failure(events)
    assert error.kind is kind and message in error.message
    assert "ignored" not in text_of(events)


def test_input_after_the_done_line_is_ignored():
    events = parse(CHAT + b'{"error":"late"}\n' + b"garbage")
    assert events[-2:] == [Finish("stop"), Usage(31, 7)]


def test_over_long_line_is_malformed():
    parser = ollama.ChatParser()
    events = parser.feed(b'{"message":{"content":"' + b"x" * (9 * 1024 * 1024))
    assert failure(events).kind is ErrorKind.MALFORMED_STREAM and parser.feed(b'"}}\n') == []


# --- whole answers -------------------------------------------------------------------------

WHOLE = (
    b'{"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799Z","message":{"role":"assistant",'
    b'"content":"Hello! How are you today? \xf0\x9f\x91\x8b"},"done_reason":"stop","done":true,"total_duration":5191566416,'
    b'"load_duration":2154458,"prompt_eval_count":26,"prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}'
)


def test_parse_completion():
    assert ollama.parse_completion(WHOLE) == [TextDelta("Hello! How are you today? 👋"), Finish("stop"), Usage(26, 298)]


def test_parse_completion_skips_thinking_and_reports_length():
    body = b'{"message":{"role":"assistant","content":"ok","thinking":"hmm"},"done":true,"done_reason":"length","eval_count":3}'
    assert ollama.parse_completion(body) == [TextDelta("ok"), Finish("length"), Usage(None, 3)]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"error":"model requires more system memory (5.6 GiB) than is available (2.1 GiB)"}', ErrorKind.SERVER),
        (b"<html>502</html>", ErrorKind.MALFORMED_STREAM),
        (b"[]", ErrorKind.MALFORMED_STREAM),
        (b'{"message":{"role":"assistant","content":""},"done_reason":"load","done":true}', ErrorKind.EMPTY),
        (b'{"message":{"role":"assistant","content":"part"},"done":false}', ErrorKind.INTERRUPTED),
    ],
)
def test_parse_completion_failures(body, kind):
    events = ollama.parse_completion(body)
    assert isinstance(events[-1], StreamFailure) and events[-1].error.kind is kind


def test_parse_completion_of_a_body_that_was_streamed_anyway():
    assert ollama.parse_completion(CHAT) == parse(CHAT)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after", "message"),
    [
        (404, {}, b'{"error":"model \\"llama9\\" not found, try pulling it first"}', ErrorKind.NOT_FOUND, None,
         'model "llama9" not found, try pulling it first'),
        (404, {}, b"{\"error\":\"model 'llama9' not found\"}", ErrorKind.NOT_FOUND, None, "model 'llama9' not found"),
        (404, {"Content-Type": "text/plain"}, b"404 page not found", ErrorKind.NOT_FOUND, None, "404 page not found"),
        (400, {}, b'{"error":"\\"nomic-embed-text\\" does not support chat"}', ErrorKind.NOT_FOUND, None,
         '"nomic-embed-text" does not support chat'),
        (400, {}, b'{"error":"model is required"}', ErrorKind.BAD_REQUEST, None, "model is required"),
        (400, {}, b'{"error":"json: cannot unmarshal string into Go struct field ChatRequest.messages"}',
         ErrorKind.BAD_REQUEST, None, "json: cannot unmarshal"),
        (500, {}, b'{"error":"llama runner process has terminated: exit status 2"}', ErrorKind.SERVER, None,
         "llama runner process has terminated"),
        (503, {}, b'{"error":"server busy, please try again.  maximum pending requests exceeded"}', ErrorKind.SERVER,
         None, "server busy, please try again. maximum pending requests exceeded"),
        (429, {"Retry-After": "7"}, b'{"error":"rate limit exceeded"}', ErrorKind.RATE_LIMITED, 7.0, "rate limit exceeded"),
        (429, {"retry-after": "Wed, 25 Nov 2026 16:00:30 GMT"}, b"", ErrorKind.RATE_LIMITED, 30.0, "HTTP 429"),
        (401, {}, b'{"error":"unauthorized"}', ErrorKind.AUTH, None, "unauthorized"),
        (403, {}, b"Forbidden", ErrorKind.AUTH, None, "Forbidden"),
        (402, {}, b'{"error":"you have reached your usage limit"}', ErrorKind.QUOTA, None, "usage limit"),
        (502, {}, b"<html><body>Bad Gateway</body></html>", ErrorKind.SERVER, None, "HTTP 502"),
        (500, {}, b'{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}', ErrorKind.RATE_LIMITED,
         None, "Rate limit reached"),
    ],
)  # fmt: skip
def test_parse_error(status, headers, body, kind, retry_after, message):
    now = datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC).timestamp()
    error = ollama.parse_error(status, headers, body, now)
    assert (error.kind, error.status, error.retry_after) == (kind, status, retry_after)
    assert message in error.message and "<html>" not in error.message and "{" not in error.message


# --- models --------------------------------------------------------------------------------


def test_parse_models_adds_names_without_the_latest_tag():
    body = json.dumps({"models": [
        {"name": "deepseek-r1:latest", "model": "deepseek-r1:latest", "modified_at": "2025-05-10T08:06:48.639712648-07:00",
         "size": 4683075271, "digest": "0a8c", "details": {"format": "gguf", "family": "qwen2"}},
        {"name": "qwen3:0.6b", "model": "qwen3:0.6b"},
        {"model": "hf.co/user/repo:latest"},
        {"name": 3},
    ]}).encode()  # fmt: skip
    assert ollama.parse_models(body) == (
        "deepseek-r1:latest",
        "deepseek-r1",
        "qwen3:0.6b",
        "hf.co/user/repo:latest",
        "hf.co/user/repo",
    )


@pytest.mark.parametrize("body", [b'{"models":[]}', b'{"models":null}', b"{}"])
def test_parse_models_empty(body):
    assert ollama.parse_models(body) == ()


@pytest.mark.parametrize("body", [b"<html>", b'{"models":{}}', b"[]"])
def test_parse_models_malformed(body):
    with pytest.raises(UpstreamError) as info:
        ollama.parse_models(body)
    assert info.value.kind is ErrorKind.MALFORMED_STREAM


def test_catalog_and_info():
    from providers.catalog import PROVIDERS

    assert PROVIDERS["ollama"].default_priority == 0 and PROVIDERS["ollama"].protocol is ollama.PROTOCOL
    assert ollama.INFO.type == "ollama" and "streaming" in ollama.INFO.capabilities
