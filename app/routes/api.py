"""The native API: /api/health, /api/providers, /api/chat (streamed), /api/chat/complete."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from app.dispatcher import Dispatch
from app.formats.text import TextEncoder
from app.gateway import Gateway
from app.relay import Encoder, relay
from app.status import health_report, providers_report
from app.validation import ChatRequest, decode_json_body, parse_chat_request

bp = Blueprint("api", __name__, url_prefix="/api")


def gateway() -> Gateway:
    return current_app.extensions["cortex"]


def chat_request() -> ChatRequest:
    return parse_chat_request(decode_json_body(request.get_data(cache=False), request.content_type))


def streamed(dispatch: Dispatch, encoder: Encoder) -> Response:
    """A streamed response whose headers are final before the first chunk (rule 10)."""
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Cortex-Worker": dispatch.worker.name,
        "X-Cortex-Model": dispatch.model,
        "X-Cortex-Attempts": str(dispatch.attempt_count),
    }
    return Response(
        relay(dispatch, encoder), content_type=encoder.content_type, headers=headers, direct_passthrough=True
    )


@bp.get("/health")
def health() -> tuple[Response, int]:
    gw = gateway()
    body, code = health_report(gw.pool, gw.health.snapshot, gw.clock(), gw.started_at)
    return jsonify(body), code


@bp.get("/providers")
def providers() -> Response:
    gw = gateway()
    return jsonify(providers_report(gw.pool, gw.health.snapshot, gw.clock(), gw.strategy.name))


@bp.post("/chat")
def chat() -> Response:
    req = chat_request()
    return streamed(gateway().dispatcher.open_stream(req), TextEncoder())


@bp.post("/chat/complete")
def chat_complete() -> Response:
    result = gateway().dispatcher.complete(chat_request())
    body: dict[str, object] = {
        "response": result.text,
        "provider": result.worker.name,
        "model": result.model,
        "finish_reason": result.finish_reason,
        "attempts": len(result.attempts) + 1,
    }
    if result.usage is not None:
        body["usage"] = result.usage.as_dict()
    return jsonify(body)
