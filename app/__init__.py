"""Cortex: an LLM gateway. `create_app` reads like the table of contents of the application."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("cortex")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application. Opens no socket and starts no greenlet (rule 1): call
    `app.extensions["cortex"].start()` to begin health checks."""
    # Imported here, not at module level: gunicorn's master imports app.settings to validate
    # configuration, and must not import requests (and so ssl) before gevent patches workers.
    from flask import Flask

    from app.auth import install_enforcement, install_identification
    from app.errors import register_error_handlers
    from app.gateway import Gateway
    from app.routes import api, docs, page, v1
    from app.settings import load_from_environment

    settings = settings if settings is not None else load_from_environment()
    _configure_logging(settings.log_level)

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder="static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["cortex"] = Gateway(settings)

    # The edges, in the order their before_request hooks must run: name the client, count the
    # request against its limit (anonymous ones by IP), then refuse it if a key is required.
    install_identification(app, settings.edges)
    install_enforcement(app, settings.edges)

    app.register_blueprint(api.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(docs.bp)
    register_error_handlers(app)
    return app
