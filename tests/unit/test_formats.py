"""The three output formats, encoded from the same events (no format re-parses another)."""

from __future__ import annotations

import json

from app.formats.base import Answer, Refusal
from app.formats.openai_chat import OpenAIChunkEncoder, completion_body
from app.formats.sse import SSEEncoder
from app.formats.text import TextEncoder
from providers.errors import ErrorKind, UpstreamError
from providers.events import Event, Finish, TextDelta, Usage

ANSWER = Answer(worker="groq", provider="openai_compat", model="llama-3.1-8b-instant", attempts=2)
EVENTS: list[Event] = [TextDelta("Hé"), TextDelta(""), TextDelta("llo 👋"), Finish("stop"), Usage(9, 2)]
CUT = UpstreamError(ErrorKind.INTERRUPTED, "the upstream connection broke\nmid-response")


def run(encoder, events: list[Event], failure: UpstreamError | None = None) -> bytes:  # type: ignore[no-untyped-def]
    out = [encoder.begin(ANSWER)] + [encoder.encode(e) for e in events]
    out.append(encoder.error(failure) if failure else encoder.end())
    return b"".join(chunk for chunk in out if chunk)


def sse_data(raw: bytes) -> list[tuple[str | None, object]]:
    """(event name, parsed data) per SSE event; asserts the framing is one data line each."""
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        name = None
        lines = block.split("\n")
        if lines[0].startswith("event: "):
            name = lines.pop(0)[len("event: ") :]
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        data = lines[0][len("data: ") :]
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def test_text_is_the_bare_utf8_and_a_marker_line_on_failure():
    assert run(TextEncoder(), EVENTS) == "Héllo 👋".encode()
    assert (
        run(TextEncoder(), EVENTS[:1], CUT)
        == "Hé\n[cortex-error] interrupted: the upstream connection broke mid-response\n".encode()
    )
    assert TextEncoder.keepalive is None


def test_native_sse_deltas_then_done_with_provider_model_finish_and_usage():
    assert sse_data(run(SSEEncoder(), EVENTS)) == [
        (None, {"text": "Hé"}),
        (None, {"text": "llo 👋"}),
        ("done", {"provider": "groq", "type": "openai_compat", "model": "llama-3.1-8b-instant", "finish_reason": "stop",
                  "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}, "attempts": 2}),
    ]  # fmt: skip


def test_native_sse_error_event_mid_stream_and_refusal_before_content():
    events = sse_data(run(SSEEncoder(), EVENTS[:1], CUT))
    assert events[-1] == ("error", {"error": "interrupted", "message": CUT.message, "status": None})
    refusal = SSEEncoder().refused(Refusal(503, "no_workers_available", "No workers", "every worker failed", 7.0))
    assert sse_data(refusal) == [
        (
            "error",
            {"error": "no_workers_available", "message": "every worker failed", "status": 503, "retry_after": 7.0},
        )
    ]


def test_openai_chunks_role_first_finish_usage_only_when_asked_and_done():
    plain = sse_data(run(OpenAIChunkEncoder("chatcmpl-1", 1764000000, "fast", include_usage=False), EVENTS))
    assert [e[1] if e[1] == "[DONE]" else e[1]["choices"] for e in plain] == [  # type: ignore[index]
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "Hé"}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {"content": "llo 👋"}, "logprobs": None, "finish_reason": None}],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        "[DONE]",
    ]
    first = plain[0][1]
    assert isinstance(first, dict) and "usage" not in first
    assert first["id"] == "chatcmpl-1" and first["object"] == "chat.completion.chunk" and first["created"] == 1764000000
    assert first["model"] == "llama-3.1-8b-instant"  # the model that answered, not the alias asked for
    with_usage = sse_data(run(OpenAIChunkEncoder("chatcmpl-1", 1, None, include_usage=True), EVENTS))
    assert all(e[1]["usage"] is None for e in with_usage[:-2])  # type: ignore[index]
    assert with_usage[-2][1] == {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                                 "model": "llama-3.1-8b-instant", "choices": [],
                                 "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}  # fmt: skip


def test_openai_stream_without_finish_gets_one_and_failure_is_an_error_event_without_done():
    events = sse_data(run(OpenAIChunkEncoder("c", 1, "m", False), [TextDelta("x")]))
    assert events[-2][1]["choices"][0]["finish_reason"] == "stop" and events[-1][1] == "[DONE]"  # type: ignore[index]
    failed = sse_data(run(OpenAIChunkEncoder("c", 1, "m", False), [TextDelta("x")], CUT))
    assert failed[-1][1] == {"error": {"message": f"the upstream failed mid-stream: {CUT.message}",
                                       "type": "server_error", "param": None, "code": "interrupted"}}  # fmt: skip
    assert all(e[1] != "[DONE]" for e in failed)


def test_completion_object():
    body = completion_body("chatcmpl-9", 5, "m", "hi", None, Usage(3, 1))
    assert body == {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 5, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }  # fmt: skip


def test_a_lone_surrogate_from_an_upstream_is_replaced_not_a_crash():
    """JSON may escape half a surrogate pair ("\\ud800"); Python decodes it, UTF-8 cannot hold it."""
    event = TextDelta("a\ud800b")
    answer = Answer("w", "openai_compat", "m", 1)
    encoders = [TextEncoder(), SSEEncoder(), OpenAIChunkEncoder("chatcmpl-1", 0, "m", False)]
    for encoder in encoders:
        encoder.begin(answer)
        chunk = encoder.encode(event)
        assert chunk is not None and b"a?b" in chunk
        chunk.decode("utf-8")  # valid UTF-8 on the wire
