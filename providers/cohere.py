"""Cohere Chat API v2 (`POST /v2/chat`) and its model list (`GET /v1/models`).

Follows Cohere's API reference, "Chat API (v2)" / "Chat with Streaming", "List Models" and
"Errors" (https://docs.cohere.com/v2/reference/chat, .../chat-stream, .../list-models,
https://docs.cohere.com/reference/errors), as published in cohere-ai/cohere-developer-experience
(`cohere-openapi.yaml`, `fern/pages/cohere-api/errors.mdx`) and consumed by the official SDK
cohere-ai/cohere-python (`src/cohere/v2/raw_client.py`, `v2/types/v2chat_stream_response.py`).

A streamed answer (`"stream": true`, `Accept: text/event-stream`) is SSE; each event carries
its kind twice, in the `event:` line and in the data's `type` (the SDK's discriminant, which
we read)::

    event: message-start
    data: {"id":"29f1...","type":"message-start","delta":{"message":{"role":"assistant","content":[],...}}}

    event: content-start
    data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}

    event: content-delta
    data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"LL"}}}}

    event: content-end
    data: {"type":"content-end","index":0}

    event: message-end
    data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":
           {"input_tokens":5,"output_tokens":26},"tokens":{"input_tokens":71,"output_tokens":26}}}}

`message-end` is the end marker: a body that ends without it was cut. Tool-plan, tool-call,
citation and debug events, and `thinking` content (reasoning models), are ignored; a
`data: [DONE]` after `message-end` is ignored too. Without `Accept: text/event-stream` Cohere
sends the same objects as newline-delimited JSON ("The default is \\n delimited events");
the parser reads that framing too, and `parse_completion` reads it when it arrives whole.

Finish reasons: COMPLETE and STOP_SEQUENCE -> stop, MAX_TOKENS -> length, TOOL_CALL ->
tool_calls. ERROR and TIMEOUT ("the generation failed due to an internal error" / "exceeded
the allowed time limit") are failures, not answers: SERVER and TIMEOUT, with the message
from `delta.error` (a non-empty `delta.error` fails whatever the reason); an error text
starting "blocked" (and v1's ERROR_TOXIC) is BLOCKED. In a non-streamed answer such a
failure is the single event, so the dispatcher fails over instead of relaying a fragment.
Usage prefers `tokens` (what the model processed) and falls back to `billed_units`.

Errors are JSON `{"id": "<uuid>", "message": "<text>"}` with the HTTP status:
    400 bad request -> BAD_REQUEST ("too many tokens: ..." included); "model '<m>' not found"
        or "... is not supported" -> NOT_FOUND; "blocked input" -> BLOCKED
    401 invalid/expired key, 403 -> AUTH
    402 billing limit reached -> QUOTA
    404 model not found -> NOT_FOUND
    422 unprocessable -> BAD_REQUEST
    429 rate limit (trial keys: 20 chat calls/min) -> RATE_LIMITED, with Retry-After when
        sent; the trial key's monthly cap ("limited to 1000 API calls / month") -> QUOTA
    498 "Unsafe Request" ("blocked input: ... potential violation of our Usage Guidelines";
        the SDK calls it InvalidTokenError, meaning a deny-listed *text* token) -> BLOCKED
    499 request cancelled, 500, 501, 503, 504 -> SERVER
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from providers.base import ChatParams, Endpoint, PreparedCall, ProviderInfo, WireProtocol
from providers.errors import (
    ErrorKind,
    UpstreamError,
    excerpt,
    header,
    incomplete,
    kind_for_status,
    malformed,
    parse_retry_after,
)
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage
from providers.sse import SSEDecoder
from providers.wire import json_body, sampling_fields, token_count

INFO = ProviderInfo(
    type="cohere",
    capabilities=("chat", "streaming", "usage", "models"),
    description="Cohere Chat API v2",
)

_FINISH_REASONS = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls"}
_FAILED_REASONS = {"ERROR": ErrorKind.SERVER, "TIMEOUT": ErrorKind.TIMEOUT, "ERROR_TOXIC": ErrorKind.BLOCKED}
_FAILURE_TEXT = {
    "ERROR": "the generation failed upstream (finish_reason ERROR)",
    "TIMEOUT": "the upstream stopped the generation at its time limit (finish_reason TIMEOUT)",
    "ERROR_TOXIC": "the upstream's safety filter blocked the answer (finish_reason ERROR_TOXIC)",
}

_MODEL_MISSING = re.compile(r"\bmodel\b[^.]*?\bnot (?:found|supported)\b", re.IGNORECASE)
_MONTHLY = re.compile(r"/\s*month|per month|monthly", re.IGNORECASE)
_RATE = re.compile(r"rate limit|too many requests|per minute|try again later", re.IGNORECASE)


def _headers(endpoint: Endpoint, key: str | None, accept: str) -> dict[str, str]:
    headers = dict(endpoint.extra_headers)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    headers["Accept"] = accept
    return headers


def build_chat(endpoint: Endpoint, params: ChatParams, key: str | None) -> PreparedCall:
    body: dict[str, Any] = {
        "model": params.model,
        "messages": [{"role": m.role, "content": m.content} for m in params.messages],
        "stream": endpoint.stream,
    }
    body.update(sampling_fields(params, top_p="p", stop="stop_sequences"))
    headers = _headers(endpoint, key, "text/event-stream" if endpoint.stream else "application/json")
    headers["Content-Type"] = "application/json"
    if endpoint.stream:
        headers["Accept-Encoding"] = "identity"
    return PreparedCall("POST", endpoint.base_url.rstrip("/") + "/v2/chat", headers, json_body(body))


def build_models(endpoint: Endpoint, key: str | None) -> PreparedCall:
    # One page of up to 1000 (the documented maximum) chat models: the probe is one request.
    url = endpoint.base_url.rstrip("/") + "/v1/models?endpoint=chat&page_size=1000"
    return PreparedCall("GET", url, _headers(endpoint, key, "application/json"))


def parse_models(body: bytes) -> tuple[str, ...]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the model list is not JSON") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise malformed("the model list has no 'models' array")
    return tuple(m["name"] for m in models if isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"])


def _error_message(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict):
        message = doc.get("message")
        if isinstance(message, str) and message.strip():
            return message
    return None


def _refine(kind: ErrorKind, message: str) -> ErrorKind:
    lowered = message.lstrip().lower()
    if lowered.startswith(("blocked input", "blocked output")):
        return ErrorKind.BLOCKED
    if kind in (ErrorKind.BAD_REQUEST, ErrorKind.SERVER) and _MODEL_MISSING.search(message):
        return ErrorKind.NOT_FOUND
    if kind is ErrorKind.RATE_LIMITED and _MONTHLY.search(message):
        return ErrorKind.QUOTA
    return kind


def parse_error(status: int, headers: Mapping[str, str], body: bytes, now: float) -> UpstreamError:
    message = _error_message(body)
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        # Plain-text bodies are passed on; HTML pages and JSON without a message are not.
        message = text if text and text[0] not in "<{[" else f"HTTP {status}"
    kind = ErrorKind.BLOCKED if status == 498 else _refine(kind_for_status(status), message)
    return UpstreamError(
        kind,
        excerpt(message),
        status=status,
        retry_after=parse_retry_after(header(headers, "retry-after"), now),
    )


def _in_band_error(message: str | None, default: ErrorKind = ErrorKind.SERVER) -> UpstreamError:
    text = message or "the upstream reported an error mid-stream"
    kind = _refine(default, text)
    if kind is default and _MONTHLY.search(text):
        kind = ErrorKind.QUOTA
    elif kind is default and _RATE.search(text):
        kind = ErrorKind.RATE_LIMITED
    return UpstreamError(kind, excerpt(text))


def _count(value: object) -> int | None:
    """Cohere's billed units are floats (`"input_tokens": 5.0`), its token counts ints."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return token_count(value)


