"""A fake Anthropic upstream that writes the Messages API's wire format byte for byte.

Formats follow Anthropic's API reference ("Messages", "Streaming Messages", "Errors",
"Rate limits", "List Models") and the official anthropic-sdk-python's stream fixtures:

- `POST /v1/messages` with `"stream": true` answers `Content-Type: text/event-stream; charset=utf-8`,
  chunked, one `event: <type>\\ndata: <json>\\n\\n` per event: message_start (input usage),
  content_block_start, a ping, text_delta content_block_deltas, content_block_stop,
  message_delta (stop_reason, cumulative output usage), message_stop;
- with `"stream": false` it answers one Message object as `application/json`;
- errors are `{"type":"error","error":{"type","message"},"request_id"}` with the documented
  status (400, 401, 403, 404, 413, 429 with `retry-after`, 500, 529), and every response carries
  `request-id` and `anthropic-ratelimit-*` headers;
- `GET /v1/models` is `{"data":[{"type":"model","id","display_name","created_at"}],"has_more",
  "first_id","last_id"}`;
- the key must arrive in `x-api-key` and an `anthropic-version` header must be present.

Behaviour is scripted per request: a default reply plus a queue of one-shot replies, as in
every fake (`tests.fakes.upstream`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from tests.fakes import upstream
from tests.fakes.http_server import Exchange, Request
from tests.fakes.upstream import FakeUpstream, StreamRecord, cut, pace, write_split
from tests.fakes.upstream import Hang as Hang  # one of this fake's behaviours

DEFAULT_MODEL = "claude-haiku-4-5"
SSE_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "keep-alive"),
    ("Cache-Control", "no-cache"),
]
#: Reset times far in the future of any test clock, as the real API sends on every response.
RATE_HEADERS = [
    ("anthropic-ratelimit-requests-limit", "50"),
    ("anthropic-ratelimit-requests-remaining", "49"),
    ("anthropic-ratelimit-requests-reset", "2026-11-25T16:00:01Z"),
    ("anthropic-ratelimit-tokens-limit", "50000"),
    ("anthropic-ratelimit-tokens-remaining", "49000"),
    ("anthropic-ratelimit-tokens-reset", "2026-11-25T16:00:01Z"),
]
_ids = count(1)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(type_: str, message: str, request_id: str | None = "req_011CfakeRequest0001") -> bytes:
    doc: dict[str, Any] = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id is not None:
        doc["request_id"] = request_id
    return _json(doc)


INVALID_KEY = error_body("authentication_error", "invalid x-api-key")
MISSING_KEY = error_body("authentication_error", "x-api-key header is required")
MISSING_VERSION = error_body("invalid_request_error", "anthropic-version: header is required")
PERMISSION = error_body("permission_error", "Your API key does not have permission to use the specified resource.")
OVERLOADED = error_body("overloaded_error", "Overloaded")
API_ERROR = error_body("api_error", "Internal server error")
RATE_LIMITED = error_body(
    "rate_limit_error",
    "This request would exceed the rate limit for your organization of 50 requests per minute. "
    "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
)
CREDIT_TOO_LOW = error_body(
    "invalid_request_error",
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
)
PROMPT_TOO_LONG = error_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
REQUEST_TOO_LARGE = error_body("request_too_large", "Request exceeds the maximum allowed number of bytes.", None)


def model_not_found(model: str) -> bytes:
    return error_body("not_found_error", f"model: {model}")


def event(type_: str, doc: dict[str, Any]) -> bytes:
    return b"event: " + type_.encode() + b"\ndata: " + _json({"type": type_, **doc}) + b"\n\n"


PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [str(m.get("content", "")) for m in body.get("messages", [])] + [str(body.get("system", ""))]
    return sum(len(t.split()) for t in texts)


@dataclass
class Reply:
    """A normal answer, streamed or whole as the request asks.

    `gate` holds everything after the first text delta until set, `delay` paces deltas,
    `cut_after` drops the connection after that many deltas, `error_after` sends an in-band
    `event: error` of `error_type` after that many deltas, `split_utf8` writes every event in
    two network writes split inside its first multi-byte character."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", "!"])
    stop_reason: str = "end_turn"
    stop_details: dict[str, Any] | None = None
    delay: float = 0.0
    gate: threading.Event | None = None
    cut_after: int | None = None
    error_after: int | None = None
    error_type: str = "overloaded_error"
    error_message: str = "Overloaded"
    split_utf8: bool = False

    def __call__(self, ex: Exchange, fake: FakeAnthropic) -> None:
        body = ex.request.json()
        assert isinstance(body, dict)
        record = StreamRecord(ex, planned=len(self.chunks))
        fake.streams.append(record)
        if body.get("stream"):
            self._stream(ex, body, record)
        else:
            self._whole(ex, body, record)

    def _message(self, body: dict[str, Any], content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {"model": body.get("model", DEFAULT_MODEL), "id": f"msg_01Fake{next(_ids):016d}", "type": "message",
                "role": "assistant", "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": _prompt_tokens(body), "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1 if stop is None else len(self.chunks),
                          "service_tier": "standard"}}  # fmt: skip

    def _whole(self, ex: Exchange, body: dict[str, Any], record: StreamRecord) -> None:
        text = "".join(self.chunks)
        message = self._message(body, [{"type": "text", "text": text}] if text else [], self.stop_reason)
        if self.stop_details is not None:
            message["stop_details"] = self.stop_details
        ex.respond(200, _json(message), extra_headers=fake_headers())
        record.sent, record.finished = len(self.chunks), True

    def _write(self, ex: Exchange, data: bytes) -> None:
        if self.split_utf8:
            write_split(ex, data, pause=0.005, ascii_in_halves=True)
        else:
            ex.chunk(data)

    def _stream(self, ex: Exchange, body: dict[str, Any], record: StreamRecord) -> None:
        ex.start(200, SSE_HEADERS + fake_headers())
        self._write(ex, event("message_start", {"message": self._message(body, [], None)}))
        self._write(ex, event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        self._write(ex, PING)
        for index, text in enumerate(self.chunks):
            if cut(ex, index, self.cut_after):
                return
            if self.error_after is not None and index == self.error_after:
                error = {"type": "error", "error": {"type": self.error_type, "message": self.error_message}}
                self._write(ex, b"event: error\ndata: " + _json(error) + b"\n\n")
                ex.end_chunks()
                return
            pace(ex, index, self.gate, self.delay)
            delta = {"index": 0, "delta": {"type": "text_delta", "text": text}}
            self._write(ex, event("content_block_delta", delta))
            record.sent += 1
        self._write(ex, event("content_block_stop", {"index": 0}))
        delta_doc: dict[str, Any] = {"stop_reason": self.stop_reason, "stop_sequence": None}
        if self.stop_details is not None:
            delta_doc["stop_details"] = self.stop_details
        usage = {"output_tokens": len(self.chunks)}
        self._write(ex, event("message_delta", {"delta": delta_doc, "usage": usage}))
        self._write(ex, event("message_stop", {}))
        ex.end_chunks()
        record.finished = True


def refusal(category: str = "cyber", explanation: str = "This request was refused due to policy.") -> Reply:
    """A refusal with no text at all, as the API sends it."""
    return Reply(chunks=[], stop_reason="refusal",
                 stop_details={"type": "refusal", "category": category, "explanation": explanation})  # fmt: skip


@dataclass
class Error(upstream.Error):
    """An error with the headers of every response (`request-id`, rate limits)."""

    status: int = 529
    body: bytes = OVERLOADED

    def provider_headers(self) -> list[tuple[str, str]]:
        return fake_headers()


def fake_headers() -> list[tuple[str, str]]:
    return [("request-id", f"req_011CFake{next(_ids):012d}"), ("anthropic-organization-id", "fake-org"), *RATE_HEADERS]


class FakeAnthropic(FakeUpstream):
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    `models` is what GET /v1/models lists and, with `check_models`, the only models
    POST /v1/messages accepts (others get the documented 404 not_found_error).
    `rate_limited_keys` maps a key to the Retry-After value answered with a 429 for that key.
    The base URL is the server's root (the adapter appends /v1/...)."""

    def __init__(self, chat: Any = None, models: tuple[str, ...] = (DEFAULT_MODEL,), valid_keys: set[str] | None = None,
                 check_models: bool = True, models_status: int = 200) -> None:  # fmt: skip
        super().__init__(chat or Reply(), models, valid_keys, models_status)
        self.check_models = check_models

    def is_chat(self, request: Request) -> bool:
        return request.path.split("?")[0] == "/v1/messages"

    def api_key(self, request: Request) -> str:
        return request.headers.get("x-api-key", "")

    def refuse_key(self, ex: Exchange, key: str) -> None:
        Error(401, INVALID_KEY if key else MISSING_KEY)(ex, self)

    def route(self, ex: Exchange, key: str) -> None:
        request = ex.request
        if "anthropic-version" not in request.headers:
            Error(400, MISSING_VERSION)(ex, self)
            return
        path = request.path.split("?")[0]
        if request.method == "GET" and path == "/v1/models":
            self.serve_models(ex)
        elif request.method == "POST" and path == "/v1/messages":
            self._messages(ex, key)
        else:
            Error(404, error_body("not_found_error", "Not Found"))(ex, self)

    def models_error(self, ex: Exchange) -> None:
        Error(self.models_status, API_ERROR)(ex, self)

    def list_models(self, ex: Exchange) -> None:
        data = [{"type": "model", "id": m, "display_name": m.replace("-", " ").title(),
                 "created_at": "2025-10-01T00:00:00Z"} for m in self.models]  # fmt: skip
        doc = {"data": data, "has_more": False, "first_id": self.models[0] if self.models else None,
               "last_id": self.models[-1] if self.models else None}  # fmt: skip
        ex.respond(200, _json(doc), extra_headers=fake_headers())

    def _messages(self, ex: Exchange, key: str) -> None:
        body = ex.request.json()
        model = body.get("model") if isinstance(body, dict) else None
        if key in self.rate_limited_keys:
            Error(429, RATE_LIMITED, [("retry-after", self.rate_limited_keys[key])])(ex, self)
            return
        if self.check_models and model not in self.models:
            Error(404, model_not_found(str(model)))(ex, self)
            return
        self.next_reply()(ex, self)
