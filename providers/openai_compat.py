"""OpenAI chat-completions protocol, spoken by OpenAI, Groq, OpenRouter, vLLM, llama.cpp's
server, LM Studio, Ollama's /v1 and many more. Groq and the others are presets (data).

Follows OpenAI's API reference, "Create chat completion" and "The chat completion chunk
object". A streamed answer (`stream: true`) is SSE::

    data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732000000,"model":"m",
           "choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

    data: {"id":"chatcmpl-1",...,"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}

    data: {"id":"chatcmpl-1",...,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

    data: {"id":"chatcmpl-1",...,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}

    data: [DONE]

Usage arrives in a last chunk with empty `choices` when `stream_options.include_usage` is
set; Groq also puts it under `x_groq.usage` in the final chunk. Errors are
`{"error": {"message", "type", "param", "code"}}`, as the HTTP body of a 4xx/5xx or,
mid-stream, as the data of an event.
"""

from __future__ import annotations

import json
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
from providers.sse import SSEDecoder, SSEEvent
from providers.wire import json_body, sampling_fields, token_count

INFO = ProviderInfo(
    type="openai_compat",
    capabilities=("chat", "streaming", "usage", "models"),
    description="OpenAI-compatible chat completions",
)


#: Error codes that mean "this model is not here", whatever status carried them.
_MODEL_MISSING_CODES = frozenset({"model_not_found", "model_decommissioned"})
_RATE_CODES = frozenset({"rate_limit_exceeded", "tokens", "requests", "rate_limit_error"})
_QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded"})


def _auth_headers(endpoint: Endpoint, key: str | None) -> dict[str, str]:
    headers = dict(endpoint.extra_headers)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def build_chat(endpoint: Endpoint, params: ChatParams, key: str | None) -> PreparedCall:
    body: dict[str, Any] = {
        "model": params.model,
        "messages": [{"role": m.role, "content": m.content} for m in params.messages],
        "stream": endpoint.stream,
    }
    if endpoint.stream and endpoint.stream_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(sampling_fields(params))
    if params.user:
        body["user"] = params.user
    headers = _auth_headers(endpoint, key)
    accept = "text/event-stream" if endpoint.stream else "application/json"
    headers.update({"Content-Type": "application/json", "Accept": accept, "Accept-Encoding": "identity"})
    return PreparedCall("POST", endpoint.base_url.rstrip("/") + "/chat/completions", headers, json_body(body))


def build_models(endpoint: Endpoint, key: str | None) -> PreparedCall:
    headers = _auth_headers(endpoint, key)
    headers["Accept"] = "application/json"
    return PreparedCall("GET", endpoint.base_url.rstrip("/") + "/models", headers)


def parse_models(body: bytes) -> tuple[str, ...]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the model list is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise malformed("the model list has no 'data' array")
    return tuple(item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str))


def _refine_kind(kind: ErrorKind, code: str | None) -> ErrorKind:
    if code in _MODEL_MISSING_CODES:
        return ErrorKind.NOT_FOUND
    if code in _QUOTA_CODES:
        return ErrorKind.QUOTA
    return kind


def parse_error(status: int, headers: Mapping[str, str], body: bytes, now: float) -> UpstreamError:
    message, code = json_error_fields(body)
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        # Plain-text bodies are passed on; HTML pages and JSON without a message are not.
        message = text if text and text[0] not in "<{[" else f"HTTP {status}"
    retry_after = None
    retry_ms = header(headers, "retry-after-ms")
    if retry_ms is not None:
        seconds = parse_retry_after(retry_ms, now)
        retry_after = seconds / 1000 if seconds is not None else None
    if retry_after is None:
        retry_after = parse_retry_after(header(headers, "retry-after"), now)
    return UpstreamError(
        _refine_kind(kind_for_status(status), code),
        excerpt(message),
        status=status,
        retry_after=retry_after,
        code=code,
    )


def _in_band_error(data: str) -> UpstreamError:
    message, code = json_error_fields(data.encode("utf-8"))
    kind = ErrorKind.RATE_LIMITED if code in _RATE_CODES else _refine_kind(ErrorKind.SERVER, code)
    return UpstreamError(kind, excerpt(message or "the upstream reported an error mid-stream"), code=code)


def _usage(doc: Mapping[str, Any]) -> Usage | None:
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        x_groq = doc.get("x_groq")
        usage = x_groq.get("usage") if isinstance(x_groq, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        input_tokens=token_count(prompt),
        output_tokens=token_count(completion),
    )


class ChunkParser:
    """Incremental parser of a streamed chat completion: bytes in, events out."""

    __slots__ = ("_sse", "_done", "_finished", "_usage")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._done = False
        self._finished = False
        self._usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for event in self._sse.feed(chunk):
            if self._done:
                break
            self._on_event(event, out)
        return out

    def finish(self) -> list[Event]:
        self._sse.finish()
        if self._done:
            return []
        out: list[Event] = [self._usage] if self._usage is not None else []
        if not self._finished:
            out.append(StreamFailure(incomplete()))
        self._done = True
        return out

    def _on_event(self, event: SSEEvent, out: list[Event]) -> None:
        data = event.data
        if data == "[DONE]":
            self._done = True
            if self._usage is not None:
                out.append(self._usage)
            return
        if event.event == "error":
            self._fail(out, _in_band_error(data))
            return
        try:
            doc = json.loads(data)
        except ValueError:
            self._fail(out, malformed("the upstream sent an event that is not JSON"))
            return
        if not isinstance(doc, dict):
            self._fail(out, malformed("the upstream sent an event that is not a JSON object"))
            return
        if "error" in doc:
            self._fail(out, _in_band_error(data))
            return
        choices = doc.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    delta = choice.get("delta")
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(content, str) and content:
                        out.append(TextDelta(content))
                    reason = choice.get("finish_reason")
                    if isinstance(reason, str) and reason and not self._finished:
                        self._finished = True
                        out.append(Finish(reason))
        usage = _usage(doc)
        if usage is not None:
            self._usage = usage

    def _fail(self, out: list[Event], error: UpstreamError) -> None:
        self._done = True
        out.append(StreamFailure(error))


def parse_completion(body: bytes) -> list[Event]:
    """A whole `chat.completion` object: the answer to `stream: false`, and what some servers
    send even to `stream: true`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [StreamFailure(malformed("the upstream answer is not JSON"))]
    if not isinstance(doc, dict):
        return [StreamFailure(malformed("the upstream answer is not a JSON object"))]
    if "error" in doc:
        return [StreamFailure(_in_band_error(body.decode("utf-8", "replace")))]
    events: list[Event] = []
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str) and content:
        events.append(TextDelta(content))
    reason = choice.get("finish_reason")
    events.append(Finish(reason if isinstance(reason, str) else None))
    usage = _usage(doc)
    if usage is not None:
        events.append(usage)
    return events


PROTOCOL = WireProtocol(
    build_chat=build_chat,
    new_parser=ChunkParser,
    parse_error=parse_error,
    build_models=build_models,
    parse_models=parse_models,
    parse_completion=parse_completion,
)
