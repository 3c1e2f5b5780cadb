"""A fake Ollama server that writes Ollama's native wire format byte for byte.

Formats follow Ollama's docs/api.md and its Go source (server/routes.go, api/types.go):

- `POST /api/chat` with `stream` true (the default) answers `Content-Type: application/x-ndjson`,
  chunked, one compact JSON line per chunk (`streamResponse` appends "\n" to `json.Marshal`):
  `{"model","created_at","message":{"role":"assistant","content"[,"thinking"]},"done":false}`,
  then a `"done":true` line with `done_reason` and the `Metrics` (zero counts omitted: Go's
  `omitempty`). A failure mid-stream is one more line `{"error":"..."}` and the body ends.
- `stream: false` answers the whole object as `application/json; charset=utf-8` (gin's `c.JSON`).
- Errors before any output are `{"error":"..."}` with the HTTP status (`c.JSON`): 404 for an
  unknown model, 400, 500, 503 `server busy...` (OLLAMA_MAX_QUEUE), and, from an authenticating
  proxy in front of Ollama, 401 and 429 with Retry-After.
- `GET /api/tags` is `{"models":[{"name","model","modified_at","size","digest","details"}]}`.
- Unknown routes are gin's plain-text `404 page not found`.

Strings are escaped as Go's encoding/json does (`<`, `>`, `&` as \\u003c, \\u003e, \\u0026; other
non-ASCII characters raw). Behaviour is scripted per request: a default reply plus a queue of
one-shot replies, as in every fake (`tests.fakes.upstream`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import upstream
from tests.fakes.http_server import Exchange, Request
from tests.fakes.upstream import FakeUpstream, StreamRecord, cut, pace, write_split
from tests.fakes.upstream import Hang as Hang  # one of this fake's behaviours

DATE = "Mon, 24 Nov 2025 16:00:00 GMT"
CREATED_AT = "2025-11-24T16:00:00.412785Z"
JSON_TYPE = "application/json; charset=utf-8"
NDJSON_HEADERS = [("Content-Type", "application/x-ndjson"), ("Date", DATE), ("Transfer-Encoding", "chunked")]
MID_STREAM_ERROR = "an error was encountered while running the model"


def go_json(doc: Any) -> bytes:
    """`json.Marshal` as Go writes it: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(raw, escaped)
    return text.encode("utf-8")


def error_body(message: str) -> bytes:
    return go_json({"error": message})


def model_not_found(model: str) -> bytes:
    return error_body(f'model "{model}" not found, try pulling it first')


SERVER_BUSY = error_body("server busy, please try again.  maximum pending requests exceeded")
UNAUTHORIZED = error_body("unauthorized")


def with_tag(model: str) -> str:
    """Ollama's default tag: "llama3.2" is "llama3.2:latest"."""
    return model if ":" in model.rsplit("/", 1)[-1] else model + ":latest"


def _line(model: str, content: str, thinking: str | None = None) -> bytes:
    message = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    return go_json({"model": model, "created_at": CREATED_AT, "message": message, "done": False}) + b"\n"


def _final(model: str, reason: str | None, prompt_tokens: int, eval_tokens: int, content: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": content},
        "done": True,
    }
    if reason:
        doc["done_reason"] = reason
    doc.update({"total_duration": 1320469875, "load_duration": 721519042})
    if prompt_tokens:  # omitempty: a fully cached prompt has no count
        doc.update({"prompt_eval_count": prompt_tokens, "prompt_eval_duration": 412000000})
    if eval_tokens:
        doc.update({"eval_count": eval_tokens, "eval_duration": 186000000})
    return doc


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


