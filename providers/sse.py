"""Incremental Server-Sent Events decoder, following the WHATWG HTML standard, section 9.2.6
("Interpreting an event stream") to the letter.

Wire sample (what OpenAI-compatible servers send)::

    : keep-alive comment
    data: {"choices":[{"delta":{"content":"Hel"}}]}

    event: error
    data: {"error": {"message": "overloaded"}}

    data: [DONE]

Rules that naive line-splitting gets wrong, and this decoder gets right:
- a line ends at CRLF, LF or CR, and a CRLF may be split across two network reads;
- a UTF-8 character may be split across two reads, so bytes are decoded incrementally;
- several `data:` lines join with "\n"; one leading space after the colon is dropped;
- a blank line dispatches; an event with no data is not dispatched; at end of stream an
  unterminated event is discarded (the spec says so, and it is how a cut stream shows).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed bytes as they arrive; get the events completed by them."""

    __slots__ = (
        "_decoder",
        "_buffer",
        "_skip_lf",
        "_data",
        "_event",
        "_last_id",
        "_retry",
        "_started",
        "_pending",
        "truncated",
    )

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._started = False
        self._pending = False  # a field was seen since the last dispatch
        self.truncated = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._buffer + text if self._buffer else text
        if "\r" in buffer:
            lines = _LINE_END.split(buffer)
            # A CR at the very end may be the first half of a CRLF split across reads.
            self._skip_lf = buffer.endswith("\r")
        else:
            lines = buffer.split("\n")
        self._buffer = lines.pop()  # the unterminated rest ("" when the text ended a line)
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
                    data = self._data
            elif line.startswith("data:"):  # the hot path: one data line per event
                data.append(line[6:] if line.startswith(" ", 5) else line[5:])
                self._pending = True
            else:
                self._line(line)
        return events

    def finish(self) -> list[SSEEvent]:
        """End of stream: a partial line or an undispatched event is discarded, per the spec.

        `truncated` then tells whether anything was discarded, which adapters report as a
        stream cut inside an event.
        """
        tail = self._buffer + self._decoder.decode(b"", final=True)
        self.truncated = bool(tail) or self._pending
        self._buffer = ""
        self._data = []
        self._event = ""
        self._pending = False
        return []

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        colon = line.find(":")
        if colon == -1:
            field, value = line, ""
        else:
            field = line[:colon]
            value = line[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
        self._pending = True
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\x00" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        self._pending = False
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._last_id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        return event
