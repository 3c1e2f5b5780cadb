"""Google's Gemini API (Generative Language API, v1beta), spoken natively.

Follows the API reference at ai.google.dev/api/generate-content ("models.generateContent",
"models.streamGenerateContent", "GenerateContentResponse"), ai.google.dev/api/models
("models.list"), the error table at ai.google.dev/gemini-api/docs/generate-content/api-errors,
and the official SDK's reader, github.com/googleapis/python-genai `google/genai/_api_client.py`
(`_iter_response_stream`, `request_streamed`) and `google/genai/types.py` (FinishReason,
BlockedReason, UsageMetadata).

Request: `POST {base}/models/{model}:streamGenerateContent?alt=sse` (or `:generateContent`),
the key in the `x-goog-api-key` header only::

    {"contents":[{"role":"user","parts":[{"text":"Hi"}]},{"role":"model","parts":[{"text":"Hello"}]}],
     "systemInstruction":{"parts":[{"text":"Be brief."}]},
     "generationConfig":{"temperature":0.5,"maxOutputTokens":64,"topP":0.9,"stopSequences":["END"]}}

A stream is SSE with CRLF line ends and no `[DONE]`; every event is a whole
GenerateContentResponse. Parts marked `"thought": true` are the model's reasoning, not its
answer. The stream is complete once a candidate carries `finishReason`; `usageMetadata` is
repeated and refined on every event, so the last one counts::

    data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash","responseId": "q0Zf"}\r\n\r\n
    data: {"candidates": [{"content": {"parts": [{"text": "lo"}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 2,"totalTokenCount": 11,"thoughtsTokenCount": 0},...}\r\n\r\n

A prompt refused by the safety filter is one event with `promptFeedback.blockReason` and no
candidates. Errors are `{"error": {"code": 429, "message", "status": "RESOURCE_EXHAUSTED",
"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}, ...]}}`,
as the HTTP body or, once a stream has started, written into it as bare pretty-printed JSON
lines outside SSE framing (the SDK buffers such lines until the braces balance; vercel/ai#5217
shows one), so stray lines are collected and read as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
    type="gemini",
    capabilities=("chat", "streaming", "usage", "models"),
    description="Google Gemini API (generateContent)",
)

#: Finish reasons that mean a filter stopped the answer (types.FinishReason in the SDK).
_FILTER_REASONS = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
     "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}
)  # fmt: skip
#: ErrorInfo reasons that condemn the key (or its project), whatever the HTTP status says:
#: an invalid key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
_KEY_REASONS = frozenset({"SERVICE_DISABLED", "CONSUMER_SUSPENDED", "ACCESS_TOKEN_TYPE_UNSUPPORTED"})
#: google.rpc canonical codes, refined beyond what the HTTP status alone says.
_STATUS_KINDS = {
    "UNAUTHENTICATED": ErrorKind.AUTH,
    "PERMISSION_DENIED": ErrorKind.AUTH,
    # "Gemini API free tier is not available in your country. Please enable billing": the
    # key cannot serve from here until its owner acts, which is what AUTH means to the
    # dispatcher (disable this key, try the next); the client's request was fine.
    "FAILED_PRECONDITION": ErrorKind.AUTH,
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMITED,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "INVALID_ARGUMENT": ErrorKind.BAD_REQUEST,
    "INTERNAL": ErrorKind.SERVER,
    "UNAVAILABLE": ErrorKind.SERVER,
    "DEADLINE_EXCEEDED": ErrorKind.SERVER,
}
_TYPE_PREFIX = "type.googleapis.com/google.rpc."
#: A stray (non-SSE) error object larger than this is not an error object.
_STRAY_LIMIT = 64 * 1024
_SSE_FIELDS = frozenset({"data", "event", "id", "retry"})


def _headers(endpoint: Endpoint, key: str | None, accept: str) -> dict[str, str]:
    headers = dict(endpoint.extra_headers)
    if key:
        headers["x-goog-api-key"] = key
    headers["Accept"] = accept
    return headers


def _model_path(model: str) -> str:
    """`gemini-2.5-flash` and `models/gemini-2.5-flash` name the same resource; tuned models
    live under `tunedModels/`. Quoted so that a model id can never add a path or a query."""
    name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    return quote(name, safe="/-._~")


def _contents(params: ChatParams) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(contents, system parts): roles become user/model, and consecutive turns of one role
    are merged into one Content (older models refuse two user turns in a row)."""
    contents: list[dict[str, Any]] = []
    system: list[dict[str, str]] = []
    for message in params.messages:
        if message.role == "system":
            system.append({"text": message.content})
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append({"text": message.content})
        else:
            contents.append({"role": role, "parts": [{"text": message.content}]})
    return contents, system