@dataclass
class Chat:
    """A normal answer, streamed or whole as the request asks (`stream`, default true).

    `thinking` pieces come first (as a thinking model sends them); `delay` paces lines; `gate`
    holds everything after the first content line until set; `cut_after` drops the connection
    after that many content lines (`cut_inside_line`: after half of the next line);
    `error_after` sends an in-band `{"error"}` line after that many; `split_utf8` writes each
    line in two network writes cut inside its first multi-byte character; `prompt_cached`
    omits prompt_eval_count."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", "!"])
    thinking: list[str] = field(default_factory=list)
    delay: float = 0.0
    gate: threading.Event | None = None
    cut_after: int | None = None
    cut_inside_line: bool = False
    error_after: int | None = None
    error_message: str = MID_STREAM_ERROR
    done_reason: str | None = "stop"
    split_utf8: bool = False
    prompt_cached: bool = False

    def __call__(self, ex: Exchange, fake: FakeOllama) -> None:
        body = ex.request.json()
        assert isinstance(body, dict)
        model = body.get("model", "llama3.2")
        prompt = 0 if self.prompt_cached else _prompt_tokens(body)
        if body.get("stream", True) is False:
            final = _final(model, self.done_reason, prompt, len(self.chunks), "".join(self.chunks))
            if self.thinking:
                final["message"]["thinking"] = "".join(self.thinking)
            ex.respond(200, go_json(final), JSON_TYPE, [("Date", DATE)])
            return
        record = StreamRecord(ex, planned=len(self.chunks))
        fake.streams.append(record)
        ex.start(200, NDJSON_HEADERS)
        for piece in self.thinking:
            self._write(ex, _line(model, "", piece))
        for index, text in enumerate(self.chunks):
            if self.error_after is not None and index == self.error_after:
                ex.chunk(error_body(self.error_message) + b"\n")  # json.NewEncoder(w).Encode
                ex.end_chunks()
                return
            line = _line(model, text)
            if cut(ex, index, self.cut_after):
                if self.cut_inside_line:
                    ex.chunk(line[: len(line) // 2])
                return
            pace(ex, index, self.gate, self.delay)
            self._write(ex, line)
            record.sent += 1
        self._write(ex, go_json(_final(model, self.done_reason, prompt, len(self.chunks))) + b"\n")
        ex.end_chunks()
        record.finished = True

    def _write(self, ex: Exchange, line: bytes) -> None:
        if self.split_utf8:
            write_split(ex, line)
        else:
            ex.chunk(line)


@dataclass
class Error(upstream.Error):
    """An error before any output: `{"error": message}` with its status, as gin's c.JSON writes it."""

    status: int = 500
    body: bytes = field(default_factory=lambda: error_body("llama runner process has terminated: exit status 2"))
    content_type: str = JSON_TYPE

    def provider_headers(self) -> list[tuple[str, str]]:
        return [("Date", DATE)]


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-11-20T09:12:44.706015396+01:00",
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },  # fmt: skip
    }


class FakeOllama(FakeUpstream):
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    A chat for a model not in `models` gets Ollama's 404 (names compare with their tag, so
    "llama3.2" is "llama3.2:latest"). `valid_keys` puts an authenticating proxy in front:
    without `Authorization: Bearer <one of them>` every route answers 401;
    `rate_limited_keys` maps a key to the Retry-After value the proxy answers it with a 429."""

    def __init__(self, chat: Any = None, models: tuple[str, ...] = ("llama3.2:latest", "qwen3:0.6b"),
                 valid_keys: set[str] | None = None, models_status: int = 200, models_hang: bool = False) -> None:  # fmt: skip
        super().__init__(chat or Chat(), models, valid_keys, models_status, models_hang)

    def is_chat(self, request: Request) -> bool:
        return request.path == "/api/chat"

    def refuse_key(self, ex: Exchange, key: str) -> None:
        Error(401, UNAUTHORIZED)(ex, self)

    def route(self, ex: Exchange, key: str) -> None:
        request = ex.request
        if request.method == "GET" and request.path == "/api/tags":
            self.serve_models(ex)
        elif request.method == "POST" and request.path == "/api/chat":
            self._chat(ex, key)
        elif request.method in ("GET", "HEAD") and request.path == "/":
            ex.respond(200, b"Ollama is running", "text/plain; charset=utf-8", [("Date", DATE)])
        else:
            Error(404, b"404 page not found", content_type="text/plain")(ex, self)

    def models_error(self, ex: Exchange) -> None:
        Error(self.models_status)(ex, self)

    def list_models(self, ex: Exchange) -> None:
        ex.respond(200, go_json({"models": [_tag(m) for m in self.models]}), JSON_TYPE, [("Date", DATE)])

    def _chat(self, ex: Exchange, key: str) -> None:
        if key in self.rate_limited_keys:
            Error(429, error_body("rate limit exceeded"), [("Retry-After", self.rate_limited_keys[key])])(ex, self)
            return
        try:
            body = ex.request.json()
        except ValueError:
            Error(400, error_body("invalid character 'x' looking for beginning of value"))(ex, self)
            return
        model = body.get("model") if isinstance(body, dict) else None
        if not model:
            Error(400, error_body("model is required"))(ex, self)
            return
        if with_tag(model) not in {with_tag(m) for m in self.models}:
            Error(404, model_not_found(model))(ex, self)
            return
        self.next_reply()(ex, self)
