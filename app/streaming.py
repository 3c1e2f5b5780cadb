"""Streamed responses, shared by the native and the OpenAI-compatible routes.

The dispatch runs in its own greenlet (`PendingDispatch`). The view waits for it to commit
up to one keep-alive interval: a fast answer or a fast failure gets its real status code
and the `X-Cortex-*` headers. A slow first token gets a 200 at once and keep-alive comments
until it commits (FIELD-NOTES 4); failover still happens behind them. Formats without a
comment syntax (plain text) simply wait. From the start of the dispatch to the end of the
stream, a `ClientWatch` cancels everything the moment the client leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from flask import Response, request

from app.disconnect import ClientWatch
from app.formats.base import Encoder
from app.gateway import Gateway
from app.pending import PendingDispatch
from app.relay import relay, relay_after_keepalives
from app.validation import ChatRequest

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def stream_response(gateway: Gateway, req: ChatRequest, encoder: Encoder) -> Response:
    watch = ClientWatch.start(request.environ)
    try:
        return _respond(gateway, req, encoder, watch)
    except BaseException:
        if watch is not None:
            watch.stop()
        raise


def _respond(gateway: Gateway, req: ChatRequest, encoder: Encoder, watch: ClientWatch | None) -> Response:
    pending = PendingDispatch(lambda: gateway.dispatcher.open_stream(req))
    interval = gateway.settings.sse_keepalive_interval
    try:
        committed = pending.wait(None if encoder.keepalive is None or interval <= 0 else interval)
    except BaseException:  # ClientGone: the client left while we waited
        pending.cancel()
        raise
    if not committed:
        body = relay_after_keepalives(pending, encoder, interval)
        response = Response(body, content_type=encoder.content_type, headers=STREAM_HEADERS, direct_passthrough=True)
        return _watched(response, watch)
    dispatch = pending.result()  # raises the dispatch's ApiError: a real status code
    headers = {
        **STREAM_HEADERS,
        "X-Cortex-Worker": dispatch.worker.name,
        "X-Cortex-Model": dispatch.model,
        "X-Cortex-Attempts": str(dispatch.attempt_count),
    }
    response = Response(
        relay(dispatch, encoder), content_type=encoder.content_type, headers=headers, direct_passthrough=True
    )
    return _watched(response, watch)


def _watched(response: Response, watch: ClientWatch | None) -> Response:
    """Keep watching the client until the WSGI server closes the response body, which it always
    does, however the stream ends. (Not `call_on_close`: with `direct_passthrough` werkzeug
    hands the body to the server as is, and its close callbacks never run.)"""
    if watch is not None:
        response.response = WatchedBody(response.response, watch)  # type: ignore[arg-type]
    return response


class WatchedBody:
    """A response body whose `close()` also ends the client watch."""

    __slots__ = ("_body", "_watch")

    def __init__(self, body: Iterable[bytes], watch: ClientWatch) -> None:
        self._body = iter(body)
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._watch.stop()
