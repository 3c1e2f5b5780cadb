"""Client rate limits (RATE_LIMIT, a client's own `rate_limit`), with flask-limiter.

Who is counted: a request with a valid client key as `client:<name>`, every other one
(anonymous, or a wrong key) as `ip:<address>`. The address is the TCP peer's unless
TRUSTED_PROXIES says how many proxies in front of Cortex append to X-Forwarded-For
(werkzeug's ProxyFix): by default the header is ignored, so nobody escapes a limit by
writing it.

What is counted: the chat routes and /v1/models, all of them against one budget per client
(a client's 60/minute is 60 requests, whichever of these routes they go to). Everything else
(health, metrics, providers, the page, admin) and every CORS preflight is exempt: the routes
limited are a list, so a new route is unlimited until it is added here.

Strategy: fixed window. One counter per client and window, one atomic increment per request
(Redis INCR, one SQLite UPSERT), and the window starts at the client's first request. Its
known flaw, up to twice the limit across a window boundary, is the price of being exact and
cheap across processes; a moving window would store one entry per request.

A limited request is answered by the error tree (`ClientRateLimited`: 429, OpenAI's shape under
/v1, `Retry-After`); `X-RateLimit-Limit/Remaining/Reset` (Reset: Unix time, as flask-limiter
and GitHub write it) are on every response of a limited route, streams included, since a
streamed response's headers are final when the view returns it.

When the storage fails (Redis down), each process falls back to counting in memory and
probes the storage again with a growing interval; requests are never refused because the
counters are unreachable.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from app import limit_storage
from app.auth import current_client
from app.edge_settings import Edges
from app.errors import ClientRateLimited, render

log = logging.getLogger("cortex.limits")

#: Endpoints that count against a client's limit.
LIMITED_ENDPOINTS = frozenset({"api.chat", "api.chat_complete", "v1.chat_completions", "v1.models"})
#: One budget for all of them (flask-limiter's scope), prefixed by `KEY_PREFIX` in the store.
SCOPE = "chat"
KEY_PREFIX = "cortex"


def install_proxy_fix(app: Flask, trusted_proxies: int) -> None:
    """Trust the last `trusted_proxies` X-Forwarded-For entries for `request.remote_addr`."""
    if trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies)  # type: ignore[method-assign]


def client_key() -> str:
    """The bucket of the current request: its client's name, else its address."""
    client = current_client()
    return f"client:{client.name}" if client is not None else f"ip:{request.remote_addr or 'unknown'}"


def exempt() -> bool:
    return request.method == "OPTIONS" or request.endpoint not in LIMITED_ENDPOINTS


def _quiet_breaches(record: logging.LogRecord) -> bool:
    """Drop flask-limiter's line per refused request (a flood of 429s must not become a flood
    of log lines, each with a client's address); the store's warnings pass."""
    return not (record.levelno <= logging.INFO and str(record.msg).startswith("ratelimit "))


def configured(edges: Edges) -> bool:
    return edges.rate_limit is not None or any(c.rate_limit for c in edges.clients)


def install_rate_limits(app: Flask, edges: Edges) -> Limiter | None:
    """Count requests with a before_request hook (so call it between identification and
    enforcement, see app/auth.py). Nothing when no limit is configured."""
    if not configured(edges):
        return None
    default = edges.rate_limit

    def limit_for_client() -> str:
        client = current_client()
        return (client.rate_limit if client is not None and client.rate_limit else default) or ""

    uri = limit_storage.storage_uri(edges)
    limiter = Limiter(
        client_key,
        application_limits=[ApplicationLimit(limit_for_client, scope=SCOPE)],
        storage_uri=uri,
        storage_options=limit_storage.storage_options(uri),  # type: ignore[arg-type]
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        headers_enabled=False,  # ours below: flask-limiter's would put Retry-After on every 200
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.logger = log  # its "storage unreachable" warnings, in our logs
    if _quiet_breaches not in log.filters:  # once per process, however many apps are built
        log.addFilter(_quiet_breaches)
    limiter.request_filter(exempt)
    limiter.init_app(app)
    log.info(
        "client rate limits: %s per client, counters in %s", default or "none by default", limit_storage.describe(uri)
    )

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded) -> Response:
        current = limiter.current_limit
        retry_after = None
        if current is not None:
            try:
                retry_after = max(1.0, current.window.reset_time - time.time())
            except Exception:  # noqa: BLE001 - the store failed between the hit and now
                retry_after = float(current.limit.get_expiry())
        limit = f" ({exc.limit.limit})" if exc.limit is not None else ""
        return render(ClientRateLimited(f"rate limit exceeded{limit}: slow down and retry after Retry-After seconds",
                                        retry_after=retry_after))  # fmt: skip

    @app.after_request
    def _headers(response: Response) -> Response:
        current = limiter.current_limit
        if current is None:
            return response
        try:
            reset, remaining = current.window
        except Exception:  # noqa: BLE001 - headers are a courtesy; never fail the response for them
            log.debug("rate-limit headers skipped: the store did not answer", exc_info=True)
            return response
        response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(reset))
        return response

    return limiter
