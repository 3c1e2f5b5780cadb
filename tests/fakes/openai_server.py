"""A fake OpenAI-compatible upstream that writes OpenAI's wire format byte for byte.

Formats follow OpenAI's API reference ("Create chat completion", "The chat completion chunk
object", "Error codes") as the official openai-python SDK consumes them:

- a stream is `Content-Type: text/event-stream; charset=utf-8`, chunked transfer encoding,
  one `data: {json}\n\n` event per chunk: first the role, then content deltas, then a chunk
  with `finish_reason`, then (only when `stream_options.include_usage` was sent) a chunk
  with `"choices": []` and `usage`, every earlier chunk then carrying `"usage": null`;
  finally `data: [DONE]\n\n`;
- errors are `{"error": {"message", "type", "param", "code"}}` with the HTTP status, and
  429s carry `retry-after`;
- `GET /v1/models` is `{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`.

Behaviour is scripted per request: a default reply plus a queue of one-shot replies.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http_server import Exchange, FakeHTTPServer, PeerClosed, Request

CREATED = 1764000000
SSE_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "keep-alive"),
    ("Cache-Control", "no-cache"),
]


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


SERVER_ERROR = error_body(
    "The server had an error while processing your request. Sorry about that!", "server_error", None
)
INVALID_KEY = error_body("Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                         "invalid_request_error", "invalid_api_key")  # fmt: skip


def rate_limit_body(model: str) -> bytes:
    return error_body(f"Rate limit reached for model `{model}` in organization `org_fake` on requests per minute (RPM): "
                      "Limit 30, Used 30, Requested 1. Please try again in 2s.", "requests", "rate_limit_exceeded")  # fmt: skip


@dataclass
class StreamRecord:
    """What one streamed answer did, seen from the upstream's side."""

    exchange: Exchange
    planned: int
    sent: int = 0
    finished: bool = False

    @property
    def closed_by_peer(self) -> threading.Event:
        return self.exchange.closed_by_peer


def _chunk(model: str, delta: dict[str, Any], finish: str | None, with_usage_field: bool) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-fake123",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage_field:
        doc["usage"] = None
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class Stream:
    """A normal streamed answer; `gate` holds everything after the first content chunk until
    set, `delay` paces chunks, `cut_after` drops the connection after that many chunks."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", "!"])
    delay: float = 0.0
    gate: threading.Event | None = None
    cut_after: int | None = None
    finish_reason: str = "stop"
    #: "chunked" (what OpenAI and most servers send) or "close": no Transfer-Encoding and no
    #: Content-Length, the body ends when the server closes (HTTP/1.0-style servers do this).
    framing: str = "chunked"
    #: Seconds of silence before the response starts (a model loading, a long queue).
    first_delay: float = 0.0
    #: Which content chunk the gate holds back: 1 (after the first token) or 0 (before any).
    gate_at: int = 1

    def __call__(self, ex: Exchange, fake: FakeOpenAI) -> None:
        body = ex.request.json()
        if self.first_delay:
            fake.waiting.append(ex)
            if ex.wait_for_close(self.first_delay):
                raise PeerClosed
        model = body.get("model", "fake-model")
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        record = StreamRecord(ex, planned=len(self.chunks))
        fake.streams.append(record)
        if self.framing == "close":
            ex.raw_body = True
            ex.keep_alive = False
            ex.start(200, [SSE_HEADERS[0], ("Connection", "close"), SSE_HEADERS[3]])
        else:
            ex.start(200, SSE_HEADERS)
        ex.chunk(_chunk(model, {"role": "assistant", "content": ""}, None, usage))
        for index, text in enumerate(self.chunks):
            if self.cut_after is not None and index == self.cut_after:
                ex.keep_alive = False
                return  # the handler returns, and the connection closes mid-body
            if index == self.gate_at and self.gate is not None:
                while not self.gate.wait(0.05):
                    if ex.peer_closed():
                        raise PeerClosed
            elif index and self.delay:
                time.sleep(self.delay)
            ex.chunk(_chunk(model, {"content": text}, None, usage))
            record.sent += 1
        ex.chunk(_chunk(model, {}, self.finish_reason, usage))
        if usage:
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            tail = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": CREATED, "model": model,
                    "system_fingerprint": "fp_fake", "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(self.chunks),
                              "total_tokens": prompt + len(self.chunks)}}  # fmt: skip
            ex.chunk(b"data: " + json.dumps(tail, separators=(",", ":")).encode() + b"\n\n")
        ex.chunk(b"data: [DONE]\n\n")
        ex.end_chunks()
        record.finished = True


@dataclass
class Error:
    status: int = 500
    body: bytes = SERVER_ERROR
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, ex: Exchange, fake: FakeOpenAI) -> None:
        ex.respond(self.status, self.body, extra_headers=self.headers)


@dataclass
class EmptyStream:
    """A 200 stream with a role chunk and a finish chunk but no content at all."""

    def __call__(self, ex: Exchange, fake: FakeOpenAI) -> None:
        model = ex.request.json().get("model", "fake-model")
        ex.start(200, SSE_HEADERS)
        ex.chunk(_chunk(model, {"role": "assistant", "content": ""}, None, False))
        ex.chunk(_chunk(model, {}, "stop", False))
        ex.chunk(b"data: [DONE]\n\n")
        ex.end_chunks()


@dataclass
class Hang:
    """Accept the request, then say nothing until the peer gives up (or `seconds` pass)."""

    seconds: float = 30.0

    def __call__(self, ex: Exchange, fake: FakeOpenAI) -> None:
        fake.hung.append(ex)
        ex.wait_for_close(self.seconds)
        ex.keep_alive = False


class FakeOpenAI:
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first."""

    def __init__(self, chat: Any = None, models: tuple[str, ...] = ("fake-model",), valid_keys: set[str] | None = None,
                 models_status: int = 200, models_hang: bool = False) -> None:  # fmt: skip
        self.chat = chat or Stream()
        self.models = models
        self.models_status = models_status
        self.models_hang = models_hang
        self.valid_keys = valid_keys
        self.rate_limited_keys: dict[str, str] = {}
        self.requests: list[Request] = []
        self.streams: list[StreamRecord] = []
        self.hung: list[Exchange] = []
        #: Exchanges that were held before their first byte (Stream.first_delay).
        self.waiting: list[Exchange] = []
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    @property
    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def queue(self, *replies: Any) -> None:
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeOpenAI:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _handle(self, ex: Exchange) -> None:
        request = ex.request
        with self._lock:
            self.requests.append(request)
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.valid_keys is not None and key not in self.valid_keys:
            ex.respond(401, INVALID_KEY)
            return
        if request.method == "GET" and request.path == "/v1/models":
            if self.models_hang:
                Hang()(ex, self)
                return
            if self.models_status != 200:
                ex.respond(self.models_status, SERVER_ERROR)
                return
            data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in self.models]
            ex.respond(200, json.dumps({"object": "list", "data": data}).encode())
            return
        if request.method == "POST" and request.path == "/v1/chat/completions":
            if key in self.rate_limited_keys:
                model = request.json().get("model", "fake-model")
                ex.respond(429, rate_limit_body(model), extra_headers=[("retry-after", self.rate_limited_keys[key])])
                return
            with self._lock:
                reply = self._queue.popleft() if self._queue else self.chat
            reply(ex, self)
            return
        ex.respond(404, error_body(f"Invalid URL ({request.method} {request.path})", "invalid_request_error", None))
