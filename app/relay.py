"""The relay: a committed dispatch, streamed to the client through one encoder.

The generator is self-contained (rule 10): everything arrives as arguments, it never touches
Flask's request context, and it never raises once it has yielded (rule 9): any failure
becomes the encoder's explicit error marker. Its `finally` is the single place where the
upstream is closed and the request is accounted for, whether the stream completed, failed,
or the client went away (a disconnect reaches us as GeneratorExit through the WSGI
server's `close()` of the response iterable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Protocol

from app.dispatcher import Dispatch, follow
from providers.errors import ErrorKind, UpstreamError
from providers.events import Event, StreamFailure

log = logging.getLogger("cortex.relay")


class Encoder(Protocol):
    content_type: str

    def encode(self, event: Event) -> bytes | None: ...

    def error(self, error: UpstreamError) -> bytes: ...

    def end(self) -> bytes | None: ...


def relay(dispatch: Dispatch, encoder: Encoder) -> Iterator[bytes]:
    outcome = "completed"
    try:
        for event in follow(dispatch):
            if isinstance(event, StreamFailure):
                outcome = f"failed_mid_stream:{event.error.kind.value}"
                log.warning(
                    "stream from %s failed mid-way: %s: %s",
                    dispatch.worker.name,
                    event.error.kind.value,
                    event.error.message,
                )
                yield encoder.error(event.error)
                return
            chunk = encoder.encode(event)
            if chunk:
                yield chunk
        tail = encoder.end()
        if tail:
            yield tail
    except GeneratorExit:
        outcome = "client_disconnected"
        raise
    except Exception:  # noqa: BLE001 - a bug of ours still ends the stream explicitly
        outcome = "failed_mid_stream:internal"
        log.exception("relay failed")
        yield encoder.error(UpstreamError(ErrorKind.SERVER, "internal gateway error"))
    finally:
        dispatch.close()
        now = time.monotonic()
        log.info(
            "stream worker=%s model=%s attempts=%d outcome=%s ttft_ms=%.1f duration_ms=%.1f",
            dispatch.worker.name,
            dispatch.model,
            dispatch.attempt_count,
            outcome,
            (dispatch.first_token_at - dispatch.started) * 1000,
            (now - dispatch.started) * 1000,
        )
