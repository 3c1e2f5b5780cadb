"""Incremental newline-delimited JSON (NDJSON / JSON Lines) decoder: bytes in, JSON documents out.

Follows the NDJSON specification (github.com/ndjson/ndjson-spec): each line is one JSON text,
lines end at LF, and a CR before the LF is tolerated (it is JSON whitespace anyway). Wire sample
(Ollama's `application/x-ndjson`, written by its `streamResponse` in server/routes.go)::

    {"model":"llama3.2","created_at":"2025-11-24T16:00:00.1Z","message":{"role":"assistant","content":"Hé"},"done":false}
    {"model":"llama3.2","created_at":"2025-11-24T16:00:00.2Z","message":{"role":"assistant","content":""},"done":true,...}

What this decoder guarantees, however the bytes are chunked:
- a line is split on LF only, so a CRLF split across two reads is one line end, never two;
- UTF-8 is decoded per complete line, so a character split across two reads survives;
- blank (whitespace-only) lines are skipped;
- a line longer than `max_line_bytes` (8 MiB by default: the buffer limit of Ollama's own Go
  client, api/client.go `maxBufferSize`) is reported as `Malformed`, and decoding stops there,
  so a server that never sends a newline cannot make us buffer without bound;
- `finish()` looks at a final line that has no newline: a complete JSON text is still a
  `Document` (some producers omit the last newline); anything else is `Truncated`, which is how
  a stream cut mid-line shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: Longest line accepted, in bytes, without its line end.
MAX_LINE_BYTES = 8 * 1024 * 1024

#: Characters of a bad line kept for an error message.
_SAMPLE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Document:
    """One complete line that parsed as JSON (any JSON value: callers check its shape)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Malformed:
    """A complete line that is not JSON (or not UTF-8), or a line over the length limit."""

    reason: str
    sample: str = ""


@dataclass(frozen=True, slots=True)
class Truncated:
    """The stream ended inside a line: the final bytes had no newline and are not complete JSON."""

    sample: str = ""


Item = Document | Malformed | Truncated


class NDJSONDecoder:
    """Feed bytes as they arrive; get the items completed by them."""

    __slots__ = ("_buffer", "_max", "_started", "_stopped")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_line_bytes
        self._started = False
        self._stopped = False  # after an over-long line, or finish(), nothing more is decoded

    def feed(self, chunk: bytes) -> list[Item]:
        if self._stopped or not chunk:
            return []
        items: list[Item] = []
        newline = chunk.find(b"\n")
        if newline == -1:
            self._buffer += chunk
            self._check_partial(items)
            return items
        self._buffer += chunk[:newline]
        line = bytes(self._buffer)
        self._buffer.clear()
        self._line(line, items)
        start = newline + 1
        while not self._stopped:
            newline = chunk.find(b"\n", start)
            if newline == -1:
                self._buffer += chunk[start:]
                self._check_partial(items)
                break
            self._line(chunk[start:newline], items)
            start = newline + 1
        return items

    def finish(self) -> list[Item]:
        """End of stream: decide what the unterminated last line, if any, was."""
        if self._stopped:
            return []
        self._stopped = True
        tail = bytes(self._buffer)
        self._buffer.clear()
        if not self._started:
            tail = tail.removeprefix(b"\xef\xbb\xbf")
        if not tail.strip(b" \t\r"):
            return []
        if len(tail.removesuffix(b"\r")) > self._max:
            return [self._too_long(tail)]
        text = self._decode(tail)
        if text is not None:
            try:
                return [Document(json.loads(text))]
            except ValueError:
                pass
        return [Truncated(_sample(tail))]

    def _check_partial(self, items: list[Item]) -> None:
        # One byte of slack: the buffer may end with the CR of a CRLF not yet complete.
        if len(self._buffer) > self._max + 1:
            items.append(self._too_long(self._buffer))

    def _too_long(self, line: bytes | bytearray) -> Malformed:
        self._buffer = bytearray()
        self._stopped = True
        # Only the first max+1 bytes are sure to have arrived, whatever the chunking.
        return Malformed(f"a line is longer than {self._max} bytes", _sample(bytes(line[: self._max + 1])))

    def _line(self, line: bytes, items: list[Item]) -> None:
        if not self._started:  # a UTF-8 byte order mark may open the stream (RFC 8259 8.1)
            self._started = True
            line = line.removeprefix(b"\xef\xbb\xbf")
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max:
            items.append(self._too_long(line))
            return
        if not line.strip(b" \t\r"):
            return
        text = self._decode(line)
        if text is None:
            items.append(Malformed("a line is not valid UTF-8", _sample(line)))
            return
        try:
            items.append(Document(json.loads(text)))
        except ValueError:
            items.append(Malformed("a line is not JSON", _sample(line)))

    @staticmethod
    def _decode(line: bytes) -> str | None:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            return None


def _sample(line: bytes) -> str:
    return line[: _SAMPLE_CHARS * 4].decode("utf-8", "replace")[:_SAMPLE_CHARS]
