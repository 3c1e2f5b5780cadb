"""Anthropic Messages API (Claude): `POST /v1/messages`, `GET /v1/models`.

Follows Anthropic's API reference as published at docs.anthropic.com (now platform.claude.com):
"Messages" (/en/api/messages), "Streaming Messages" (/en/docs/build-with-claude/streaming),
"Errors" (/en/api/errors), "Rate limits" (/en/api/rate-limits) and "List Models"
(/en/api/models-list), cross-checked against the official SDK, github.com/anthropics/
anthropic-sdk-python (`_streaming.py`, `_client.py`, `types/stop_reason.py`,
`types/shared/error_type.py`, `types/message_delta_usage.py`). A streamed answer
(`"stream": true`) is SSE whose event names repeat the `type` inside each JSON object::

    event: message_start
    data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant",
           "content":[],"model":"claude-haiku-4-5","stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}

    event: content_block_start
    data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

    event: ping
    data: {"type": "ping"}

    event: content_block_delta
    data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

    event: content_block_stop
    data: {"type":"content_block_stop","index":0}

    event: message_delta
    data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

    event: message_stop
    data: {"type":"message_stop"}

`message_delta` usage is cumulative; `message_stop` is the end marker. Errors are
`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_..."}`,
as the body of a 4xx/5xx or, mid-stream, as the data of an `event: error`.

Choices made where the API leaves room (each is a constant or a short function below):
- System messages are joined with a blank line into the top-level `system` string.
- Consecutive user (or assistant) messages are merged into one turn, joined with a blank line:
  the API says it combines them itself, but some models answer "roles must alternate".
- The API refuses a conversation that starts with an assistant turn ("first message must use
  the user role") or has no turn at all, so a one-character user turn is put first then.
- A final assistant message (a prefill) loses its trailing whitespace, which the API refuses.
- `max_tokens` is required by the API: DEFAULT_MAX_TOKENS when the client gives none.
- `temperature` is capped at 1.0 (Anthropic's range is 0..1, OpenAI's 0..2).
- stop reasons: end_turn/stop_sequence -> stop, max_tokens/model_context_window_exceeded ->
  length, tool_use -> tool_calls, refusal -> content_filter (BLOCKED when no text came at all);
  pause_turn (server tools only, which we never send) passes through as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
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
from providers.sse import SSEDecoder, SSEEvent
from providers.wire import json_body, sampling_fields, token_count

INFO = ProviderInfo(
    type="anthropic",
    capabilities=("chat", "streaming", "usage", "models"),
    description="Anthropic Messages API (Claude)",
)

#: The `anthropic-version` header every request needs; an operator's extra header overrides it.
API_VERSION = "2023-06-01"
#: `max_tokens` is required by the Messages API; this is sent when the client set none.
DEFAULT_MAX_TOKENS = 4096
#: Anthropic's temperature range is 0..1; higher values (valid for OpenAI) are capped.
MAX_TEMPERATURE = 1.0
#: The user turn put first when a conversation would otherwise start with the assistant.
LEADING_USER_TEXT = "."
#: Models per page of GET /v1/models (the API's maximum); one page holds every model today.
MODELS_PAGE_LIMIT = 1000

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Error types (docs "Errors"; SDK types/shared/error_type.py) and what they mean to the dispatcher.
#: invalid_request_error is classified by its HTTP status (400/413/422 bad request, other 4xx).
_TYPE_KINDS = {
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "billing_error": ErrorKind.QUOTA,
    "api_error": ErrorKind.SERVER,
    "overloaded_error": ErrorKind.SERVER,
    "timeout_error": ErrorKind.TIMEOUT,
}
#: Exhausted credit or spend limits arrive as 400 invalid_request_error or 429 rate_limit_error;
#: they are the key's account, not the client's input, so another key or worker may serve.
_QUOTA_TEXT = re.compile(r"credit balance is too low|reached your specified (?:workspace )?API usage limits", re.I)
_QUOTA_CODES = frozenset({"enforced_spend_limit_reached"})
#: "You will regain access on 2026-04-01 at 00:00 UTC." in a spend-limit message.
_REGAIN = re.compile(r"regain access on (\d{4}-\d{2}-\d{2}) at (\d{2}:\d{2}) UTC")
_RATE_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")


def _set(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing an operator's header of the same name in any letter case."""
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def _headers(endpoint: Endpoint, key: str | None, accept: str) -> dict[str, str]:
    headers = dict(endpoint.extra_headers)
    if header(headers, "anthropic-version") is None:
        headers["anthropic-version"] = API_VERSION
    if key:
        _set(headers, "x-api-key", key)
    _set(headers, "accept", accept)
    _set(headers, "accept-encoding", "identity")
    return headers


