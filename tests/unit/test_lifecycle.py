"""The lifecycle's parts without gunicorn: when the notice falls, what InFlight does to the
requests it holds, and what a relay stopped by it writes (the live tests drive the signals)."""

from __future__ import annotations

import gevent
import pytest

from app.formats.openai_chat import OpenAIChunkEncoder
from app.formats.sse import SSEEncoder
from app.formats.text import TextEncoder
from app.lifecycle import GatewayStopping, InFlight, ShuttingDown, notice_at
from app.relay import relay
from providers.events import TextDelta
from tests.unit.test_dispatcher import REQ, Scripted, a_record, make


@pytest.mark.parametrize(("graceful", "notice"), [(60, 59), (4, 3), (3, 2.25), (2, 1.5), (0, 0)])
def test_the_notice_falls_a_second_before_the_deadline_or_a_quarter_of_a_short_one(graceful, notice):
    assert notice_at(graceful) == notice


def test_stop_now_throws_into_every_registered_request_and_refuses_new_ones():
    in_flight = InFlight()
    seen: list[str] = []

    def request(name: str) -> None:
        greenlet = in_flight.enter()
        try:
            gevent.sleep(10)
        except GatewayStopping:
            seen.append(name)
        finally:
            in_flight.leave(greenlet)

    requests = [gevent.spawn(request, name) for name in ("a", "b")]
    gevent.sleep(0)
    assert len(in_flight) == 2
    assert in_flight.stop_now(flush=1) == 2
    gevent.joinall(requests, timeout=1)
    assert sorted(seen) == ["a", "b"] and len(in_flight) == 0
    with pytest.raises(ShuttingDown):
        in_flight.enter()


def test_a_whole_answer_request_stopped_is_a_503_to_retry():
    in_flight = InFlight()

    def request() -> None:
        with in_flight.serving():
            gevent.sleep(10)

    greenlet = gevent.spawn(request)
    gevent.sleep(0)
    in_flight.stop_now()
    greenlet.join(timeout=1)
    assert isinstance(greenlet.exception, ShuttingDown)
    assert greenlet.exception.status == 503 and greenlet.exception.retry_after == 1


@pytest.mark.parametrize(
    ("encoder", "tail"),
    [
        (TextEncoder(), b"\n[cortex-error] shutting_down: the gateway is restarting; retry the request\n"),
        (
            SSEEncoder(),
            b'event: error\ndata: {"error":"shutting_down","message":"the gateway is restarting; '
            b'retry the request","status":503,"retry_after":1.0}\n\n',
        ),  # fmt: skip
        (
            OpenAIChunkEncoder("id", 1, "m", False),
            b'data: {"error":{"message":"the gateway is restarting; retry '
            b'the request","type":"service_unavailable_error","param":null,'
            b'"code":"shutting_down"}}\n\n',
        ),  # fmt: skip
    ],
)
def test_a_relay_stopped_mid_stream_ends_with_the_marker_and_closes_the_upstream(encoder, tail):
    long = Scripted([TextDelta("first "), 10.0, TextDelta("never")])
    dispatch = make(("long", long)).open_stream(REQ)
    record = a_record()
    chunks: list[bytes] = []

    def serve() -> None:
        for chunk in relay(dispatch, encoder, record):
            chunks.append(chunk)

    greenlet = gevent.spawn(serve)
    gevent.sleep(0.05)  # the relay is waiting for the upstream's next event
    greenlet.kill(GatewayStopping, block=True, timeout=1)
    assert greenlet.dead and greenlet.exception is None
    assert chunks[-1] == tail and b"never" not in b"".join(chunks)
    assert long.closed == 1 and dispatch.worker.in_flight == 0
    assert (record.outcome, record.error) == ("failed_mid_stream", "shutting_down")
