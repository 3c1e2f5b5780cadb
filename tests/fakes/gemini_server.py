"""A fake Gemini API (Generative Language API v1beta) upstream that writes its wire format byte
for byte.

Formats follow ai.google.dev/api/generate-content, ai.google.dev/api/models and
ai.google.dev/gemini-api/docs/generate-content/api-errors, as the official google-genai SDK
(`google/genai/_api_client.py`) reads them, and responses captured from the real service:

- `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` answers `Content-Type:
  text/event-stream`, chunked, one `data: {GenerateContentResponse}\\r\\n\\r\\n` per event, the
  JSON written the way Google's frontend writes it (`{"a": 1,"b": 2}`), non-ASCII unescaped;
  `usageMetadata` on every event (only `promptTokenCount`/`totalTokenCount` until the last),
  `finishReason` on the last candidate, no `[DONE]`;
- `POST .../models/{model}:generateContent` answers one pretty-printed (2-space) JSON object;
- errors are pretty-printed `{"error": {"code", "message", "status", "details"}}` with
  `application/json; charset=UTF-8`; a bad key is a 400 INVALID_ARGUMENT with ErrorInfo
  reason API_KEY_INVALID, a missing one a 403 PERMISSION_DENIED; 429s carry a
  `google.rpc.RetryInfo` detail (and a Retry-After header only when a test asks for one);
- an error once a stream has started is written as bare pretty-printed JSON lines, outside
  SSE framing (vercel/ai#5217);
- `GET /v1beta/models` lists `{"models": [{"name": "models/...", "supportedGenerationMethods"}]}`,
  an embedding model included (it must be filtered out);
- the key is read from the `x-goog-api-key` header only.

Behaviour is scripted per request: a default reply plus a queue of one-shot replies.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.fakes import upstream
from tests.fakes.http_server import Exchange, Request
from tests.fakes.upstream import FakeUpstream, StreamRecord, cut, pace, write_split
from tests.fakes.upstream import Hang as Hang  # one of this fake's behaviours

MODEL_VERSION = "gemini-2.5-flash"
RESPONSE_ID = "fAkE9xQ2L8mZz7IPq4-fake"
_GOOGLE = [
    ("Vary", "Origin"),
    ("Vary", "X-Origin"),
    ("Vary", "Referer"),
    ("Date", "Wed, 25 Nov 2026 12:00:00 GMT"),
    ("Server", "scaffolding on HTTPServer2"),
    ("X-XSS-Protection", "0"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Content-Type-Options", "nosniff"),
    ("Server-Timing", "gfet4t7; dur=412"),
    ("Alt-Svc", 'h3=":443"; ma=2592000,h3-29=":443"; ma=2592000'),
]
SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Content-Disposition", "attachment"), *_GOOGLE,
               ("Transfer-Encoding", "chunked")]  # fmt: skip
JSON_TYPE = "application/json; charset=UTF-8"


def pretty(doc: object) -> bytes:
    """Google's frontend pretty-prints JSON bodies with two spaces and a final newline."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def sse_event(doc: object) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ": "), ensure_ascii=False).encode() + b"\r\n\r\n"


def error_body(code: int, message: str, status: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return pretty({"error": error})


def _localized(message: str) -> dict[str, str]:
    return {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message}


INVALID_KEY = error_body(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
     "metadata": {"service": "generativelanguage.googleapis.com"}},
    _localized("API key not valid. Please pass a valid API key."),
])  # fmt: skip
MISSING_KEY = error_body(403, "Method doesn't allow unregistered callers (callers without established identity). "
                         "Please use API Key or other form of API consumer identity to call this API.",
                         "PERMISSION_DENIED")  # fmt: skip
FREE_TIER_UNAVAILABLE = error_body(400, "Gemini API free tier is not available in your country. Please enable "
                                   "billing on your project in Google AI Studio.", "FAILED_PRECONDITION")  # fmt: skip
TOO_MANY_TOKENS = error_body(400, "The input token count (1212345) exceeds the maximum number of tokens allowed "
                             "(1048576).", "INVALID_ARGUMENT")  # fmt: skip
INTERNAL = error_body(500, "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting", "INTERNAL")  # fmt: skip
OVERLOADED = error_body(503, "The model is overloaded. Please try again later.", "UNAVAILABLE")


def not_found_body(model: str) -> bytes:
    return error_body(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                      "generateContent. Call ListModels to see the list of available models and their supported "
                      "methods.", "NOT_FOUND")  # fmt: skip