def _join(parts: list[str]) -> str:
    return "\n\n".join(part for part in parts if part)


def _turns(params: ChatParams) -> tuple[str, list[dict[str, str]]]:
    """(system, messages) as the Messages API wants them; see the module docstring."""
    system = _join([m.content for m in params.messages if m.role == "system"])
    grouped: list[tuple[str, list[str]]] = []
    for message in params.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if grouped and grouped[-1][0] == role:
            grouped[-1][1].append(message.content)
        else:
            grouped.append((role, [message.content]))
    turns = [{"role": role, "content": _join(parts)} for role, parts in grouped]
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": LEADING_USER_TEXT})
    if turns[-1]["role"] == "assistant":
        turns[-1]["content"] = turns[-1]["content"].rstrip()
    return system, turns


def build_chat(endpoint: Endpoint, params: ChatParams, key: str | None) -> PreparedCall:
    system, turns = _turns(params)
    body: dict[str, Any] = {
        "model": params.model,
        "max_tokens": params.max_tokens if params.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": turns,
        "stream": endpoint.stream,
    }
    if system:
        body["system"] = system
    if params.temperature is not None:
        body["temperature"] = min(params.temperature, MAX_TEMPERATURE)
    body.update(sampling_fields(params, temperature=None, max_tokens=None, stop="stop_sequences"))
    headers = _headers(endpoint, key, "text/event-stream" if endpoint.stream else "application/json")
    _set(headers, "content-type", "application/json")
    return PreparedCall("POST", endpoint.base_url.rstrip("/") + "/v1/messages", headers, json_body(body))


def build_models(endpoint: Endpoint, key: str | None) -> PreparedCall:
    url = f"{endpoint.base_url.rstrip('/')}/v1/models?limit={MODELS_PAGE_LIMIT}"
    return PreparedCall("GET", url, _headers(endpoint, key, "application/json"))


def parse_models(body: bytes) -> tuple[str, ...]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the model list is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise malformed("the model list has no 'data' array")
    return tuple(item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str))


# --- errors ---------------------------------------------------------------------------------


