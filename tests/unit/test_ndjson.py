"""The NDJSON decoder, fed whole and re-chunked at every split point."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.ndjson import Document, Item, Malformed, NDJSONDecoder, Truncated

DATA = Path(__file__).resolve().parent.parent / "data"


def decode_whole(raw: bytes, **kwargs: int) -> list[Item]:
    decoder = NDJSONDecoder(**kwargs)
    return decoder.feed(raw) + decoder.finish()


def decode_split(raw: bytes, at: int, **kwargs: int) -> list[Item]:
    decoder = NDJSONDecoder(**kwargs)
    return decoder.feed(raw[:at]) + decoder.feed(raw[at:]) + decoder.finish()


def decode_bytewise(raw: bytes, **kwargs: int) -> list[Item]:
    decoder = NDJSONDecoder(**kwargs)
    items: list[Item] = []
    for i in range(len(raw)):
        items += decoder.feed(raw[i : i + 1])
    return items + decoder.finish()


CASES: dict[str, tuple[bytes, list[Item]]] = {
    "lf": (b'{"a":1}\n{"b":2}\n', [Document({"a": 1}), Document({"b": 2})]),
    "crlf": (b'{"a":1}\r\n{"b":2}\r\n', [Document({"a": 1}), Document({"b": 2})]),
    "blank and whitespace lines skipped": (
        b'\n{"a":1}\n\r\n  \t\n{"b":2}\n\n',
        [Document({"a": 1}), Document({"b": 2})],
    ),
    "utf-8": ('{"t":"héllo wörld 日本語 👋"}\n'.encode(), [Document({"t": "héllo wörld 日本語 👋"})]),
    "escaped html as Go writes it": (b'{"t":"\\u003cb\\u003e \\u0026"}\n', [Document({"t": "<b> &"})]),
    "any JSON value": (b'[1,2]\n"s"\n3\nnull\n', [Document([1, 2]), Document("s"), Document(3), Document(None)]),
    "final line without newline, complete": (b'{"a":1}\n{"done":true}', [Document({"a": 1}), Document({"done": True})]),
    "final line cut": (b'{"a":1}\n{"done":tr', [Document({"a": 1}), Truncated('{"done":tr')]),
    "final whitespace only": (b'{"a":1}\n  ', [Document({"a": 1})]),
    "not JSON, decoding goes on": (
        b'{"a":1}\nnot json\n{"b":2}\n',
        [Document({"a": 1}), Malformed("a line is not JSON", "not json"), Document({"b": 2})],
    ),  # fmt: skip
    "not UTF-8": (b'{"t":"\xff"}\n', [Malformed("a line is not valid UTF-8", '{"t":"\ufffd"}')]),
    "lone CR is not a line end": (b'{"a":\r1}\n', [Document({"a": 1})]),
    "leading BOM": (b'\xef\xbb\xbf{"a":1}\n', [Document({"a": 1})]),
    "empty": (b"", []),
}


@pytest.mark.parametrize("name", CASES)
def test_items_whole_and_at_every_split_point(name):
    raw, expected = CASES[name]
    assert decode_whole(raw) == expected
    for at in range(len(raw) + 1):
        assert decode_split(raw, at) == expected, f"split at {at}"
    assert decode_bytewise(raw) == expected


def test_crlf_split_across_reads_is_one_line_end():
    decoder = NDJSONDecoder()
    items = decoder.feed(b'{"a":1}\r') + decoder.feed(b'\n{"b":2}\r') + decoder.feed(b"\n\r") + decoder.feed(b"\n")
    assert items == [Document({"a": 1}), Document({"b": 2})]


def test_character_split_across_reads_survives():
    raw = '{"t":"👋"}\n'.encode()
    cut = raw.index("👋".encode()) + 1
    decoder = NDJSONDecoder()
    assert decoder.feed(raw[:cut]) == []
    assert decoder.feed(raw[cut:]) == [Document({"t": "👋"})]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1}\n"0123456789abcdef"\n{"b":2}\n',  # a complete line, over the limit
        b'{"a":1}\n"0123456789abcdef',  # never terminated
        b'{"a":1}\n"0123456789abcdef\r\n{"b":2}\n',
        b'{"a":1}\n"0123456789abcdef\r',
    ],
)
def test_over_long_line_is_malformed_and_ends_decoding(raw):
    # the limit is 15 bytes; each long line holds at least 17, of which the first 16 are sampled
    expected = [Document({"a": 1}), Malformed("a line is longer than 15 bytes", '"0123456789abcde')]
    assert decode_whole(raw, max_line_bytes=15) == expected
    for at in range(len(raw) + 1):
        assert decode_split(raw, at, max_line_bytes=15) == expected, f"split at {at}"
    assert decode_bytewise(raw, max_line_bytes=15) == expected


def test_line_of_exactly_the_limit_is_accepted_even_with_crlf():
    raw = b'"0123456789abcde"\r\n'
    for at in range(len(raw) + 1):
        assert decode_split(raw, at, max_line_bytes=17) == [Document("0123456789abcde")]


def test_nothing_is_decoded_after_finish():
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n{"b"') == [Document({"a": 1})]
    assert decoder.finish() == [Truncated('{"b"')]
    assert decoder.feed(b":2}\n") == [] and decoder.finish() == []


@pytest.mark.parametrize("name", ["ollama_chat.ndjson", "ollama_thinking.ndjson"])
def test_recorded_streams_decode_identically_at_every_split(name):
    raw = (DATA / name).read_bytes()
    expected = decode_whole(raw)
    assert all(isinstance(item, Document) for item in expected)
    assert expected[-1].value["done"] is True
    for at in range(len(raw) + 1):
        assert decode_split(raw, at) == expected, f"split at {at}"
    assert decode_bytewise(raw) == expected
