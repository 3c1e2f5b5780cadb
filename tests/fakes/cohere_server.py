"""A fake Cohere upstream that writes the Chat API v2 wire format byte for byte.

Formats follow Cohere's API reference ("Chat API (v2)", "List Models", "Errors") as published
in cohere-ai/cohere-developer-experience (`cohere-openapi.yaml`, `fern/pages/cohere-api/
errors.mdx`) and consumed by the official cohere-python SDK:

- `POST /v2/chat` with `"stream": true` answers `Content-Type: text/event-stream`, chunked,
  one `event: <type>\\ndata: {"type": "<type>", ...}\\n\\n` per chunk: message-start,
  content-start, content-delta..., content-end, then message-end with `finish_reason` and
  `usage` (`billed_units` and `tokens`). A request whose Accept asks for JSON only gets the
  same objects as newline-delimited JSON (Cohere's documented default framing);
- `"stream": false` (the default) answers one JSON object
  `{id, message: {role, content: [{type: "text", text}]}, finish_reason, usage}`;
- `GET /v1/models?endpoint=chat` answers `{"models": [{"name", "endpoints", ...}], "next_page_token"}`;
- errors are `{"id": "<uuid>", "message": "<text>"}` with the documented status codes and
  messages; the key goes in `Authorization: Bearer <key>`;
- every response carries the headers Cohere's front end sends (envoy behind Google's load
  balancer, trial-key call counters).

Behaviour is scripted per request like FakeOpenAI: a default reply plus a queue of one-shot
replies; every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_server import Exchange, FakeHTTPServer, PeerClosed, Request
from tests.fakes.openai_server import StreamRecord

MESSAGE_ID = "8c5a3f0e-4d2b-4b71-9a0e-2f6c1d7e9b13"
ERROR_ID = "11864227-5c7f-4c4a-8c9b-6465ab44a26e"

#: What api.cohere.com sends on every response besides Content-Type and framing.
COMMON_HEADERS = [
    ("access-control-expose-headers", "X-Debug-Trace-ID"),
    ("cache-control", "no-cache, no-store, no-transform, must-revalidate, private, max-age=0"),
    ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ("pragma", "no-cache"),
    ("vary", "Origin"),
    ("x-accel-expires", "0"),
    ("x-debug-trace-id", "b0aae57a1bc79ddfcba999e6897f9d06"),
    ("x-endpoint-monthly-call-limit", "1000"),
    ("x-trial-endpoint-call-limit", "20"),
    ("x-trial-endpoint-call-remaining", "19"),
    ("date", "Tue, 25 Nov 2025 16:00:00 GMT"),
    ("x-envoy-upstream-service-time", "18"),
    ("server", "envoy"),
    ("via", "1.1 google"),
]
SSE_HEADERS = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked"), *COMMON_HEADERS]
#: Assumed: Cohere does not document the content type of its newline-delimited framing.
NDJSON_HEADERS = [("content-type", "application/x-ndjson"), ("transfer-encoding", "chunked"), *COMMON_HEADERS]

DEFAULT_MODELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("command-a-03-2025", ("chat",)),
    ("command-r7b-12-2024", ("chat",)),
    ("embed-v4.0", ("embed",)),
)


def error_body(message: str) -> bytes:
    return json.dumps({"id": ERROR_ID, "message": message}).encode()


# The documented messages (errors.mdx), one per class.
NO_API_KEY = error_body("no api key supplied")
INVALID_TOKEN = error_body("invalid api token")
PAYMENT_REQUIRED = error_body(
    "Please add or update your payment method at https://dashboard.cohere.com/billing?tab=payment to continue"
)
RATE_LIMITED = error_body("You are past the per minute request limit, please wait and try again later.")
TRIAL_MONTHLY_LIMIT = error_body(
    "You are using a Trial key, which is limited to 1000 API calls / month. You can continue to use the Trial key "
    "for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'. "
    "Contact us on 'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions"
)
BAD_TEMPERATURE = error_body("invalid request: temperature must be between 0 and 1.0 inclusive.")
TOO_MANY_TOKENS = error_body(
    "too many tokens: size limit exceeded by 11326 tokens. Try using shorter or fewer inputs, or setting "
    "prompt_truncation='AUTO'."
)
BLOCKED_INPUT = error_body(
    "blocked input: please adjust your prompt and try again, as it may be a potential violation of our Usage "
    "Guidelines (https://docs.cohere.com/docs/usage-guidelines)."
)
REQUEST_CANCELLED = error_body("request cancelled")
INTERNAL_ERROR = error_body("internal server error, this has been reported to our developers")
UNAVAILABLE = error_body("service unavailable, please try again later")


def model_not_found(model: str) -> bytes:
    return error_body(
        f"model '{model}' not found, make sure the correct model ID was used and that you have access to the model."
    )


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_bytes(doc: dict[str, Any], framing: str = "sse") -> bytes:
    """One stream event in the given framing ("sse" or "ndjson")."""
    if framing == "ndjson":
        return _json(doc) + b"\n"
    return f"event: {doc['type']}\n".encode() + b"data: " + _json(doc) + b"\n\n"


def message_start() -> dict[str, Any]:
    return {"id": MESSAGE_ID, "type": "message-start",
            "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}  # fmt: skip


def content_start(index: int = 0, kind: str = "text") -> dict[str, Any]:
    return {"type": "content-start", "index": index, "delta": {"message": {"content": {"type": kind, kind: ""}}}}


def content_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {"type": "content-delta", "index": index, "delta": {"message": {"content": {"text": text}}}}


def content_end(index: int = 0) -> dict[str, Any]:
    return {"type": "content-end", "index": index}


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            "tokens": {"input_tokens": input_tokens + 200, "output_tokens": output_tokens}}  # fmt: skip


def message_end(finish_reason: str, usage_doc: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"finish_reason": finish_reason}
    if error is not None:
        delta["error"] = error
    if usage_doc is not None:
        delta["usage"] = usage_doc
    return {"type": "message-end", "delta": delta}


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


def _framing(request: Request) -> str:
    accept = request.headers.get("accept", "")
    return "ndjson" if "application/json" in accept and "text/event-stream" not in accept else "sse"


def _complete(ex: Exchange, text: str, finish_reason: str, usage_doc: dict[str, Any]) -> None:
    content = [{"type": "text", "text": text}] if text else []
    doc = {"id": MESSAGE_ID, "message": {"role": "assistant", "content": content},
           "finish_reason": finish_reason, "usage": usage_doc}  # fmt: skip
    ex.respond(200, _json(doc), extra_headers=COMMON_HEADERS)


def _split_in_a_character(data: bytes) -> tuple[bytes, bytes] | None:
    """Split just after the first byte of the first multi-byte UTF-8 character."""
    for index, byte in enumerate(data):
        if byte >= 0xC0:
            return data[: index + 1], data[index + 1 :]
    return None


@dataclass
class Stream:
    """A normal answer: streamed when the request says `"stream": true`, else one JSON body.

    `gate` holds everything after the first content chunk until set, `delay` paces chunks,
    `cut_after` drops the connection after that many content chunks, `split_utf8` writes each
    event in two network writes split inside a multi-byte character, `done_marker` appends
    `data: [DONE]`, `framing` forces "sse" or "ndjson" (default: from the Accept header)."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", "!"])
    delay: float = 0.0
    gate: threading.Event | None = None
    cut_after: int | None = None
    finish_reason: str = "COMPLETE"
    split_utf8: bool = False
    done_marker: bool = False
    framing: str | None = None
    content_type: str | None = None

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        body = ex.request.json()
        assert isinstance(body, dict)
        usage_doc = usage(_prompt_tokens(body), len(self.chunks))
        if not body.get("stream"):
            _complete(ex, "".join(self.chunks), self.finish_reason, usage_doc)
            return
        framing = self.framing or _framing(ex.request)
        headers = SSE_HEADERS if framing == "sse" else NDJSON_HEADERS
        if self.content_type:
            headers = [("content-type", self.content_type), *headers[1:]]
        record = StreamRecord(ex, planned=len(self.chunks))
        fake.streams.append(record)
        ex.start(200, headers)
        ex.chunk(event_bytes(message_start(), framing))
        ex.chunk(event_bytes(content_start(), framing))
        for index, text in enumerate(self.chunks):
            if self.cut_after is not None and index == self.cut_after:
                ex.keep_alive = False
                return  # the handler returns, and the connection closes mid-body
            if index == 1 and self.gate is not None:
                while not self.gate.wait(0.05):
                    if ex.peer_closed():
                        raise PeerClosed
            elif index and self.delay:
                time.sleep(self.delay)
            data = event_bytes(content_delta(text), framing)
            halves = _split_in_a_character(data) if self.split_utf8 else None
            for part in halves or (data,):
                ex.chunk(part)
            record.sent += 1
        ex.chunk(event_bytes(content_end(), framing))
        ex.chunk(event_bytes(message_end(self.finish_reason, usage_doc), framing))
        if self.done_marker and framing == "sse":
            ex.chunk(b"data: [DONE]\n\n")
        ex.end_chunks()
        record.finished = True


