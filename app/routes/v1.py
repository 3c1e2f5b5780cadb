"""The OpenAI-compatible API: POST /v1/chat/completions and GET /v1/models.

An application that speaks OpenAI switches to Cortex by changing its base URL to
`http://host:4000/v1`. Errors here use OpenAI's shape (see app/errors.py), so the SDKs raise
their usual exception classes.
"""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, Response, current_app, jsonify, request

from app.disconnect import watching
from app.formats.openai_chat import OpenAIChunkEncoder, completion_body
from app.gateway import Gateway
from app.request_log import current_record
from app.status import models_report
from app.streaming import stream_response
from app.validation import decode_json_body, parse_openai_chat, read_body

bp = Blueprint("v1", __name__, url_prefix="/v1")


def gateway() -> Gateway:
    return current_app.extensions["cortex"]


@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = parse_openai_chat(decode_json_body(read_body(request), request.content_type))
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        encoder = OpenAIChunkEncoder(completion_id, created, body.chat.model, body.include_usage)
        return stream_response(gateway(), body.chat, encoder, current_record())
    record = current_record()
    record.requested(body.chat)
    gw = gateway()
    with gw.in_flight.serving(), watching(request.environ):
        result = gw.dispatcher.complete(body.chat)
    record.completed(result)
    response = jsonify(
        completion_body(completion_id, created, result.model, result.text, result.finish_reason, result.usage)
    )
    response.headers.update({"X-Cortex-Worker": result.worker.name, "X-Cortex-Attempts": str(len(result.attempts) + 1)})
    return response


@bp.get("/models")
def models() -> Response:
    gw = gateway()
    return jsonify(models_report(gw.pool, gw.health.snapshot, gw.settings.model_aliases))
