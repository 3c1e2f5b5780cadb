"""The admin API under /api/admin: workers, keys, reload, health checks at runtime.

It exists only when CORTEX_ADMIN_TOKEN is set (otherwise every URL here is a 404, as if it
did not exist) and takes that token as `Authorization: Bearer <token>`, compared in
constant time; client keys do not open it. Every change goes through the gateway's admin bus
(app/admin_bus.py), so it applies to every worker process; each answer carries the `pid` of
the process that gave it, after it applied the change itself. Keys are shown masked only.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Blueprint, Response, current_app, jsonify, request

from app.admin_bus import ADD, ENABLE_KEY, HEALTH_CHECK, RELOAD, REMOVE, AdminOp
from app.auth import bearer_token
from app.errors import NotFound, Unauthorized
from app.gateway import Gateway, PoolChange
from app.pool import Worker
from app.status import admin_worker, admin_workers_report, health_report
from app.validation import decode_json_body, read_body

bp = Blueprint("admin", __name__, url_prefix="/api/admin")

RELOAD_NOTE = (
    "Workers and dispatch settings were reloaded from CORTEX_CONFIG and the environment; workers added or "
    "removed at runtime were dropped. Listen address, rate limits, client keys, CORS, logging, UPSTREAM_POOL_SIZE "
    "and MAX_BODY_BYTES take effect on a restart: SIGHUP to the gunicorn master (kill -HUP <pid>) restarts "
    "its worker processes gracefully."
)


def gateway() -> Gateway:
    return current_app.extensions["cortex"]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@bp.before_request
def require_admin_token() -> None:
    expected = gateway().settings.edges.admin_token
    if expected is None:
        raise NotFound("no such endpoint")
    presented = bearer_token(request.headers.get("Authorization"))
    if not hmac.compare_digest(_digest(presented or ""), _digest(expected)) or presented is None:
        raise Unauthorized("the admin API needs Authorization: Bearer <CORTEX_ADMIN_TOKEN>")


def _answer(http_status: int = 200, **body: object) -> tuple[Response, int]:
    return jsonify({"pid": os.getpid(), **body}), http_status


def _worker(worker: object) -> dict[str, object]:
    assert isinstance(worker, Worker)
    gw = gateway()
    return admin_worker(worker, gw.health.snapshot, gw.clock())


@bp.get("/workers")
def list_workers() -> tuple[Response, int]:
    gw = gateway()
    return _answer(workers=admin_workers_report(gw.pool, gw.health.snapshot, gw.clock()))


@bp.post("/workers")
def add_worker() -> tuple[Response, int]:
    table = decode_json_body(read_body(request), request.content_type)
    return _answer(201, worker=_worker(gateway().admin.submit(AdminOp(ADD, worker=table))))


@bp.delete("/workers/<name>")
def remove_worker(name: str) -> tuple[Response, int]:
    gateway().admin.submit(AdminOp(REMOVE, name=name))
    return _answer(removed=name)


@bp.post("/workers/<name>/keys/<int:position>/enable")
def enable_key(name: str, position: int) -> tuple[Response, int]:
    return _answer(worker=_worker(gateway().admin.submit(AdminOp(ENABLE_KEY, name=name, key=position))))


@bp.post("/reload")
def reload() -> tuple[Response, int]:
    change = gateway().admin.submit(AdminOp(RELOAD))
    assert isinstance(change, PoolChange)
    workers = {"kept": change.kept, "replaced": change.replaced, "added": change.added, "removed": change.removed}
    return _answer(reloaded=True, workers=workers, restart_required=change.restart_required, note=RELOAD_NOTE)


@bp.post("/health-check")
def health_check() -> tuple[Response, int]:
    """Probe every worker now, here; the other processes probe in the background."""
    gw = gateway()
    gw.admin.submit(AdminOp(HEALTH_CHECK))
    body, _ = health_report(
        gw.pool, gw.health.check_now(), gw.clock(), gw.started_at, gw.instance, gw.shared.describe()
    )
    return _answer(**body)