@dataclass
class InBandError:
    """Streams `chunks`, then ends the message with `finish_reason` ERROR (or TIMEOUT) and
    Cohere's `delta.error` text: a generation that failed after the 200."""

    chunks: list[str] = field(default_factory=lambda: ["Partial"])
    finish_reason: str = "ERROR"
    error: str | None = "internal error during generation"

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        body = ex.request.json()
        assert isinstance(body, dict)
        ex.start(200, SSE_HEADERS)
        ex.chunk(event_bytes(message_start()))
        if self.chunks:
            ex.chunk(event_bytes(content_start()))
            for text in self.chunks:
                ex.chunk(event_bytes(content_delta(text)))
            ex.chunk(event_bytes(content_end()))
        ex.chunk(event_bytes(message_end(self.finish_reason, usage(_prompt_tokens(body), 0), self.error)))
        ex.end_chunks()


@dataclass
class Raw:
    """A 200 stream whose body is exactly `body` (broken framing, garbage, odd events)."""

    body: bytes = b"event: content-delta\ndata: {not json}\n\n"

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        ex.start(200, SSE_HEADERS)
        ex.chunk(self.body)
        ex.end_chunks()


@dataclass
class Error:
    status: int = 500
    body: bytes = INTERNAL_ERROR
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        ex.respond(self.status, self.body, extra_headers=[*COMMON_HEADERS, *self.headers])


