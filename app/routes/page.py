"""The chat page at /: a playground for trying the gateway in a browser."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("page", __name__)


@bp.get("/")
def index() -> str:
    return render_template("index.html")
