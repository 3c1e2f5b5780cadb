"""Streamed responses, shared by the native and the OpenAI-compatible routes.

The dispatch runs in its own greenlet (`PendingDispatch`). The view waits for it to commit
up to one keep-alive interval: a fast answer or a fast failure gets its real status code
and the `X-Cortex-*` headers. A slow first token gets a 200 at once and keep-alive comments
until it commits (FIELD-NOTES 4); failover still happens behind them. Formats without a
comment syntax (plain text) simply wait.
"""

from __future__ import annotations

from flask import Response

from app.formats.base import Encoder
from app.gateway import Gateway
from app.pending import PendingDispatch
from app.relay import relay, relay_after_keepalives
from app.validation import ChatRequest

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_response(gateway: Gateway, req: ChatRequest, encoder: Encoder) -> Response:
    pending = PendingDispatch(lambda: gateway.dispatcher.open_stream(req))
    interval = gateway.settings.sse_keepalive_interval
    if encoder.keepalive is None or interval <= 0:
        pending.wait(None)
    elif not pending.wait(interval):
        body = relay_after_keepalives(pending, encoder, interval)
        return Response(body, content_type=encoder.content_type, headers=STREAM_HEADERS, direct_passthrough=True)
    dispatch = pending.result()  # raises the dispatch's ApiError: a real status code
    headers = {
        **STREAM_HEADERS,
        "X-Cortex-Worker": dispatch.worker.name,
        "X-Cortex-Model": dispatch.model,
        "X-Cortex-Attempts": str(dispatch.attempt_count),
    }
    return Response(
        relay(dispatch, encoder), content_type=encoder.content_type, headers=headers, direct_passthrough=True
    )
