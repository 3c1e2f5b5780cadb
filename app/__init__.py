"""Cortex: an LLM gateway. `create_app` reads like the table of contents of the application."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application. Opens no socket and starts no greenlet (rule 1): call
    `app.extensions["cortex"].start()` to begin health checks."""
    # Imported here, not at module level: gunicorn's master imports app.settings to validate
    # configuration, and must not import requests (and so ssl) before gevent patches workers.
    from flask import Flask

    from app.auth import install_enforcement, install_identification
    from app.cors import install_cors
    from app.errors import register_error_handlers
    from app.gateway import Gateway
    from app.limiting import install_proxy_fix, install_rate_limits
    from app.metrics import create_metrics, install_exporter
    from app.request_log import RequestLog, configure_logging, install_request_log
    from app.routes import admin, api, docs, page, v1
    from app.settings import load_from_environment

    settings = settings if settings is not None else load_from_environment()
    configure_logging(settings.log_level, settings.edges.log_format)

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder="static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    gateway = app.extensions["cortex"] = Gateway(settings)
    metrics = app.extensions["cortex_metrics"] = create_metrics(gateway)

    # The first before_request hook: the request's id and its log line, so that even a
    # request refused by a later hook (401, 429) has both.
    install_request_log(app, RequestLog(gateway, metrics, log_content=settings.edges.log_content))

    # Admin changes made through another worker process apply here before this request is
    # handled (one os.stat when there are none; app/admin_bus.py).
    app.before_request(gateway.admin.sync)

    # The edges, in the order their before_request hooks must run: name the client, count the
    # request against its limit (anonymous ones by IP), then refuse it if a key is required.
    install_proxy_fix(app, settings.edges.trusted_proxies)
    install_identification(app, settings.edges)
    install_rate_limits(app, settings.edges)
    install_enforcement(app, settings.edges)
    install_cors(app, settings.edges)

    app.register_blueprint(api.bp)
    app.register_blueprint(v1.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(admin.bp)
    install_exporter(app, metrics, gateway)
    register_error_handlers(app)
    return app
