"""GET /openapi.json: the OpenAPI 3.1 document of this gateway (app/openapi/)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from app.openapi import document_bytes

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi() -> Response:
    body = current_app.extensions.get("cortex_openapi")
    if body is None:  # built once per app, then served as is
        body = current_app.extensions["cortex_openapi"] = document_bytes()
    return Response(body, content_type="application/json")
