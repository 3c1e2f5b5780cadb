"""Streamed responses, shared by the native and the OpenAI-compatible routes.

The dispatch runs in its own greenlet (`PendingDispatch`). The view waits for it to commit
up to one keep-alive interval: a fast answer or a fast failure gets its real status code
and the `X-Cortex-*` headers. A slow first token gets a 200 at once and keep-alive comments
until it commits (FIELD-NOTES 4); failover still happens behind them. Formats without a
comment syntax (plain text) simply wait. From the start of the dispatch to the end of the
stream, a `ClientWatch` cancels everything the moment the client leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from flask import Response, request
from werkzeug.wsgi import ClosingIterator

from app.disconnect import ClientWatch
from app.formats.base import Encoder
from app.gateway import Gateway
from app.pending import PendingDispatch
from app.relay import relay, relay_after_keepalives
from app.request_log import RequestRecord
from app.validation import ChatRequest

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_response(gateway: Gateway, req: ChatRequest, encoder: Encoder, record: RequestRecord) -> Response:
    """A streamed answer; `record` (this request's accounting) goes to the relay, which
    finishes it when the stream ends. A failure before the commit is a plain error response,
    accounted for by the request log's after_request hook."""
    record.requested(req)
    watch = ClientWatch.start(request.environ)
    try:
        return _respond(gateway, req, encoder, watch, record)
    except BaseException:
        if watch is not None:
            watch.stop()
        raise


def _respond(
    gateway: Gateway, req: ChatRequest, encoder: Encoder, watch: ClientWatch | None, record: RequestRecord
) -> Response:
    pending = PendingDispatch(lambda: gateway.dispatcher.open_stream(req))
    interval = gateway.settings.sse_keepalive_interval
    try:
        committed = pending.wait(None if encoder.keepalive is None or interval <= 0 else interval)
    except BaseException:  # ClientGone: the client left while we waited
        pending.cancel()
        raise
    if not committed:
        record.deferred = True
        body = _watched(relay_after_keepalives(pending, encoder, interval, record), watch, record, pending.cancel)
        return Response(body, content_type=encoder.content_type, headers=STREAM_HEADERS, direct_passthrough=True)
    dispatch = pending.result()  # raises the dispatch's ApiError: a real status code
    headers = {
        **STREAM_HEADERS,
        "X-Cortex-Worker": dispatch.worker.name,
        "X-Cortex-Model": dispatch.model,
        "X-Cortex-Attempts": str(dispatch.attempt_count),
    }
    record.deferred = True
    body = _watched(relay(dispatch, encoder, record), watch, record, dispatch.close)
    return Response(body, content_type=encoder.content_type, headers=headers, direct_passthrough=True)


def _watched(
    body: Iterator[bytes], watch: ClientWatch | None, record: RequestRecord, release: Callable[[], None]
) -> Iterable[bytes]:
    """Keep watching the client until the WSGI server closes the body (always called, however
    the stream ends). Not `Response.call_on_close`: Werkzeug hands a direct_passthrough body
    to the server as is and never calls those callbacks, so the watch outlived the response.
    A body closed before its first read never enters its generator, so the generator's
    `finally` does not run: closing therefore also `release`s what the relay would have (the
    committed dispatch and its upstream, or the pending dispatch) and finishes the record.
    Both are no-ops once the relay has done it."""
    callbacks = [release, record.abandon] if watch is None else [watch.stop, release, record.abandon]
    return ClosingIterator(body, callbacks)
