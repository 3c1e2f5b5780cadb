"""The SSE decoder against the WHATWG rules, fed whole and re-chunked at every split point."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.sse import SSEDecoder, SSEEvent

DATA = Path(__file__).resolve().parent.parent / "data"


def decode_whole(raw: bytes) -> tuple[list[SSEEvent], bool]:
    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.finish()
    return events, decoder.truncated


def decode_split(raw: bytes, at: int) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw[:at]) + decoder.feed(raw[at:]) + decoder.finish()


def decode_bytewise(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for i in range(len(raw)):
        events += decoder.feed(raw[i : i + 1])
    return events + decoder.finish()


CASES = {
    "lf": (b"data: a\n\ndata: b\n\n", [SSEEvent("a"), SSEEvent("b")]),
    "crlf": (b"data: a\r\n\r\ndata: b\r\n\r\n", [SSEEvent("a"), SSEEvent("b")]),
    "cr": (b"data: a\r\rdata: b\r\r", [SSEEvent("a"), SSEEvent("b")]),
    "mixed": (b"data: a\r\n\ndata: b\r\rdata: c\n\r\n", [SSEEvent("a"), SSEEvent("b"), SSEEvent("c")]),
    "multi-line data": (b"data: line1\ndata: line2\ndata\n\n", [SSEEvent("line1\nline2\n")]),
    "comments ignored": (b": ping\n:another\ndata: x\n: mid\n\n", [SSEEvent("x")]),
    "only one leading space stripped": (b"data:  two\ndata:none\n\n", [SSEEvent(" two\nnone")]),
    "event type and id": (b"event: error\nid: 7\ndata: {}\n\n", [SSEEvent("{}", event="error", id="7")]),
    "type resets after dispatch": (b"event: x\ndata: 1\n\ndata: 2\n\n", [SSEEvent("1", event="x"), SSEEvent("2")]),
    "event without data is not dispatched": (b"event: x\n\ndata: y\n\n", [SSEEvent("y")]),
    "retry only digits": (
        b"retry: 1500\ndata: a\n\nretry: 1x\ndata: b\n\n",
        [SSEEvent("a", retry=1500), SSEEvent("b", retry=1500)],
    ),
    "id with NUL ignored": (b"id: a\x00b\ndata: z\n\n", [SSEEvent("z")]),
    "unknown fields ignored": (b"foo: bar\ndata: z\n\n", [SSEEvent("z")]),
    "leading BOM": (b"\xef\xbb\xbfdata: z\n\n", [SSEEvent("z")]),
    "utf-8": ("data: héllo 👋 漢字\n\n".encode(), [SSEEvent("héllo 👋 漢字")]),
    "colon in value": (b'data: {"a":"b:c"}\n\n', [SSEEvent('{"a":"b:c"}')]),
}


@pytest.mark.parametrize("name", CASES)
def test_events_whole_and_at_every_split_point(name):
    raw, expected = CASES[name]
    events, truncated = decode_whole(raw)
    assert events == expected and not truncated
    for at in range(len(raw) + 1):
        assert decode_split(raw, at) == expected, f"split at {at}"
    assert decode_bytewise(raw) == expected


def test_crlf_split_across_reads_gives_no_spurious_empty_line():
    # A naive decoder sees "data: a\r" then "\n" as two line ends and dispatches twice.
    decoder = SSEDecoder()
    events = decoder.feed(b"data: a\r") + decoder.feed(b"\ndata: b\r") + decoder.feed(b"\n\r") + decoder.feed(b"\n")
    assert events == [SSEEvent("a\nb")]


def test_unterminated_event_is_discarded_and_reported_as_truncated():
    events, truncated = decode_whole(b"data: complete\n\ndata: cut in the mid")
    assert events == [SSEEvent("complete")] and truncated
    events, truncated = decode_whole(b"data: complete\n\ndata: no blank line\n")
    assert events == [SSEEvent("complete")] and truncated


@pytest.mark.parametrize("name", ["openai_stream.sse", "groq_stream.sse"])
def test_recorded_streams_decode_identically_at_every_split(name):
    raw = (DATA / name).read_bytes()
    expected, truncated = decode_whole(raw)
    assert expected[-1] == SSEEvent("[DONE]") and not truncated
    for at in range(len(raw) + 1):
        assert decode_split(raw, at) == expected
