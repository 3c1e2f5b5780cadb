"""Ollama's native chat protocol (`POST /api/chat`, `GET /api/tags`).

Follows Ollama's docs/api.md ("Generate a chat completion", "List Local Models"),
docs/api/errors.mdx and docs/api/streaming.mdx, checked against its Go source: api/types.go
(`ChatRequest`, `ChatResponse`, `Metrics`, `Duration.UnmarshalJSON`, `ListResponse`) and
server/routes.go (`ChatHandler`, `writeChatResponse`, `streamResponse`, `handleScheduleError`).

A streamed answer is `Content-Type: application/x-ndjson`, one compact JSON object per line::

    {"model":"llama3.2","created_at":"2025-11-24T16:00:00.1Z","message":{"role":"assistant","content":"The"},"done":false}
    {"model":"llama3.2","created_at":"2025-11-24T16:00:00.9Z","message":{"role":"assistant","content":""},
     "done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,
     "prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}

Usage is in the `done: true` line; the counts are `omitempty` in Go, so a fully cached prompt
has no `prompt_eval_count` (reported as unknown, not as 0). Thinking models also send
`message.thinking`, which is not part of the reply and is skipped. `stream: false` returns the
same object, whole, as `application/json; charset=utf-8`.

Errors are `{"error": "message"}`: with the HTTP status when nothing was streamed yet (404
`model "x" not found, try pulling it first`, 400, 500, 503 `server busy...` for
OLLAMA_MAX_QUEUE), or as one more NDJSON line mid-stream (the status cannot change any more).
Ollama has no status codes in its bodies and no safety filter. `done_reason` "load"/"unload"
is what Ollama answers when no generation happened (an empty message list, or keep_alive 0):
with no text that is an EMPTY failure, so the dispatcher tries elsewhere.
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
    json_error_fields,
    kind_for_status,
    malformed,
    parse_retry_after,
)
from providers.events import Event, Finish, StreamFailure, TextDelta, Usage
from providers.ndjson import Document, Malformed, NDJSONDecoder, Truncated
from providers.wire import json_body, sampling_fields, token_count

INFO = ProviderInfo(
    type="ollama",
    capabilities=("chat", "streaming", "usage", "models"),
    description="Ollama native API (/api/chat)",
)


#: `done_reason`s that mean no generation happened at all (server/routes.go ChatHandler).
_NO_GENERATION = frozenset({"load", "unload"})
#: "model 'x' not found" (getModel) and "model \"x\" not found, try pulling it first" (scheduler).
_MODEL_MISSING = re.compile(r"\bmodel\b.*\bnot found\b", re.IGNORECASE | re.DOTALL)
#: `"x" does not support chat` (errCapabilityCompletion): this worker's model cannot chat, another may.
_CANNOT_CHAT = re.compile(r"does not support (chat|completion|generate)", re.IGNORECASE)
_RATE_LIMIT = re.compile(r"rate.?limit|too many requests", re.IGNORECASE)


def _headers(endpoint: Endpoint, key: str | None, accept: str) -> dict[str, str]:
    """Ollama itself has no authentication; a key is for an authenticating proxy (or
    ollama.com), which takes it as a bearer token (docs/api/authentication.mdx)."""
    headers = dict(endpoint.extra_headers)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    headers.update({"Accept": accept, "Accept-Encoding": "identity"})
    return headers


def keep_alive_value(raw: str) -> int | float | str:
    """Ollama reads a JSON number as seconds (negative: forever) and a string with Go's
    `time.ParseDuration`, which rejects a bare "300": so numbers go out as numbers."""
    text = raw.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def build_chat(endpoint: Endpoint, params: ChatParams, key: str | None) -> PreparedCall:
    body: dict[str, Any] = {
        "model": params.model,
        "messages": [{"role": m.role, "content": m.content} for m in params.messages],
        "stream": endpoint.stream,
    }
    options = sampling_fields(params, max_tokens="num_predict")
    if options:
        body["options"] = options
    if endpoint.keep_alive is not None:
        body["keep_alive"] = keep_alive_value(endpoint.keep_alive)
    headers = _headers(endpoint, key, "application/x-ndjson" if endpoint.stream else "application/json")
    headers["Content-Type"] = "application/json"
    return PreparedCall("POST", endpoint.base_url.rstrip("/") + "/api/chat", headers, json_body(body))


def build_models(endpoint: Endpoint, key: str | None) -> PreparedCall:
    return PreparedCall("GET", endpoint.base_url.rstrip("/") + "/api/tags", _headers(endpoint, key, "application/json"))


def parse_models(body: bytes) -> tuple[str, ...]:
    """Every local model's name; "llama3.2:latest" also as "llama3.2", the name users type
    (Ollama fills in the ":latest" tag itself)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the model list is not JSON") from None
    if not isinstance(doc, dict):
        raise malformed("the model list is not a JSON object")
    models = doc.get("models")
    if models is None:  # Go encodes an empty list as null
        models = ()
    if not isinstance(models, list | tuple):
        raise malformed("the model list has no 'models' array")
    names: dict[str, None] = {}
    for item in models:
        name = (item.get("name") or item.get("model")) if isinstance(item, dict) else None
        if isinstance(name, str) and name:
            names[name] = None
            if name.endswith(":latest"):
                names[name.removesuffix(":latest")] = None
    return tuple(names)


