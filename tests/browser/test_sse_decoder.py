"""The page's SSE decoder (app/static/sse.js), run in Chromium on byte streams split at every
point: LF, CRLF and CR line ends (a CRLF split between two reads included), comments,
multi-line data, a UTF-8 character split between two reads, and an unfinished last event."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SSE_JS = Path(__file__).resolve().parents[2] / "app" / "static" / "sse.js"

# Every way of cutting the bytes in two, then one byte per read: each must give the same events.
DECODE_SPLIT = """(raw) => {
  const bytes = new TextEncoder().encode(raw);
  const decode = (parts) => {
    const text = new TextDecoder(), sse = new SSEDecoder(), events = [];
    for (const part of parts) events.push(...sse.feed(text.decode(part, { stream: true })));
    events.push(...sse.feed(text.decode()));
    return JSON.stringify({ events, comments: sse.comments });
  };
  const results = new Set();
  for (let cut = 0; cut <= bytes.length; cut++) results.add(decode([bytes.slice(0, cut), bytes.slice(cut)]));
  results.add(decode(Array.from(bytes, (b) => Uint8Array.of(b))));
  return [...results].map((r) => JSON.parse(r));
}"""

STREAM = (
    ": keep-alive\n\n"
    'data: {"text":"Hé"}\n\n'
    'data:{"text":"llo 👋"}\n\n'
    "data: first line\ndata: second line\ndata\n\n"
    "event: error\nid: 7\nretry: 100\ndata: {}\n\n"
    "event: ignored because it has no data\n\n"
    "event: done\ndata: {}\n\n"
    "data: never finished"
)
EXPECTED = {
    "events": [
        {"type": "message", "data": '{"text":"Hé"}'},
        {"type": "message", "data": '{"text":"llo 👋"}'},
        {"type": "message", "data": "first line\nsecond line\n"},
        {"type": "error", "data": "{}"},
        {"type": "done", "data": "{}"},
    ],
    "comments": 1,
}


@pytest.fixture(scope="module")
def decoder_page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    page.set_content("<!doctype html><title>sse.js</title>")
    page.add_script_tag(content=SSE_JS.read_text(encoding="utf-8"))
    yield page
    context.close()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_the_same_events_however_the_stream_is_split(decoder_page, newline):
    results = decoder_page.evaluate(DECODE_SPLIT, STREAM.replace("\n", newline))
    assert results == [EXPECTED]


def test_mixed_line_ends_in_one_stream(decoder_page):
    raw = 'data: {"text":"a"}\r\n\r\ndata: b\rdata: c\n\r\n: ping\r\rdata: d\n\n'
    (result,) = decoder_page.evaluate(DECODE_SPLIT, raw)
    assert result["events"] == [
        {"type": "message", "data": '{"text":"a"}'},
        {"type": "message", "data": "b\nc"},
        {"type": "message", "data": "d"},
    ]
