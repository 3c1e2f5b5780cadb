"""The thin I/O shell shared by every HTTP adapter.

A protocol module supplies only pure parts (a `WireProtocol`): how to build the chat and
model-list requests, a fresh incremental parser per stream, and how to read an error body.
This shell sends, checks the status, feeds bytes to the parser and guarantees the upstream
response is closed however the stream ends: completed, failed, or abandoned by the client.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator

import requests

from providers.base import ChatParams, Endpoint, ProviderInfo, StreamParser, Timeouts, WireProtocol
from providers.errors import UpstreamError
from providers.events import Event, StreamFailure
from providers.transport import Transport

#: Error bodies larger than this are cut before parsing: an error is never that long.
ERROR_BODY_LIMIT = 64 * 1024


def mask_key(key: str) -> str:
    """How a key may be shown: enough to tell two apart, never enough to use one."""
    if len(key) <= 8:
        return "****"
    return f"{key[:3]}…{key[-4:]}"


def scrub(error: UpstreamError, key: str | None) -> UpstreamError:
    """Remove a key that an upstream echoed back in its error text (rule 15)."""
    if key and key in error.message:
        error.message = error.message.replace(key, mask_key(key))
        error.args = (error.message,)
    return error


class HttpAdapter:
    """An `Adapter` for any HTTP upstream, parameterised by its `WireProtocol`."""

    def __init__(self, endpoint: Endpoint, protocol: WireProtocol, info: ProviderInfo, transport: Transport) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self.info = info
        self.transport = transport

    def describe(self) -> ProviderInfo:
        return self.info

    def stream_chat(self, params: ChatParams, key: str | None, timeouts: Timeouts) -> Iterator[Event]:
        call = self.protocol.build_chat(self.endpoint, params, key)
        response = self.transport.send(
            call, connect_timeout=timeouts.connect, read_timeout=timeouts.socket_read, stream=True
        )
        try:
            if response.status_code >= 300:
                raise self._error(response, key)
            content_type = response.headers.get("Content-Type", "")
            if not self.endpoint.stream or content_type.startswith("application/json"):
                body = Transport.read_body(response, limit=16 << 20)
                events = self.protocol.parse_completion(body)
                response.close()
                return iter(events)
        except BaseException:
            response.close()
            raise
        return ResponseEvents(response, self.protocol.new_parser(), key)

    def list_models(self, key: str | None, timeout: float) -> tuple[str, ...]:
        call = self.protocol.build_models(self.endpoint, key)
        response = self.transport.send(call, connect_timeout=timeout, read_timeout=timeout, stream=True)
        try:
            if response.status_code >= 300:
                raise self._error(response, key)
            return self.protocol.parse_models(Transport.read_body(response))
        finally:
            response.close()

    def _error(self, response: requests.Response, key: str | None) -> UpstreamError:
        try:
            body = Transport.read_body(response, limit=ERROR_BODY_LIMIT)
        except UpstreamError:
            body = b""
        error = self.protocol.parse_error(response.status_code, response.headers, body, time.time())
        return scrub(error, key)


class ResponseEvents:
    """The events of one streamed response. `close()` closes the response whether or not
    iteration has started (closing an unstarted generator would skip its `finally`).

    Events are parsed a piece of the body at a time, as urllib3 hands it over (one HTTP chunk
    of a chunked body, else one socket read); `__length_hint__` says how many of the last
    piece's are still waiting here, so the relay can write events that came together in one
    write to the client without ever waiting for more (app/relay.py). Most upstreams send one
    event per HTTP chunk, so this saves writes only when one packs several (a burst, or a
    proxy that buffered them)."""

    __slots__ = ("_response", "_batches", "_ready")

    def __init__(self, response: requests.Response, parser: StreamParser, key: str | None) -> None:
        self._response = response
        self._batches = self._generate(response, parser, key)
        self._ready: deque[Event] = deque()

    def __iter__(self) -> ResponseEvents:
        return self

    def __next__(self) -> Event:
        ready = self._ready
        while not ready:
            ready.extend(next(self._batches))
        return ready.popleft()

    def __length_hint__(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        self._ready.clear()
        self._batches.close()
        self._response.close()

    @staticmethod
    def _generate(
        response: requests.Response, parser: StreamParser, key: str | None
    ) -> Generator[list[Event], None, None]:
        """The events of each piece of the body, in lists; a failure ends the stream."""
        try:
            for chunk in Transport.iter_body(response):
                events = _until_failure(parser.feed(chunk), key)
                if events:
                    yield events
                    if isinstance(events[-1], StreamFailure):
                        return
            yield _until_failure(parser.finish(), key)
        except UpstreamError as error:
            yield [StreamFailure(scrub(error, key))]
        finally:
            response.close()


def _until_failure(events: Iterable[Event], key: str | None) -> list[Event]:
    """The events up to the first failure, which is kept (with any key scrubbed from it)."""
    kept: list[Event] = []
    for event in events:
        if isinstance(event, StreamFailure):
            kept.append(StreamFailure(scrub(event.error, key)))
            break
        kept.append(event)
    return kept
