"""CORS for browser apps on other origins (CORS_ORIGINS), with flask-cors.

Off unless CORS_ORIGINS is set: then no response carries a CORS header. `*` allows every
origin (answered `Access-Control-Allow-Origin: *`, never with credentials); a list allows
exactly those origins (the request's origin is echoed, with `Vary: Origin`).

Only the API is shared: /api/* (not /api/admin, which no browser on another origin should
drive) and /v1/*. A preflight (OPTIONS) is answered by Flask's automatic OPTIONS response
before any view runs; client auth and rate limits skip it (app/auth.py, app/limiting.py).
Error responses (401, 429, ...) carry the headers too, or a browser could not read them, and
the headers a client needs are exposed: the rate-limit ones and ours.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from app.edge_settings import Edges

#: /api/ and everything under it except /api/admin; /v1 and everything under it.
RESOURCES = (r"^/api/(?!admin(?:/|$))", r"^/v1(?:/|$)")
#: Ours, and what the official OpenAI SDKs send from a browser (`dangerouslyAllowBrowser`):
#: their `x-stainless-*` telemetry headers and the organisation/project ones.
ALLOW_HEADERS = (
    "Authorization", "Content-Type", "X-Request-ID", r"X-Stainless-[A-Za-z0-9-]+", "OpenAI-Organization", "OpenAI-Project",
)  # fmt: skip
EXPOSE_HEADERS = (
    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
    "X-Request-ID", "X-Cortex-Worker", "X-Cortex-Model", "X-Cortex-Attempts",
)  # fmt: skip
#: How long a browser may reuse a preflight's answer (seconds).
MAX_AGE = 600


def install_cors(app: Flask, edges: Edges) -> None:
    if not edges.cors_origins:
        return
    any_origin = edges.cors_origins == ("*",)
    CORS(
        app,
        resources={pattern: {} for pattern in RESOURCES},
        origins="*" if any_origin else list(edges.cors_origins),
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=list(ALLOW_HEADERS),
        expose_headers=list(EXPOSE_HEADERS),
        max_age=MAX_AGE,
        supports_credentials=False,
        send_wildcard=any_origin,
        # Only answer a request that names its origin (a browser's); by default flask-cors
        # sends the configured origins to every client.
        always_send=False,
    )
