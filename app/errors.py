"""API errors: what a client is told, with which status. One handler for the whole tree.

    ApiError (500 internal_error)
    ├── BadRequest (400 bad_request)
    │   ├── ValidationError       a field of the request is wrong (names the field)
    │   ├── InvalidJSON           the body is not JSON
    │   └── UpstreamRejected      an upstream refused the client's own input
    ├── Unauthorized (401)
    ├── NotFound (404)            unknown route or provider
    │   └── ModelNotFound         no worker serves the model
    ├── MethodNotAllowed (405)
    ├── Conflict (409)            the admin API: a worker of that name exists
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── InvalidConfig (422)       the admin API: a worker or configuration file is invalid
    ├── RateLimited (429)         carries retry_after: every upstream is rate limiting
    │   └── ClientRateLimited     this client exceeded its RATE_LIMIT
    └── ServiceUnavailable (503)  carries retry_after
        └── NoWorkersAvailable

The native shape is `{"error", "details", "timestamp"}` (plus optional fields such as
`field` or `attempts`); under /v1 it is OpenAI's `{"error": {"message", "type", "param",
"code"}}`, so the SDKs raise their matching exception classes. Never a traceback, never a key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.formats.openai_chat import error_body

log = logging.getLogger("cortex.errors")


class ApiError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(
        self, details: str = "", *, retry_after: float | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(details or self.title)
        self.details = details
        self.retry_after = retry_after
        self.extra = dict(extra or {})


class BadRequest(ApiError):
    status, code, title = 400, "bad_request", "Bad request"


class ValidationError(BadRequest):
    code, title = "invalid_request", "Invalid request"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", extra={"field": field})
        self.field = field
        self.reason = reason


class InvalidJSON(BadRequest):
    code, title = "invalid_json", "Body is not valid JSON"


class UpstreamRejected(BadRequest):
    code, title = "upstream_rejected_request", "The provider rejected the request"


class Unauthorized(ApiError):
    status, code, title = 401, "invalid_api_key", "Unauthorized"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class ModelNotFound(NotFound):
    code, title = "model_not_found", "Model not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InvalidConfig(ApiError):
    status, code, title = 422, "invalid_config", "Invalid configuration"


class RateLimited(ApiError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ClientRateLimited(RateLimited):
    code, title = "rate_limit_exceeded", "Rate limit exceeded"


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class NoWorkersAvailable(ServiceUnavailable):
    code, title = "no_workers_available", "No workers available"


_HTTP_EXCEPTIONS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
}


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_native(error: ApiError) -> Response:
    body: dict[str, Any] = {"error": error.title, "details": error.details or error.title, "timestamp": timestamp()}
    body.update(error.extra)
    return _finish(jsonify(body), error)


def render_openai(error: ApiError) -> Response:
    param = (
        error.field if isinstance(error, ValidationError) else ("model" if isinstance(error, ModelNotFound) else None)
    )
    return _finish(jsonify(error_body(error.details or error.title, error.status, error.code, param)), error)


def _finish(response: Response, error: ApiError) -> Response:
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cortex"'
    return response


def render(error: ApiError) -> Response:
    """OpenAI's shape under /v1 (including its unknown routes), ours elsewhere."""
    g.cortex_error = error  # the request log's outcome (app/request_log.py)
    path = request.path
    return render_openai(error) if path == "/v1" or path.startswith("/v1/") else render_native(error)


def from_http_exception(exc: HTTPException) -> ApiError:
    cls = _HTTP_EXCEPTIONS.get(exc.code or 500, ApiError)
    details = exc.description or ""
    if cls is NotFound:
        details = "no such endpoint"
    elif cls is MethodNotAllowed:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        details = f"allowed methods: {allowed}" if allowed else "method not allowed here"
    elif cls is PayloadTooLarge:
        details = "the request body exceeds the configured limit (MAX_BODY_BYTES)"
    error = cls(details)
    if cls is ApiError:
        error.status = exc.code or 500
    return error


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return render(error)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = render(from_http_exception(exc))
        if exc.code == 405:
            response.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or [])
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("unhandled %s in a request", type(exc).__name__, exc_info=exc)
        return render(ApiError("an unexpected error occurred; it has been logged"))
