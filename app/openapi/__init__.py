"""The OpenAPI 3.1 document of Cortex, kept as Python data beside the code it describes, and
served as is at GET /openapi.json (app/routes/docs.py).

`document()` builds it from the pieces in schemas.py (components) and paths.py; the tests in
tests/api/test_openapi.py hold it true: every route of the app is in it and every path in
it is a route, it is valid OpenAPI 3.1, and real answers match their documented schemas.
"""

from __future__ import annotations

import json
from typing import Any

from app.openapi.paths import PATHS
from app.openapi.schemas import HEADERS, SCHEMAS, SECURITY_SCHEMES
from app.validation import MAX_JSON_DEPTH, MAX_MESSAGES

VERSION = "1.0.0"

DESCRIPTION = f"""An LLM gateway: one endpoint in front of many providers, with failover, key rotation
and streaming. The native API is under /api; /v1 speaks OpenAI's chat-completions protocol.

Request bodies are JSON (`Content-Type: application/json`, else 415), at most MAX_BODY_BYTES
(413), UTF-8, without NaN or Infinity, nested at most {MAX_JSON_DEPTH} levels deep, with at most
{MAX_MESSAGES} messages (400). Any URL answers 405 (with `Allow`) to a method it does not
serve, in its family's error shape. Every answer carries `X-Request-ID`.

When client keys are configured (CORTEX_API_KEYS), /api/chat* and /v1/* need one as
`Authorization: Bearer`; the admin API exists only when CORTEX_ADMIN_TOKEN is set."""


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cortex", "version": VERSION, "description": DESCRIPTION},
        "tags": [
            {"name": "chat", "description": "The native chat API"},
            {"name": "openai", "description": "OpenAI-compatible API"},
            {"name": "status", "description": "Health, providers, metrics and this document"},
            {"name": "page", "description": "The chat page"},
            {"name": "admin", "description": "Runtime administration (only with CORTEX_ADMIN_TOKEN)"},
        ],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "headers": HEADERS, "securitySchemes": SECURITY_SCHEMES},
    }


def document_bytes() -> bytes:
    """The document serialised once per app (app/routes/docs.py keeps it)."""
    return json.dumps(document(), separators=(",", ":")).encode()