@dataclass
class EmptyStream:
    """A 200 stream that completes without any content."""

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        ex.start(200, SSE_HEADERS)
        ex.chunk(event_bytes(message_start()))
        ex.chunk(event_bytes(message_end("COMPLETE", usage(1, 0))))
        ex.end_chunks()


@dataclass
class Hang:
    """Accept the request, then say nothing until the peer gives up (or `seconds` pass)."""

    seconds: float = 30.0

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        fake.hung.append(ex)
        ex.wait_for_close(self.seconds)
        ex.keep_alive = False


class FakeCohere:
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    `valid_keys` (when set) is checked on every request; `rate_limited_keys` maps a key to
    the Retry-After value its chat requests get with a 429."""

    def __init__(self, chat: Any = None, models: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_MODELS,
                 valid_keys: set[str] | None = None, models_status: int = 200, models_hang: bool = False) -> None:  # fmt: skip
        self.chat = chat or Stream()
        self.models = models
        self.models_status = models_status
        self.models_hang = models_hang
        self.valid_keys = valid_keys
        self.rate_limited_keys: dict[str, str] = {}
        self.requests: list[Request] = []
        self.streams: list[StreamRecord] = []
        self.hung: list[Exchange] = []
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if urlsplit(r.path).path == "/v2/chat"]

    def queue(self, *replies: Any) -> None:
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeCohere:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _handle(self, ex: Exchange) -> None:
        request = ex.request
        with self._lock:
            self.requests.append(request)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if self.valid_keys is not None:
            if scheme.lower() != "bearer" or not key:
                ex.respond(401, NO_API_KEY, extra_headers=COMMON_HEADERS)
                return
            if key not in self.valid_keys:
                ex.respond(401, INVALID_TOKEN, extra_headers=COMMON_HEADERS)
                return
        url = urlsplit(request.path)
        if request.method == "GET" and url.path == "/v1/models":
            self._models(ex, parse_qs(url.query))
            return
        if request.method == "POST" and url.path == "/v2/chat":
            if key in self.rate_limited_keys:
                ex.respond(
                    429, RATE_LIMITED, extra_headers=[*COMMON_HEADERS, ("retry-after", self.rate_limited_keys[key])]
                )
                return
            with self._lock:
                reply = self._queue.popleft() if self._queue else self.chat
            reply(ex, self)
            return
        ex.respond(404, error_body("404 page not found"), extra_headers=COMMON_HEADERS)

    def _models(self, ex: Exchange, query: dict[str, list[str]]) -> None:
        if self.models_hang:
            Hang()(ex, self)
            return
        if self.models_status != 200:
            ex.respond(self.models_status, INTERNAL_ERROR, extra_headers=COMMON_HEADERS)
            return
        wanted = query.get("endpoint", [None])[0]
        models = [
            {"name": name, "endpoints": list(endpoints), "finetuned": False, "context_length": 256000,
             "tokenizer_url": f"https://storage.googleapis.com/cohere-public/tokenizers/{name}.json",
             "default_endpoints": [], "features": ["tools", "strict_tools"] if "chat" in endpoints else []}
            for name, endpoints in self.models
            if wanted is None or wanted in endpoints
        ]  # fmt: skip
        ex.respond(200, _json({"models": models, "next_page_token": ""}), extra_headers=COMMON_HEADERS)