def build_chat(endpoint: Endpoint, params: ChatParams, key: str | None) -> PreparedCall:
    contents, system = _contents(params)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = sampling_fields(params, max_tokens="maxOutputTokens", top_p="topP", stop="stopSequences")
    if config:
        body["generationConfig"] = config
    url = f"{endpoint.base_url.rstrip('/')}/{_model_path(params.model)}"
    if endpoint.stream:
        url += ":streamGenerateContent?alt=sse"
        headers = _headers(endpoint, key, "text/event-stream")
        headers["Accept-Encoding"] = "identity"
    else:
        url += ":generateContent"
        headers = _headers(endpoint, key, "application/json")
    headers["Content-Type"] = "application/json"
    return PreparedCall("POST", url, headers, json_body(body))


def build_models(endpoint: Endpoint, key: str | None) -> PreparedCall:
    """models.list: free, and one page of 1000 (the maximum) holds every Gemini model."""
    url = endpoint.base_url.rstrip("/") + "/models?pageSize=1000"
    return PreparedCall("GET", url, _headers(endpoint, key, "application/json"))


def parse_models(body: bytes) -> tuple[str, ...]:
    """Chat-capable model ids as a request names them: `models/gemini-2.5-flash` becomes
    `gemini-2.5-flash`; embedding and other models without generateContent are left out."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise malformed("the model list is not JSON") from None
    models = doc.get("models", []) if isinstance(doc, dict) else None  # an empty list is omitted: {}
    if not isinstance(models, list):
        raise malformed("the model list has no 'models' array")
    ids = []
    for model in models:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            continue
        methods = model.get("supportedGenerationMethods")
        if isinstance(methods, list) and "generateContent" in methods:
            ids.append(model["name"].removeprefix("models/"))
    return tuple(ids)


# --- errors -------------------------------------------------------------------------------


def _details(error: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and d.get("@type") == _TYPE_PREFIX + kind]


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """google.rpc.RetryInfo.retryDelay is a JSON Duration: "37s", "0.5s", "12.123456789s"."""
    for info in _details(error, "RetryInfo"):
        delay = info.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                continue
            if 0 <= seconds < float("inf"):
                return seconds
    return None


def _quota_exhausted(error: Mapping[str, Any]) -> bool:
    """A 429 is a quota, not a rate limit, when a QuotaFailure names a per-day bucket
    (GenerateRequestsPerDayPerProjectPerModel-FreeTier: it refills at midnight Pacific, not
    in the 37 s RetryInfo suggests) or a limit of 0 (no free tier for this model). The
    message is no help: it says "You exceeded your current quota" for per-minute limits too."""
    for failure in _details(error, "QuotaFailure"):
        violations = failure.get("violations")
        for violation in violations if isinstance(violations, list) else []:
            if not isinstance(violation, dict):
                continue
            if "perday" in str(violation.get("quotaId", "")).lower() or str(violation.get("quotaValue")) == "0":
                return True
    return False


def _classify(kind: ErrorKind, error: Mapping[str, Any]) -> tuple[ErrorKind, str | None, float | None]:
    """(kind, code, retry delay) from an `error` object, refining the kind the HTTP status gave."""
    status = error.get("status") if isinstance(error.get("status"), str) else None
    reasons = [r for d in _details(error, "ErrorInfo") if isinstance(r := d.get("reason"), str)]
    refined = _STATUS_KINDS.get(status or "", kind)
    if not (kind is ErrorKind.QUOTA and refined is ErrorKind.RATE_LIMITED):  # 402: prepaid credits gone
        kind = refined
    if any(r.startswith("API_KEY_") or r in _KEY_REASONS for r in reasons):
        kind = ErrorKind.AUTH
    delay = _retry_delay(error)
    if kind in (ErrorKind.RATE_LIMITED, ErrorKind.QUOTA) and _quota_exhausted(error):
        kind, delay = ErrorKind.QUOTA, None
    return kind, (reasons[0] if reasons else status), delay


def _error_object(doc: object) -> Mapping[str, Any] | None:
    if isinstance(doc, list) and len(doc) == 1:  # alt=json streams wrap it in an array
        doc = doc[0]
    error = doc.get("error") if isinstance(doc, dict) else None
    return error if isinstance(error, dict) else None


def parse_error(status: int, headers: Mapping[str, str], body: bytes, now: float) -> UpstreamError:
    try:
        error = _error_object(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        error = None
    kind, code, delay = _classify(kind_for_status(status), error or {})
    message = error.get("message") if error else None
    if not isinstance(message, str) or not message:
        text = body.decode("utf-8", "replace").strip()
        # Plain-text bodies are passed on; Google's HTML 404 pages and bare JSON are not.
        message = text if text and text[0] not in "<{[" else f"HTTP {status}"
    retry_after = parse_retry_after(header(headers, "retry-after"), now)
    if retry_after is None:
        retry_after = delay
    return UpstreamError(kind, excerpt(message), status=status, retry_after=retry_after, code=code)


def _in_band_error(error: Mapping[str, Any]) -> UpstreamError:
    """An error written into a started stream: its `code` is the HTTP status it would have had."""
    code = error.get("code")
    kind, reason, delay = _classify(kind_for_status(code) if isinstance(code, int) else ErrorKind.SERVER, error)
    message = error.get("message")
    text = message if isinstance(message, str) and message else "Gemini reported an error mid-stream"
    return UpstreamError(kind, excerpt(text), retry_after=delay, code=reason)


# --- answers ------------------------------------------------------------------------------


def _finish_reason(reason: str) -> str:
    if reason == "STOP":
        return "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTER_REASONS:
        return "content_filter"
    return reason.lower()


def _blocked_categories(ratings: object) -> str:
    if not isinstance(ratings, list):
        return ""
    names = [r["category"] for r in ratings if isinstance(r, dict) and r.get("blocked") and "category" in r]
    return "".join(f", {name}" for name in names)


def _usage(doc: Mapping[str, Any]) -> Usage | None:
    meta = doc.get("usageMetadata")
    if not isinstance(meta, dict):
        return None
    prompt, answer, thoughts = (meta.get(k) for k in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount"))
    counts = [n for n in (token_count(answer), token_count(thoughts)) if n is not None]
    return Usage(
        input_tokens=token_count(prompt),
        output_tokens=sum(counts) if counts else None,  # thinking is billed as output
    )


class _Reader:
    """The protocol's state over whole GenerateContentResponse objects, shared by the stream
    parser and `parse_completion`."""

    __slots__ = ("failed", "finished", "usage", "text_seen")

    def __init__(self) -> None:
        self.failed = False
        self.finished = False
        self.usage: Usage | None = None
        self.text_seen = False

    def fail(self, out: list[Event], error: UpstreamError) -> None:
        self.failed = True
        out.append(StreamFailure(error))

    def read(self, data: str, out: list[Event]) -> None:
        """One JSON document (an SSE event's data, or a stray error object)."""
        if self.failed:
            return
        try:
            doc = json.loads(data)
        except ValueError:
            if not self.finished:
                self.fail(out, malformed("the upstream sent an event that is not JSON"))
            return
        if not isinstance(doc, dict):
            if not self.finished:
                self.fail(out, malformed("the upstream sent an event that is not a JSON object"))
            return
        if self.finished:  # complete: later events may only refine the usage
            self.usage = _usage(doc) or self.usage
            return
        self.response(doc, out)

    def response(self, doc: Mapping[str, Any], out: list[Event]) -> None:
        error = _error_object(doc)
        if error is not None:
            self.fail(out, _in_band_error(error))
            return
        self.usage = _usage(doc) or self.usage
        feedback = doc.get("promptFeedback")
        feedback = feedback if isinstance(feedback, dict) else {}
        block = feedback.get("blockReason")
        if isinstance(block, str) and block:
            detail = f"{block}{_blocked_categories(feedback.get('safetyRatings'))}"
            self.fail(out, UpstreamError(ErrorKind.BLOCKED, f"Gemini blocked the prompt ({detail})"))
            return
        candidates = doc.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            return
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and part.get("thought") is not True:
                text = part.get("text")
                if isinstance(text, str) and text:
                    self.text_seen = True
                    out.append(TextDelta(text))
        reason = candidate.get("finishReason")
        if not isinstance(reason, str) or not reason or reason == "FINISH_REASON_UNSPECIFIED":
            return
        normalised = _finish_reason(reason)
        if normalised == "content_filter" and not self.text_seen:
            detail = f"{reason}{_blocked_categories(candidate.get('safetyRatings'))}"
            self.fail(out, UpstreamError(ErrorKind.BLOCKED, f"Gemini's filter blocked the answer ({detail})"))
            return
        self.finished = True
        out.append(Finish(normalised))


class _GeminiSSEDecoder(SSEDecoder):
    """The shared SSE decoder, also keeping the lines it would ignore (neither a field nor a
    comment): that is how an error written into a started stream arrives. `log` holds the
    events and those stray lines in stream order."""

    __slots__ = ("log",)

    def __init__(self) -> None:
        super().__init__()
        self.log: list[SSEEvent | str] = []

    def _dispatch(self) -> SSEEvent | None:
        event = super()._dispatch()
        if event is not None:
            self.log.append(event)
        return event

    def _line(self, line: str) -> None:
        if _is_stray(line):
            self.log.append(line)
        else:
            super()._line(line)

    def finish(self) -> list[SSEEvent]:
        # An error object need not end with a newline: its last line is the unterminated tail.
        if _is_stray(self._buffer):
            self.log.append(self._buffer)
            self._buffer = ""
        return super().finish()


def _is_stray(line: str) -> bool:
    return bool(line) and line[0] != ":" and line.partition(":")[0] not in _SSE_FIELDS


class StreamParser:
    """Incremental parser of `streamGenerateContent?alt=sse`: bytes in, events out."""

    __slots__ = ("_sse", "_reader", "_stray", "_stray_chars", "_closed")

    def __init__(self) -> None:
        self._sse = _GeminiSSEDecoder()
        self._reader = _Reader()
        self._stray: list[str] = []
        self._stray_chars = 0
        self._closed = False

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if not self._closed and not self._reader.failed:
            self._sse.feed(chunk)
            self._drain(out)
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        if self._closed or self._reader.failed:
            return out
        self._closed = True
        self._sse.finish()
        self._drain(out)
        self._flush_stray(out)
        if self._reader.failed:
            return out
        if self._reader.usage is not None:
            out.append(self._reader.usage)
        if not self._reader.finished:
            out.append(StreamFailure(incomplete()))
        return out

    def _drain(self, out: list[Event]) -> None:
        log, self._sse.log = self._sse.log, []
        for item in log:
            if self._reader.failed:
                return
            if isinstance(item, SSEEvent):
                self._flush_stray(out)  # an event ends whatever came outside the framing before it
                if not self._reader.failed:
                    self._reader.read(item.data, out)
                continue
            if self._reader.finished:
                continue  # complete: nothing outside the framing matters any more
            self._stray.append(item)
            self._stray_chars += len(item)
            if self._stray_chars > _STRAY_LIMIT:
                self._reader.fail(out, malformed("the upstream sent data outside SSE framing"))
            elif item.rstrip().endswith("}"):
                self._flush_stray(out, complete_only=True)

    def _flush_stray(self, out: list[Event], *, complete_only: bool = False) -> None:
        """Read the lines outside SSE framing as one JSON object (an error, usually)."""
        if not self._stray or self._reader.failed:
            return
        text = "\n".join(self._stray)
        try:
            json.loads(text)
        except ValueError:
            if complete_only:
                return  # not yet: the object goes on
            if not self._reader.finished:
                self._reader.fail(out, malformed("the upstream sent data outside SSE framing"))
        else:
            self._reader.read(text, out)
        self._stray.clear()
        self._stray_chars = 0


def parse_completion(body: bytes) -> list[Event]:
    """A whole answer: generateContent's GenerateContentResponse, or a JSON array of them
    (what streamGenerateContent sends without alt=sse)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return [StreamFailure(malformed("the upstream answer is not JSON"))]
    docs = doc if isinstance(doc, list) else [doc]
    reader = _Reader()
    events: list[Event] = []
    for item in docs:
        if not isinstance(item, dict):
            return [StreamFailure(malformed("the upstream answer is not a JSON object"))]
        if reader.finished:  # complete: later objects may only refine the usage
            reader.usage = _usage(item) or reader.usage
            continue
        reader.response(item, events)
        if reader.failed:
            return [events[-1]]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reason = next((e.reason for e in events if isinstance(e, Finish)), None)
    result: list[Event] = [TextDelta(text)] if text else []
    result.append(Finish(reason))
    if reader.usage is not None:
        result.append(reader.usage)
    return result


PROTOCOL = WireProtocol(
    build_chat=build_chat,
    new_parser=StreamParser,
    parse_error=parse_error,
    build_models=build_models,
    parse_models=parse_models,
    parse_completion=parse_completion,
)
