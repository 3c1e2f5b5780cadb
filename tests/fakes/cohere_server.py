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

Behaviour is scripted per request as in every fake (`tests.fakes.upstream`): a default reply
plus a queue of one-shot replies; every request is recorded.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes import upstream
from tests.fakes.http_server import Exchange, Request
from tests.fakes.upstream import FakeUpstream, StreamRecord, cut, pace, write_split
from tests.fakes.upstream import Hang as Hang  # one of this fake's behaviours

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
            if cut(ex, index, self.cut_after):
                return
            pace(ex, index, self.gate, self.delay)
            data = event_bytes(content_delta(text), framing)
            if self.split_utf8:
                write_split(ex, data, pause=0)
            else:
                ex.chunk(data)
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
class Error(upstream.Error):
    status: int = 500
    body: bytes = INTERNAL_ERROR

    def provider_headers(self) -> list[tuple[str, str]]:
        return COMMON_HEADERS


@dataclass
class EmptyStream:
    """A 200 stream that completes without any content."""

    def __call__(self, ex: Exchange, fake: FakeCohere) -> None:
        ex.start(200, SSE_HEADERS)
        ex.chunk(event_bytes(message_start()))
        ex.chunk(event_bytes(message_end("COMPLETE", usage(1, 0))))
        ex.end_chunks()


class FakeCohere(FakeUpstream):
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    `valid_keys` (when set) is checked on every request; `rate_limited_keys` maps a key to
    the Retry-After value its chat requests get with a 429."""

    def __init__(self, chat: Any = None, models: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_MODELS,
                 valid_keys: set[str] | None = None, models_status: int = 200, models_hang: bool = False) -> None:  # fmt: skip
        super().__init__(chat or Stream(), models, valid_keys, models_status, models_hang)

    def is_chat(self, request: Request) -> bool:
        return urlsplit(request.path).path == "/v2/chat"

    def api_key(self, request: Request) -> str:
        """The key of `Authorization: Bearer <key>`; with another scheme, no key at all."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return key if scheme.lower() == "bearer" else ""

    def refuse_key(self, ex: Exchange, key: str) -> None:
        Error(401, INVALID_TOKEN if key else NO_API_KEY)(ex, self)

    def route(self, ex: Exchange, key: str) -> None:
        request = ex.request
        url = urlsplit(request.path)
        if request.method == "GET" and url.path == "/v1/models":
            self.serve_models(ex)
        elif request.method == "POST" and url.path == "/v2/chat":
            if key in self.rate_limited_keys:
                Error(429, RATE_LIMITED, [("retry-after", self.rate_limited_keys[key])])(ex, self)
            else:
                self.next_reply()(ex, self)
        else:
            Error(404, error_body("404 page not found"))(ex, self)

    def models_error(self, ex: Exchange) -> None:
        Error(self.models_status, INTERNAL_ERROR)(ex, self)

    def list_models(self, ex: Exchange) -> None:
        wanted = parse_qs(urlsplit(ex.request.path).query).get("endpoint", [None])[0]
        models = [
            {"name": name, "endpoints": list(endpoints), "finetuned": False, "context_length": 256000,
             "tokenizer_url": f"https://storage.googleapis.com/cohere-public/tokenizers/{name}.json",
             "default_endpoints": [], "features": ["tools", "strict_tools"] if "chat" in endpoints else []}
            for name, endpoints in self.models
            if wanted is None or wanted in endpoints
        ]  # fmt: skip
        ex.respond(200, _json({"models": models, "next_page_token": ""}), extra_headers=COMMON_HEADERS)