def _error_fields(doc: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, message, details.error_code, request_id) of `{"type":"error","error":{...}}`."""
    if not isinstance(doc, dict):
        return None, None, None, None
    error = doc.get("error")
    request_id = doc.get("request_id") if isinstance(doc.get("request_id"), str) else None
    if isinstance(error, str):
        return None, error, None, request_id
    if not isinstance(error, dict):
        message = doc.get("message")
        return None, message if isinstance(message, str) else None, None, request_id
    details = error.get("details")
    detail_code = details.get("error_code") if isinstance(details, dict) else None

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return text(error.get("type")), text(error.get("message")), text(detail_code), request_id


def _kind(error_type: str | None, message: str | None, detail_code: str | None, fallback: ErrorKind) -> ErrorKind:
    if detail_code in _QUOTA_CODES or (message and _QUOTA_TEXT.search(message)):
        return ErrorKind.QUOTA
    return _TYPE_KINDS.get(error_type or "", fallback)


def _with_request_id(message: str, request_id: str | None) -> str:
    return excerpt(f"{message} (request {request_id})" if request_id else message)


def _timestamp(value: str | None) -> float | None:
    """Unix time of an RFC 3339 timestamp such as 2026-01-29T12:34:56Z, or None."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _reset_hint(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the rate limit that ran out resets (`anthropic-ratelimit-*-reset`, RFC 3339):
    the latest reset among limits with nothing remaining, else the earliest reset of all."""
    exhausted: list[float] = []
    every: list[float] = []
    for limit in _RATE_LIMITS:
        when = _timestamp(header(headers, f"anthropic-ratelimit-{limit}-reset"))
        if when is None:
            continue
        seconds = max(0.0, when - now)
        every.append(seconds)
        if (header(headers, f"anthropic-ratelimit-{limit}-remaining") or "").strip() == "0":
            exhausted.append(seconds)
    if exhausted:
        return max(exhausted)
    return min(every) if every else None


def _regain_hint(message: str | None, now: float) -> float | None:
    match = _REGAIN.search(message or "")
    when = _timestamp(f"{match.group(1)}T{match.group(2)}:00+00:00") if match else None
    return max(0.0, when - now) if when is not None else None


def parse_error(status: int, headers: Mapping[str, str], body: bytes, now: float) -> UpstreamError:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    error_type, message, detail_code, request_id = _error_fields(doc)
    kind = _kind(error_type, message, detail_code, kind_for_status(status))
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        # Plain-text bodies are passed on; HTML pages and JSON without a message are not.
        message = text if text and text[0] not in "<{[" else f"HTTP {status}"
    retry_after = parse_retry_after(header(headers, "retry-after"), now)
    if retry_after is None and kind is ErrorKind.QUOTA:
        retry_after = _regain_hint(message, now)
    if retry_after is None and kind is ErrorKind.RATE_LIMITED:
        retry_after = _reset_hint(headers, now)
    return UpstreamError(
        kind,
        _with_request_id(message, request_id or header(headers, "request-id")),
        status=status,
        retry_after=retry_after,
        code=detail_code or error_type,
    )


def _in_band_error(doc: Any) -> UpstreamError:
    """An error object inside a 200 answer: mid-stream `event: error`, or a JSON body."""
    error_type, message, detail_code, request_id = _error_fields(doc)
    fallback = ErrorKind.BAD_REQUEST if error_type == "invalid_request_error" else ErrorKind.SERVER
    return UpstreamError(
        _kind(error_type, message, detail_code, fallback),
        _with_request_id(message or "the upstream reported an error mid-stream", request_id),
        code=detail_code or error_type,
    )


def _refusal(details: Any) -> UpstreamError:
    """stop_reason "refusal" with no text at all: the provider's safety policy declined."""
    category = explanation = None
    if isinstance(details, dict):
        category = details.get("category") if isinstance(details.get("category"), str) else None
        explanation = details.get("explanation") if isinstance(details.get("explanation"), str) else None
    what = "the model refused to answer (stop_reason 'refusal'" + (f", category '{category}'" if category else "")
    return UpstreamError(
        ErrorKind.BLOCKED, excerpt(what + ")" + (f": {explanation}" if explanation else "")), code="refusal"
    )


# --- answers --------------------------------------------------------------------------------


def _finish_reason(reason: str) -> str:
    return _STOP_REASONS.get(reason, reason.lower())