def rate_limit_body(model: str, *, per_day: bool = False, retry_delay: str | None = "37s", limit: int = 10) -> bytes:
    """The 429 of the free tier: per-minute by default, per-day when asked (a quota)."""
    window = "PerDay" if per_day else "PerMinute"
    metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    message = ("You exceeded your current quota, please check your plan and billing details. For more information on "
               "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, "
               f"head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, limit: {limit}, "
               f"model: {model}")  # fmt: skip
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": metric, "quotaId": f"GenerateRequests{window}PerProjectPerModel-FreeTier",
             "quotaDimensions": {"location": "global", "model": model}, "quotaValue": str(limit)}]},
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [
            {"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    ]  # fmt: skip
    if retry_delay is not None:
        message += f"\nPlease retry in {retry_delay[:-1]}.{'0' * 3}s."
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return error_body(429, message, "RESOURCE_EXHAUSTED", details)


def html_404(path: str) -> bytes:
    return ("<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
            f"  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{path}</code> was not "
            "found on this server.  <ins>That’s all we know.</ins>\n").encode()  # fmt: skip


@dataclass
class Call:
    """A generate request as the fake understood it."""

    model: str
    method: str  # generateContent or streamGenerateContent
    alt: str | None
    body: dict[str, Any]

    @property
    def streaming(self) -> bool:
        return self.method == "streamGenerateContent"

    @property
    def prompt_tokens(self) -> int:
        texts = [p.get("text", "") for c in self.body.get("contents", []) for p in c.get("parts", [])]
        texts += [p.get("text", "") for p in (self.body.get("systemInstruction") or {}).get("parts", [])]
        return sum(len(str(t).split()) for t in texts)


def _usage(call: Call, answer: int | None, thoughts: int) -> dict[str, Any]:
    prompt = call.prompt_tokens
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if answer is not None:
        usage["candidatesTokenCount"] = answer
    usage["totalTokenCount"] = prompt + (answer or 0) + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _response(call: Call, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    candidate.update(extra or {})
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL_VERSION, "responseId": RESPONSE_ID}


def _send_json(ex: Exchange, status: int, body: bytes) -> None:
    ex.respond(status, body, content_type=JSON_TYPE, extra_headers=_GOOGLE)


def _send_whole(ex: Exchange, call: Call, doc: dict[str, Any]) -> None:
    """A one-piece answer: a stream of one event, or one JSON object."""
    if call.streaming:
        ex.start(200, SSE_HEADERS)
        ex.chunk(sse_event(doc))
        ex.end_chunks()
    else:
        _send_json(ex, 200, pretty(doc))


@dataclass
class Stream:
    """A normal answer. Streaming: one event per chunk, `thoughts` first as thought parts;
    `gate` holds everything after the first content event until set, `delay` paces events,
    `cut_after` drops the connection after that many content events, `split_writes` writes
    each event in two HTTP chunks cut inside its first multi-byte character.
    Not streaming: the whole answer as one JSON object."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", "!"])
    thoughts: list[str] = field(default_factory=list)
    finish_reason: str = "STOP"
    delay: float = 0.0
    gate: threading.Event | None = None
    cut_after: int | None = None
    split_writes: bool = False

    def __call__(self, ex: Exchange, fake: FakeGemini, call: Call) -> None:
        thinking = len(self.thoughts)
        if not call.streaming:
            parts = [{"text": t, "thought": True} for t in ("".join(self.thoughts),) if t]
            parts.append({"text": "".join(self.chunks)})
            doc = _response(call, parts, self.finish_reason, _usage(call, len(self.chunks), thinking))
            _send_json(ex, 200, pretty(doc))
            return
        record = StreamRecord(ex, planned=len(self.chunks))
        fake.streams.append(record)
        ex.start(200, SSE_HEADERS)
        running = _usage(call, None, thinking)
        for thought in self.thoughts:
            self._write(ex, sse_event(_response(call, [{"text": thought, "thought": True}], None, running)))
        for index, text in enumerate(self.chunks):
            if cut(ex, index, self.cut_after):
                return
            pace(ex, index, self.gate, self.delay)
            last = index == len(self.chunks) - 1
            usage = _usage(call, len(self.chunks), thinking) if last else running
            self._write(ex, sse_event(_response(call, [{"text": text}], self.finish_reason if last else None, usage)))
            record.sent += 1
        if not self.chunks:
            self._write(ex, sse_event(_response(call, [{"text": ""}], self.finish_reason, _usage(call, 0, thinking))))
        ex.end_chunks()
        record.finished = True

    def _write(self, ex: Exchange, data: bytes) -> None:
        if self.split_writes:
            write_split(ex, data, ascii_in_halves=True)
        else:
            ex.chunk(data)


@dataclass
class Error(upstream.Error):
    """An error as Google's frontend sends it (`JSON_TYPE`, its headers)."""

    status: int = 500
    body: bytes = INTERNAL
    content_type: str = JSON_TYPE

    def provider_headers(self) -> list[tuple[str, str]]:
        return _GOOGLE


@dataclass
class InBandError:
    """Stream `chunks`, then an error written into the started stream: bare pretty-printed
    JSON outside SSE framing, as Google does (or, with `as_event`, as a `data:` event)."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from"])
    body: bytes = OVERLOADED
    as_event: bool = False

    def __call__(self, ex: Exchange, fake: FakeGemini, call: Call) -> None:
        ex.start(200, SSE_HEADERS)
        for text in self.chunks:
            ex.chunk(sse_event(_response(call, [{"text": text}], None, _usage(call, None, 0))))
        if self.as_event:
            ex.chunk(sse_event(json.loads(self.body)))
        else:
            ex.chunk(self.body)
        ex.end_chunks()


@dataclass
class PromptBlocked:
    """The prompt refused by the safety filter: no candidates, `promptFeedback.blockReason`."""

    reason: str = "PROHIBITED_CONTENT"

    def __call__(self, ex: Exchange, fake: FakeGemini, call: Call) -> None:
        doc = {"promptFeedback": {"blockReason": self.reason}, "usageMetadata": _usage(call, None, 0),
               "modelVersion": MODEL_VERSION, "responseId": RESPONSE_ID}  # fmt: skip
        _send_whole(ex, call, doc)


@dataclass
class AnswerBlocked:
    """The answer stopped by the safety filter before any text: finishReason SAFETY."""

    category: str = "HARM_CATEGORY_DANGEROUS_CONTENT"

    def __call__(self, ex: Exchange, fake: FakeGemini, call: Call) -> None:
        ratings = [{"category": c, "probability": "HIGH" if c == self.category else "NEGLIGIBLE"}
                   | ({"blocked": True} if c == self.category else {})
                   for c in ("HARM_CATEGORY_HATE_SPEECH", self.category)]  # fmt: skip
        doc = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": ratings}],
               "usageMetadata": _usage(call, None, 0), "modelVersion": MODEL_VERSION, "responseId": RESPONSE_ID}  # fmt: skip
        _send_whole(ex, call, doc)


def _model_entry(model: str, methods: list[str]) -> dict[str, Any]:
    return {"name": f"models/{model}", "version": "001", "displayName": model, "description": f"Fake {model}",
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536, "supportedGenerationMethods": methods,
            "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True}  # fmt: skip


class FakeGemini(FakeUpstream):
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    `valid_keys`: when set, a missing key gets the 403 and an unknown one the 400 API_KEY_INVALID.
    `rate_limited_keys`: key -> the `Error` that key gets (e.g. `Error(429, rate_limit_body(m))`).
    `strict_models`: answer 404 NOT_FOUND for a model not in `models`.
    """

    prefix = "/v1beta"

    def __init__(self, chat: Any = None, models: tuple[str, ...] = ("gemini-2.5-flash",),
                 valid_keys: set[str] | None = None, strict_models: bool = False, models_status: int = 200,
                 models_hang: bool = False) -> None:  # fmt: skip
        super().__init__(chat or Stream(), models, valid_keys, models_status, models_hang)
        self.strict_models = strict_models

    def is_chat(self, request: Request) -> bool:
        return "enerateContent" in request.path

    def api_key(self, request: Request) -> str:
        return request.headers.get("x-goog-api-key", "")

    def refuse_key(self, ex: Exchange, key: str) -> None:
        (Error(400, INVALID_KEY) if key else Error(403, MISSING_KEY))(ex, self)

    def route(self, ex: Exchange, key: str) -> None:
        request = ex.request
        path, _, query = request.path.partition("?")
        if request.method == "GET" and path == "/v1beta/models":
            self.serve_models(ex)
            return
        name, _, method = unquote(path.removeprefix("/v1beta/models/")).partition(":")
        if request.method == "POST" and path.startswith("/v1beta/models/") and method in (
            "generateContent", "streamGenerateContent"
        ):  # fmt: skip
            call = Call(name, method, (parse_qs(query).get("alt") or [None])[0], json.loads(request.body or b"{}"))
            if self.strict_models and name not in self.models:
                Error(404, not_found_body(name))(ex, self)
            elif key in self.rate_limited_keys:
                self.rate_limited_keys[key](ex, self, call)
            else:
                self.next_reply()(ex, self, call)
            return
        ex.respond(404, html_404(path), content_type="text/html; charset=UTF-8", extra_headers=_GOOGLE)

    def models_error(self, ex: Exchange) -> None:
        Error(self.models_status, OVERLOADED if self.models_status == 503 else INTERNAL)(ex, self)

    def list_models(self, ex: Exchange) -> None:
        chat = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
        entries = [_model_entry(m, chat) for m in self.models]
        entries.append(_model_entry("gemini-embedding-001", ["embedContent", "countTextTokens", "countTokens",
                                                             "asyncBatchEmbedContent"]))  # fmt: skip
        _send_json(ex, 200, pretty({"models": entries, "nextPageToken": "Ch5tb2RlbHMvZ2VtaW5pLWVtYmVkZGluZy0wMDE="}))
