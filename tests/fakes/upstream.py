"""What every fake upstream shares, whatever its wire format.

A fake records every request, checks the key, routes the model list and the chat requests, and
answers a chat with a scripted behaviour: `chat` by default, or the next of the one-shot replies
given to `queue(...)`. A behaviour is a callable `(exchange, fake)` (Gemini's also takes the
parsed call) that writes its answer through the `Exchange`.

A provider's fake subclasses `FakeUpstream` and supplies only its wire format: where the key is
(`api_key`, unless in `Authorization: Bearer`) and how a refused one is answered (`refuse_key`),
its routes (`route`), which requests are chat requests (`is_chat`), its model list
(`list_models`, `models_error`), and its behaviours, whose bytes are its own. `Hang`, `StreamRecord` and the base of `Error` are the same
for every provider, as are the helpers a streamed answer paces and cuts itself with.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from tests.fakes.http_server import Exchange, FakeHTTPServer, PeerClosed, Request


@dataclass
class StreamRecord:
    """What one answer did, seen from the upstream's side."""

    exchange: Exchange
    planned: int
    sent: int = 0
    finished: bool = False

    @property
    def closed_by_peer(self) -> threading.Event:
        return self.exchange.closed_by_peer


@dataclass
class Hang:
    """Accept the request, then say nothing until the peer gives up (or `seconds` pass)."""

    seconds: float = 30.0

    def __call__(self, ex: Exchange, fake: FakeUpstream, *call: object) -> None:
        fake.hung.append(ex)
        ex.wait_for_close(self.seconds)
        ex.keep_alive = False


@dataclass
class Error:
    """An error before any output: `status` and `body` with the provider's own headers
    (`provider_headers`), then `headers`. A provider's `Error` sets its defaults and headers."""

    status: int = 500
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"

    def provider_headers(self) -> list[tuple[str, str]]:
        return []

    def __call__(self, ex: Exchange, fake: FakeUpstream, *call: object) -> None:
        ex.respond(self.status, self.body, self.content_type, [*self.provider_headers(), *self.headers])


def cut(ex: Exchange, index: int, cut_after: int | None) -> bool:
    """True at the content piece `cut_after`, the connection then marked to close: the
    behaviour returns, and the connection closes mid-body."""
    if cut_after is None or index != cut_after:
        return False
    ex.keep_alive = False
    return True


def pace(ex: Exchange, index: int, gate: threading.Event | None, delay: float, gate_at: int = 1) -> None:
    """Before content piece `index`: at `gate_at`, wait until `gate` is set (leaving with
    PeerClosed if the peer gives up meanwhile); else wait `delay` between pieces."""
    if index == gate_at and gate is not None:
        while not gate.wait(0.05):
            if ex.peer_closed():
                raise PeerClosed
    elif index and delay:
        time.sleep(delay)


def write_split(ex: Exchange, data: bytes, pause: float = 0.01, ascii_in_halves: bool = False) -> None:
    """Write `data` as two chunks cut just after the lead byte of its first multi-byte UTF-8
    character, `pause` seconds apart (two reads on the client's side, not one). Data without
    one is written whole, or with `ascii_in_halves` cut in the middle."""
    at = next((i + 1 for i, byte in enumerate(data) if byte >= 0xC0), len(data) // 2 if ascii_in_halves else None)
    if at is None:
        ex.chunk(data)
        return
    ex.chunk(data[:at])
    if pause:
        time.sleep(pause)
    ex.chunk(data[at:])


class FakeUpstream:
    """`chat` is the default behaviour; `queue(...)` adds one-shot behaviours used first.

    `valid_keys` (when set) is checked on every request; `rate_limited_keys` maps a key to what
    its chat requests get instead of an answer (each provider says what). `models` is what the
    model list shows, `models_status` != 200 makes it fail, `models_hang` makes it hang."""

    #: What the base URL a worker is configured with adds to the server's root.
    prefix = ""

    def __init__(self, chat: Any, models: tuple[Any, ...], valid_keys: set[str] | None, models_status: int = 200,
                 models_hang: bool = False) -> None:  # fmt: skip
        self.chat = chat
        self.models = models
        self.valid_keys = valid_keys
        self.models_status = models_status
        self.models_hang = models_hang
        self.rate_limited_keys: dict[str, Any] = {}
        self.requests: list[Request] = []
        self.streams: list[StreamRecord] = []
        self.hung: list[Exchange] = []
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        """What a worker's base URL is set to."""
        return self.server.base_url + self.prefix

    @property
    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if self.is_chat(r)]

    def queue(self, *replies: Any) -> None:
        with self._lock:
            self._queue.extend(replies)

    def next_reply(self) -> Any:
        """The next one-shot reply, else the default `chat`."""
        with self._lock:
            return self._queue.popleft() if self._queue else self.chat

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _handle(self, ex: Exchange) -> None:
        with self._lock:
            self.requests.append(ex.request)
        key = self.api_key(ex.request)
        if self.valid_keys is not None and key not in self.valid_keys:
            self.refuse_key(ex, key)
            return
        self.route(ex, key)

    def serve_models(self, ex: Exchange) -> None:
        if self.models_hang:
            Hang()(ex, self)
        elif self.models_status != 200:
            self.models_error(ex)
        else:
            self.list_models(ex)

    # --- the wire format: each provider's own -----------------------------------------------

    def api_key(self, request: Request) -> str:
        """The key the request carries where this provider wants it, "" if none: by default
        `Authorization: Bearer <key>` (the header as is without that prefix)."""
        return request.headers.get("authorization", "").removeprefix("Bearer ")

    def refuse_key(self, ex: Exchange, key: str) -> None:
        """Answer a request whose key is missing or not one of `valid_keys`."""
        raise NotImplementedError

    def route(self, ex: Exchange, key: str) -> None:
        """Answer a request that passed the key check."""
        raise NotImplementedError

    def is_chat(self, request: Request) -> bool:
        raise NotImplementedError

    def list_models(self, ex: Exchange) -> None:
        raise NotImplementedError

    def models_error(self, ex: Exchange) -> None:
        """The model list's answer when `models_status` is not 200."""
        raise NotImplementedError
