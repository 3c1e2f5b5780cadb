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
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import upstream
from tests.fakes.http_server import Exchange, PeerClosed, Request
from tests.fakes.upstream import FakeUpstream, StreamRecord, cut, pace
from tests.fakes.upstream import Hang as Hang  # one of this fake's behaviours

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
    #: Send every content chunk, the finish and [DONE] in one write (a fast model's burst, or
    #: a proxy that buffered them), as one HTTP chunk of several SSE events.
    together: bool = False

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
        if self.together:
            events = [_chunk(model, {"content": text}, None, usage) for text in self.chunks]
            ex.chunk(b"".join([*events, _chunk(model, {}, self.finish_reason, usage), b"data: [DONE]\n\n"]))
            ex.end_chunks()
            record.sent = len(self.chunks)
            record.finished = True
            return
        for index, text in enumerate(self.chunks):
            if cut(ex, index, self.cut_after):
                return
            pace(ex, index, self.gate, self.delay, self.gate_at)
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
class Error(upstream.Error):
    status: int = 500
    body: bytes = SERVER_ERROR


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


class FakeOpenAI(FakeUpstream):
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    The key goes in `Authorization: Bearer <key>`; `rate_limited_keys` maps a key to the
    Retry-After value its chat requests get with a 429."""

    prefix = "/v1"

    def __init__(self, chat: Any = None, models: tuple[str, ...] = ("fake-model",), valid_keys: set[str] | None = None,
                 models_status: int = 200, models_hang: bool = False) -> None:  # fmt: skip
        super().__init__(chat or Stream(), models, valid_keys, models_status, models_hang)
        #: Exchanges that were held before their first byte (Stream.first_delay).
        self.waiting: list[Exchange] = []

    def is_chat(self, request: Request) -> bool:
        return request.path.endswith("/chat/completions")

    def refuse_key(self, ex: Exchange, key: str) -> None:
        Error(401, INVALID_KEY)(ex, self)

    def route(self, ex: Exchange, key: str) -> None:
        request = ex.request
        if request.method == "GET" and request.path == "/v1/models":
            self.serve_models(ex)
        elif request.method == "POST" and request.path == "/v1/chat/completions":
            if key in self.rate_limited_keys:
                model = request.json().get("model", "fake-model")
                Error(429, rate_limit_body(model), [("retry-after", self.rate_limited_keys[key])])(ex, self)
            else:
                self.next_reply()(ex, self)
        else:
            body = error_body(f"Invalid URL ({request.method} {request.path})", "invalid_request_error", None)
            Error(404, body)(ex, self)

    def models_error(self, ex: Exchange) -> None:
        Error(self.models_status, SERVER_ERROR)(ex, self)

    def list_models(self, ex: Exchange) -> None:
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in self.models]
        ex.respond(200, json.dumps({"object": "list", "data": data}).encode())
