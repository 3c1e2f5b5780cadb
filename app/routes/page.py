"""The chat page at /: a playground for trying the gateway in a browser.

The page is one template and its static files (templates/index.html, app/static/): no build
step, nothing fetched from elsewhere. The Content-Security-Policy below makes that a rule the
browser enforces: scripts, styles and requests may only come from this gateway.
"""

from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template

bp = Blueprint("page", __name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/")
def index() -> Response:
    response = make_response(render_template("index.html"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
