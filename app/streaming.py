"""Streamed responses, shared by the native and the OpenAI-compatible routes.

The dispatch runs in its own greenlet (`PendingDispatch`). The view waits for it to commit
up to one keep-alive interval: a fast answer or a fast failure gets its real status code
and the `X-Cortex-*` headers. A slow first token gets a 200 at once and keep-alive comments
until it commits (FIELD-NOTES 4); failover still happens behind them. Formats without a
comment syntax (plain text) simply wait. From the start of the dispatch to the end of the
stream, a `ClientWatch` cancels everything the moment the client leaves, and releases a
client that reads nothing for CLIENT_SEND_TIMEOUT seconds. For the same span the request is
registered in the gateway's `InFlight`, so a worker process that stops ends it explicitly
(app/lifecycle.py): before the commit with a 503, after it with the stream's error marker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, request
from werkzeug.wsgi import ClosingIterator

from app.disconnect import ClientWatch
from app.formats.base import Encoder
from app.gateway import Gateway
from app.lifecycle import GatewayStopping, ShuttingDown
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
    greenlet = gateway.in_flight.enter()
    watch = ClientWatch.start(request.environ, gateway.settings.client_send_timeout)
    cleanup = [lambda: gateway.in_flight.leave(greenlet)]
    if watch is not None:
        cleanup.append(watch.stop)
    try:
        return _respond(gateway, req, encoder, watch, record, cleanup)
    except GatewayStopping:  # the process stops before this request committed: the client may retry
        _run(cleanup)
        raise ShuttingDown() from None
    except BaseException:
        _run(cleanup)
        raise


def _run(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


def _respond(
    gateway: Gateway,
    req: ChatRequest,
    encoder: Encoder,
    watch: ClientWatch | None,
    record: RequestRecord,
    cleanup: list[Callable[[], None]],
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
        body = _watched(
            relay_after_keepalives(pending, encoder, interval, record), watch, [pending.cancel, *cleanup], record
        )
        return Response(body, content_type=encoder.content_type, headers=STREAM_HEADERS, direct_passthrough=True)
    dispatch = pending.result()  # raises the dispatch's ApiError: a real status code
    headers = {
        **STREAM_HEADERS,
        "X-Cortex-Worker": dispatch.worker.name,
        "X-Cortex-Model": dispatch.model,
        "X-Cortex-Attempts": str(dispatch.attempt_count),
    }
    record.deferred = True
    body = _watched(relay(dispatch, encoder, record), watch, [dispatch.close, *cleanup], record)
    return Response(body, content_type=encoder.content_type, headers=headers, direct_passthrough=True)


def _watched(
    body: Iterator[bytes], watch: ClientWatch | None, release: list[Callable[[], None]], record: RequestRecord
) -> Iterable[bytes]:
    """Keep watching the client until the WSGI server closes the body (always called, however
    the stream ends). Not `Response.call_on_close`: Werkzeug hands a direct_passthrough body
    to the server as is and never calls those callbacks, so the watch outlived the response.
    A body closed before its first read never enters its generator, so the generator's
    `finally` does not run: closing therefore also runs `release` (what the relay would have
    released: the committed dispatch and its upstream, or the pending dispatch; then the
    watch and the in-flight registration) and finishes the record. All are no-ops once done."""
    return ClosingIterator(body if watch is None else _Paced(body, watch), [*release, record.abandon])


class _Paced:
    """The body as the server iterates it, telling the watch when each chunk is handed over
    and when the server comes back for the next, so it can tell a client that stopped reading."""

    __slots__ = ("_body", "_watch")

    def __init__(self, body: Iterator[bytes], watch: ClientWatch) -> None:
        self._body = body
        self._watch = watch

    def __iter__(self) -> _Paced:
        return self

    def __next__(self) -> bytes:
        self._watch.taken()
        chunk = next(self._body)
        self._watch.handed()
        return chunk

    def close(self) -> Any:
        return getattr(self._body, "close", lambda: None)()
