"""Client authentication: which configured client (if any) sent a request, and refusing the
protected routes to everyone else when CORTEX_API_KEYS (or [[clients]]) is set.

Identification and enforcement are two steps on purpose. `identify` runs first and only
names the client; the rate limiter runs next and buckets an unidentified request by IP;
`enforce` runs last. So a flood of wrong keys is rate limited like any anonymous traffic,
instead of being answered 401 as fast as it arrives.

Keys are compared as SHA-256 digests with `hmac.compare_digest` against every configured
client, without stopping at a match: neither the length of a guess nor which client it
resembles changes the time it takes.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, g, request

from app.edge_settings import ClientSpec, Edges
from app.errors import Unauthorized

#: The routes that need a client key when auth is on; health, metrics, providers, the page
#: and its static files stay open (and /api/admin has its own token).
PROTECTED_PREFIXES = ("/api/chat", "/v1/")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ClientAuth:
    def __init__(self, clients: tuple[ClientSpec, ...]) -> None:
        self._clients = [(_digest(c.key), c) for c in clients]

    @property
    def enabled(self) -> bool:
        return bool(self._clients)

    def identify(self, token: str | None) -> ClientSpec | None:
        if token is None or not self._clients:
            return None
        presented = _digest(token)
        found = None
        for digest, client in self._clients:
            if hmac.compare_digest(digest, presented) and found is None:
                found = client
        return found


def is_protected(path: str) -> bool:
    return path == "/v1" or path.startswith(PROTECTED_PREFIXES)


def current_client() -> ClientSpec | None:
    """The client `identify_client` recognised for this request (None: anonymous)."""
    return g.get("cortex_client")


def install_identification(app: Flask, edges: Edges) -> None:
    """Name the client of every request (g.cortex_client); rejects nothing."""
    auth = ClientAuth(edges.clients)

    @app.before_request
    def identify_client() -> None:
        g.cortex_client = auth.identify(bearer_token(request.headers.get("Authorization")))


def install_enforcement(app: Flask, edges: Edges) -> None:
    """Refuse protected routes without a valid client key (a no-op when auth is off).
    Registered after the rate limiter, see the module docstring."""
    if not edges.auth_required:
        return

    @app.before_request
    def require_client() -> None:
        if request.method == "OPTIONS" or not is_protected(request.path) or current_client() is not None:
            return
        if request.headers.get("Authorization") is None:
            raise Unauthorized("this gateway requires an API key: send Authorization: Bearer <key>")
        raise Unauthorized("the API key is not valid for this gateway")
