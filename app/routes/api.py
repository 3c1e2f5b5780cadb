"""The native API: /api/health, /api/providers, /api/chat (streamed), /api/chat/complete."""

from __future__ import annotations

from flask import Blueprint, Request, Response, current_app, jsonify, request

from app.disconnect import watching
from app.formats.base import Encoder
from app.formats.sse import SSEEncoder
from app.formats.text import TextEncoder
from app.gateway import Gateway
from app.request_log import current_record
from app.status import health_report, providers_report
from app.streaming import stream_response
from app.validation import NativeChat, decode_json_body, parse_native_chat, read_body

bp = Blueprint("api", __name__, url_prefix="/api")


def gateway() -> Gateway:
    return current_app.extensions["cortex"]


def native_chat() -> NativeChat:
    return parse_native_chat(decode_json_body(read_body(request), request.content_type))


def encoder_for(chat: NativeChat, req: Request) -> Encoder:
    """SSE when the body says so, or when the client prefers it in Accept; plain text otherwise."""
    if chat.stream_format is not None:
        return SSEEncoder() if chat.stream_format == "sse" else TextEncoder()
    preferred = req.accept_mimetypes.best_match(["text/plain", "text/event-stream"])
    return SSEEncoder() if preferred == "text/event-stream" else TextEncoder()


@bp.get("/health")
def health() -> tuple[Response, int]:
    gw = gateway()
    body, code = health_report(
        gw.pool, gw.health.snapshot, gw.clock(), gw.started_at, gw.instance, gw.shared.describe()
    )
    return jsonify(body), code


@bp.get("/providers")
def providers() -> Response:
    gw = gateway()
    return jsonify(providers_report(gw.pool, gw.health.snapshot, gw.clock(), gw.strategy.name))


@bp.post("/chat")
def chat() -> Response:
    chat = native_chat()
    return stream_response(gateway(), chat.chat, encoder_for(chat, request), current_record())


@bp.post("/chat/complete")
def chat_complete() -> Response:
    req = native_chat().chat
    record = current_record()
    record.requested(req)
    gw = gateway()
    with gw.in_flight.serving(), watching(request.environ):
        result = gw.dispatcher.complete(req)
    record.completed(result)
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