def _input_tokens(usage: Mapping[str, Any]) -> int | None:
    """All input tokens: the docs define the total as input + cache creation + cache read."""
    parts = [
        token_count(usage.get(name))
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    counted = [part for part in parts if part is not None]
    return sum(counted) if counted else None


class MessageStreamParser:
    """Incremental parser of a streamed Message: bytes in, events out."""

    __slots__ = ("_sse", "_done", "_text_seen", "_finished", "_input", "_output")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._done = False
        self._text_seen = False
        self._finished = False
        self._input: int | None = None
        self._output: int | None = None

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
        self._done = True
        out: list[Event] = self._usage()
        out.append(StreamFailure(incomplete()))
        return out

    def _usage(self) -> list[Event]:
        if self._input is None and self._output is None:
            return []
        return [Usage(self._input, self._output)]

    def _take_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        total_input = _input_tokens(usage)
        if total_input is not None:
            self._input = total_input
        output = token_count(usage.get("output_tokens"))
        if output is not None:
            self._output = output

    def _fail(self, out: list[Event], error: UpstreamError) -> None:
        self._done = True
        out.append(StreamFailure(error))

    def _text(self, out: list[Event], text: Any) -> None:
        if isinstance(text, str) and text:
            self._text_seen = True
            out.append(TextDelta(text))

    def _on_event(self, event: SSEEvent, out: list[Event]) -> None:
        try:
            doc = json.loads(event.data)
        except ValueError:
            if event.event == "error":
                self._fail(out, UpstreamError(ErrorKind.SERVER, excerpt(event.data)))
            else:
                self._fail(out, malformed("the upstream sent an event that is not JSON"))
            return
        if not isinstance(doc, dict):
            self._fail(out, malformed("the upstream sent an event that is not a JSON object"))
            return
        kind = doc.get("type") if isinstance(doc.get("type"), str) else event.event
        if event.event == "error" or kind == "error":
            self._fail(out, _in_band_error(doc))
        elif kind == "content_block_delta":
            delta = doc.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                self._text(out, delta.get("text"))
        elif kind == "content_block_start":
            block = doc.get("content_block")
            if isinstance(block, dict) and block.get("type") == "text":
                self._text(out, block.get("text"))
        elif kind == "message_start":
            message = doc.get("message")
            if isinstance(message, dict):
                self._take_usage(message.get("usage"))
        elif kind == "message_delta":
            self._on_message_delta(doc, out)
        elif kind == "message_stop":
            self._done = True
            out.extend(self._usage())
        # ping, content_block_stop and event types added later carry nothing for us.

    def _on_message_delta(self, doc: dict[str, Any], out: list[Event]) -> None:
        self._take_usage(doc.get("usage"))
        delta = doc.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if not isinstance(reason, str) or not reason or self._finished:
            return
        self._finished = True
        if reason == "refusal" and not self._text_seen:
            self._fail(out, _refusal(delta.get("stop_details") if isinstance(delta, dict) else None))
            return
        out.append(Finish(_finish_reason(reason)))


def parse_completion(body: bytes) -> list[Event]:
    """A whole Message object: the answer to `"stream": false`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [StreamFailure(malformed("the upstream answer is not JSON"))]
    if not isinstance(doc, dict):
        return [StreamFailure(malformed("the upstream answer is not a JSON object"))]
    if doc.get("type") == "error" or "error" in doc:
        return [StreamFailure(_in_band_error(doc))]
    content = doc.get("content")
    if not isinstance(content, list):
        return [StreamFailure(malformed("the upstream answer has no 'content' array"))]
    text = "".join(
        block["text"]
        for block in content
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )
    reason = doc.get("stop_reason")
    if reason == "refusal" and not text:
        return [StreamFailure(_refusal(doc.get("stop_details")))]
    events: list[Event] = [TextDelta(text)] if text else []
    events.append(Finish(_finish_reason(reason) if isinstance(reason, str) and reason else None))
    usage = doc.get("usage")
    if isinstance(usage, dict):
        events.append(Usage(_input_tokens(usage), token_count(usage.get("output_tokens"))))
    return events


PROTOCOL = WireProtocol(
    build_chat=build_chat,
    new_parser=MessageStreamParser,
    parse_error=parse_error,
    build_models=build_models,
    parse_models=parse_models,
    parse_completion=parse_completion,
)