def _usage(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    tokens, billed = usage.get("tokens"), usage.get("billed_units")
    tokens = tokens if isinstance(tokens, dict) else {}
    billed = billed if isinstance(billed, dict) else {}
    counts = []
    for name in ("input_tokens", "output_tokens"):
        count = _count(tokens.get(name))
        counts.append(count if count is not None else _count(billed.get(name)))
    if counts == [None, None]:
        return None
    return Usage(input_tokens=counts[0], output_tokens=counts[1])


def _path(doc: Mapping[str, Any], *keys: str) -> object:
    value: object = doc
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ending(reason: object, error: object, usage: Usage | None) -> list[Event]:
    """The events closing an answer: Finish then Usage, or Usage then a StreamFailure."""
    code = reason.upper() if isinstance(reason, str) and reason else None
    message = error.strip() if isinstance(error, str) else ""
    tail: list[Event] = [usage] if usage is not None else []
    if code in _FAILED_REASONS or message:
        failure = _in_band_error(
            message or _FAILURE_TEXT[code or ""], _FAILED_REASONS.get(code or "", ErrorKind.SERVER)
        )
        return tail + [StreamFailure(failure)]
    return [Finish(_FINISH_REASONS.get(code, code.lower()) if code else None)] + tail


class StreamParser:
    """Incremental parser of a streamed v2 chat answer: bytes in, events out.

    The framing is chosen by the first non-blank byte: `{` is newline-delimited JSON (what
    Cohere sends without `Accept: text/event-stream`), anything else SSE. NDJSON lines are
    split as bytes and decoded whole, so a character split across reads survives."""

    __slots__ = ("_sse", "_framing", "_pending", "_done")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._framing: str | None = None
        self._pending = b""  # bytes not yet framed: before the choice, or a partial NDJSON line
        self._done = False

    def feed(self, chunk: bytes) -> list[Event]:
        if self._done or not chunk:
            return []
        if self._framing is None:
            self._pending += chunk
            start = self._pending.lstrip(b" \t\r\n")
            if not start:
                return []
            self._framing = "ndjson" if start.startswith(b"{") else "sse"
            chunk, self._pending = self._pending, b""
        out: list[Event] = []
        if self._framing == "sse":
            for event in self._sse.feed(chunk):
                if self._done:
                    break
                if event.data == "[DONE]":  # the SDK's terminator; only message-end completes
                    self._fail(out, incomplete())
                elif event.event == "error":
                    self._fail(out, _in_band_error(_message_of(event.data)))
                else:
                    self._on_data(event.data, out, event.event)
            return out
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if self._done:
                break
            self._on_line(line, out)
        return out

    def finish(self) -> list[Event]:
        self._sse.finish()
        out: list[Event] = []
        if not self._done and self._pending.strip():
            self._on_line(self._pending, out)  # a last NDJSON line without its newline
        self._pending = b""
        if not self._done:
            self._fail(out, incomplete())
        return out

    def _on_line(self, line: bytes, out: list[Event]) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            self._on_data(text, out, "message")

    def _on_data(self, data: str, out: list[Event], sse_event: str) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            self._fail(out, malformed("the upstream sent an event that is not JSON"))
            return
        if not isinstance(doc, dict):
            self._fail(out, malformed("the upstream sent an event that is not a JSON object"))
            return
        kind = doc.get("type", sse_event)
        if kind in ("content-delta", "content-start"):
            text = _path(doc, "delta", "message", "content", "text")  # `thinking` is skipped
            if isinstance(text, str) and text:
                out.append(TextDelta(text))
        elif kind == "message-end":
            self._done = True
            delta = doc.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            out.extend(_ending(delta.get("finish_reason"), delta.get("error"), _usage(delta.get("usage"))))
        elif "type" not in doc and isinstance(doc.get("message"), str):
            self._fail(out, _in_band_error(doc["message"]))  # an error object where an event should be

    def _fail(self, out: list[Event], error: UpstreamError) -> None:
        self._done = True
        out.append(StreamFailure(error))


def _message_of(data: str) -> str | None:
    return _error_message(data.encode("utf-8")) or (data.strip() or None)


def _events_of(body: bytes) -> list[Event]:
    parser = StreamParser()
    return parser.feed(body) + parser.finish()


def parse_completion(body: bytes) -> list[Event]:
    """The v2 chat response `{id, finish_reason, message: {role, content: [{type, text}]}, usage}`
    (the answer to `"stream": false`), or a newline-delimited event stream that arrived whole."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if body.lstrip().startswith(b"{"):
            return _events_of(body)
        return [StreamFailure(malformed("the upstream answer is not JSON"))]
    if not isinstance(doc, dict):
        return [StreamFailure(malformed("the upstream answer is not a JSON object"))]
    if "type" in doc:  # one stream event on its own
        return _events_of(body)
    message = doc.get("message")
    if isinstance(message, str):  # the error object {"id", "message"}
        return [StreamFailure(_in_band_error(message))]
    if not isinstance(message, dict):
        return [StreamFailure(malformed("the upstream answer has no message"))]
    content = message.get("content")
    parts = content if isinstance(content, list) else []
    text = "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str)
    )
    ending = _ending(doc.get("finish_reason"), None, _usage(doc.get("usage")))
    if isinstance(ending[-1], StreamFailure):
        return ending[-1:]  # a failed generation: fail over rather than relay a partial answer
    return ([TextDelta(text)] if text else []) + ending


PROTOCOL = WireProtocol(
    build_chat=build_chat,
    new_parser=StreamParser,
    parse_error=parse_error,
    build_models=build_models,
    parse_models=parse_models,
    parse_completion=parse_completion,
)