def _refine_kind(kind: ErrorKind, message: str) -> ErrorKind:
    if kind in (ErrorKind.NOT_FOUND, ErrorKind.BAD_REQUEST, ErrorKind.SERVER):
        if _MODEL_MISSING.search(message) or _CANNOT_CHAT.search(message):
            return ErrorKind.NOT_FOUND
    if kind is ErrorKind.SERVER and _RATE_LIMIT.search(message):
        return ErrorKind.RATE_LIMITED
    return kind


def parse_error(status: int, headers: Mapping[str, str], body: bytes, now: float) -> UpstreamError:
    # `{"error": "text"}` from Ollama; `{"error": {"message", "code"}}` from an OpenAI-style proxy.
    message, code = json_error_fields(body)
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        # Plain text (Go's "404 page not found") is passed on; HTML and other JSON are not.
        message = text if text and text[0] not in "<{[" else f"HTTP {status}"
    return UpstreamError(
        _refine_kind(kind_for_status(status), message),
        excerpt(message),
        status=status,
        retry_after=parse_retry_after(header(headers, "retry-after"), now),
        code=code,
    )


def _in_band_error(doc: Mapping[str, Any]) -> UpstreamError:
    error = doc.get("error")
    if isinstance(error, dict):  # an OpenAI-style proxy
        error = error.get("message")
    message = error if isinstance(error, str) and error.strip() else "the upstream reported an error mid-stream"
    return UpstreamError(_refine_kind(ErrorKind.SERVER, message), excerpt(message))


def _usage(doc: Mapping[str, Any]) -> Usage | None:
    prompt, completion = token_count(doc.get("prompt_eval_count")), token_count(doc.get("eval_count"))
    if prompt is None and completion is None:
        return None
    return Usage(input_tokens=prompt, output_tokens=completion)


class ChatParser:
    """Incremental parser of a streamed `/api/chat` answer: bytes in, events out."""

    __slots__ = ("_lines", "_done", "_text_seen")

    def __init__(self) -> None:
        self._lines = NDJSONDecoder()
        self._done = False
        self._text_seen = False

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        for item in self._lines.feed(chunk):
            self._on_item(item, out)
            if self._done:
                break
        return out

    def finish(self) -> list[Event]:
        if self._done:
            return []
        out: list[Event] = []
        for item in self._lines.finish():
            self._on_item(item, out)
        if not self._done:
            self._fail(out, incomplete())
        return out

    def on_document(self, doc: object, out: list[Event]) -> None:
        """One JSON value of the answer: a chunk of a stream, or a whole `stream: false` answer."""
        if not isinstance(doc, dict):
            self._fail(out, malformed("the upstream sent a line that is not a JSON object"))
            return
        if "error" in doc:
            self._fail(out, _in_band_error(doc))
            return
        message = doc.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and content:
            self._text_seen = True
            out.append(TextDelta(content))
        if doc.get("done") is not True:
            return
        reason = doc.get("done_reason")
        reason = reason.lower() if isinstance(reason, str) and reason else None
        if reason in _NO_GENERATION and not self._text_seen:
            self._fail(out, UpstreamError(ErrorKind.EMPTY, f"the model answered done_reason {reason!r} and no reply"))
            return
        self._done = True
        out.append(Finish(reason))
        usage = _usage(doc)
        if usage is not None:
            out.append(usage)

    def _on_item(self, item: Document | Malformed | Truncated, out: list[Event]) -> None:
        if isinstance(item, Document):
            self.on_document(item.value, out)
        elif isinstance(item, Malformed):
            self._fail(out, malformed(f"the upstream stream is malformed: {item.reason}"))
        else:
            self._fail(out, incomplete())

    def _fail(self, out: list[Event], error: UpstreamError) -> None:
        self._done = True
        out.append(StreamFailure(error))


def parse_completion(body: bytes) -> list[Event]:
    """The whole answer to `stream: false`. A body that is NDJSON after all (a proxy that
    streamed anyway) is parsed as the stream it is."""
    parser = ChatParser()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if b"\n" in body.strip():
            return parser.feed(body) + parser.finish()
        return [StreamFailure(malformed("the upstream answer is not JSON"))]
    events: list[Event] = []
    parser.on_document(doc, events)
    return events + parser.finish()


PROTOCOL = WireProtocol(
    build_chat=build_chat,
    new_parser=ChatParser,
    parse_error=parse_error,
    build_models=build_models,
    parse_models=parse_models,
    parse_completion=parse_completion,
)
