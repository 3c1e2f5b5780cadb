"""The relay: a committed dispatch, streamed to the client through one encoder.

The generator is self-contained (rule 10): everything arrives as arguments, it never touches
Flask's request context, and it never raises once it has yielded (rule 9): any failure
becomes the encoder's explicit error marker. Its `finally` is the single place where the
upstream is closed and the request is accounted for (`RequestRecord.finish`: the request
log's line and the stream's metrics), whether the stream completed, failed, or the client
went away (a disconnect reaches us as GeneratorExit through the WSGI
server's `close()` of the response iterable). A worker process that stops throws
`GatewayStopping` into a stream still running at its deadline (app/lifecycle.py): the stream
ends with the error marker of code `shutting_down`, never silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from app.disconnect import ClientGone
from app.dispatcher import Dispatch, follow
from app.errors import ApiError
from app.formats.base import Answer, Encoder, Refusal
from app.lifecycle import GatewayStopping, ShuttingDown
from app.pending import PendingDispatch
from app.request_log import RequestRecord
from providers.errors import ErrorKind, UpstreamError
from providers.events import StreamFailure

log = logging.getLogger("cortex.relay")


def answer_of(dispatch: Dispatch) -> Answer:
    return Answer(dispatch.worker.name, dispatch.worker.type, dispatch.model, dispatch.attempt_count)


def refusal_of(error: Exception) -> Refusal:
    if isinstance(error, ApiError):
        return Refusal(error.status, error.code, error.title, error.details or error.title, error.retry_after)
    log.error("dispatch failed unexpectedly", exc_info=error)
    return Refusal(500, "internal_error", "Internal error", "an unexpected error occurred; it has been logged")


def relay_after_keepalives(
    pending: PendingDispatch, encoder: Encoder, interval: float, record: RequestRecord
) -> Iterator[bytes]:
    """The stream of a request whose first token is slow: keep-alives every `interval` until
    the dispatch commits, then the relay. The 200 is already sent, so a dispatch that fails
    now is told in the stream (`encoder.refused`). A client that leaves while we wait
    cancels the dispatch, and with it the upstream call."""
    assert encoder.keepalive is not None
    record.stream_began()
    dispatch: Dispatch | None = None
    outcome: str | None = None
    try:
        while not pending.wait(interval):
            yield encoder.keepalive
        try:
            dispatch = pending.result()
        except Exception as error:  # noqa: BLE001 - becomes the stream's error event
            record.refused(error)
            yield encoder.refused(refusal_of(error))
    except GatewayStopping:
        record.refused(ShuttingDown())
        yield encoder.refused(refusal_of(ShuttingDown()))
    except (GeneratorExit, ClientGone):
        outcome = "client_disconnected"
        raise
    finally:
        pending.cancel()  # a no-op once the dispatch was taken
        if dispatch is None:
            record.finish(outcome)
    if dispatch is not None:
        yield from relay(dispatch, encoder, record)


def relay(dispatch: Dispatch, encoder: Encoder, record: RequestRecord) -> Iterator[bytes]:
    """Stream a committed dispatch; `record` is this request's accounting, finished in `finally`."""
    outcome, error = "completed", None
    record.committed(dispatch)
    record.stream_began()
    # Encoded events not yet written: only ever those that came in one piece of the upstream
    # body, written as one chunk when the next would mean waiting (never a buffer to fill).
    parts: list[bytes] = []
    try:
        head = encoder.begin(answer_of(dispatch))
        if head:
            parts.append(head)
        for event, more in follow(dispatch):
            if isinstance(event, StreamFailure):
                outcome, error = "failed_mid_stream", event.error.kind.value
                log.warning(
                    "stream from %s failed mid-way: %s: %s",
                    dispatch.worker.name,
                    event.error.kind.value,
                    event.error.message,
                )
                parts.append(encoder.error(event.error))
                yield _joined(parts)
                return
            record.took(event)
            chunk = encoder.encode(event)
            if chunk:
                parts.append(chunk)
            if parts and not more:
                yield _joined(parts)
        tail = encoder.end()
        if tail:
            parts.append(tail)
        if parts:
            yield _joined(parts)
    except GatewayStopping:
        outcome, error = "failed_mid_stream", ShuttingDown.code
        log.warning("stream from %s stopped: the worker process is shutting down", dispatch.worker.name)
        parts.append(encoder.refused(refusal_of(ShuttingDown())))
        yield _joined(parts)
    except (GeneratorExit, ClientGone):
        outcome = "client_disconnected"
        raise
    except Exception:  # noqa: BLE001 - a bug of ours still ends the stream explicitly
        outcome, error = "failed_mid_stream", "internal"
        log.exception("relay failed")
        parts.append(encoder.error(UpstreamError(ErrorKind.SERVER, "internal gateway error")))
        yield _joined(parts)
    finally:
        dispatch.close()
        record.finish(outcome, error)


def _joined(parts: list[bytes]) -> bytes:
    """The parts as one write, emptying the list."""
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    parts.clear()
    return data
