"""The adapter interface: what the gateway asks of every provider, and the values that cross it.

An adapter is built once per worker (it knows the worker's base URL and options) and is
stateless across requests, so one instance serves every concurrent request of a process.
Keys are not the adapter's business: the worker's key ring picks one per attempt and
passes it in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from providers.errors import UpstreamError
from providers.events import Event

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatParams:
    """One chat as an adapter sees it: the model is already resolved for this worker."""

    messages: tuple[Message, ...]
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    #: The end user's id, for providers that track abuse per user (OpenAI's `user`).
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The four deadlines of an attempt, in seconds (FIELD-NOTES 3: keep them apart).

    connect: TCP/TLS connect. first_token: request sent -> first content.
    idle: longest silence between two chunks once streaming. total: whole request.
    """

    connect: float = 5.0
    first_token: float = 60.0
    idle: float = 60.0
    total: float = 600.0

    @property
    def socket_read(self) -> float:
        """The socket-level read timeout handed to requests: a safety net under the
        gevent deadlines, which are the precise ones."""
        return max(self.first_token, self.idle)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how a worker reaches its upstream (everything but the key)."""

    base_url: str
    extra_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Ask for token usage in streams (OpenAI's stream_options.include_usage); some older
    #: OpenAI-compatible servers reject the field, so it can be switched off per worker.
    stream_usage: bool = True
    #: Stream from the upstream (the default). Off for servers whose streaming is broken: the
    #: answer then arrives as one JSON body and is relayed as a single delta.
    stream: bool = True
    #: Ollama's `keep_alive` (how long the model stays loaded after the request), passed through.
    keep_alive: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A fully built HTTP request; the transport sends it as is."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """How a provider describes itself in /api/providers."""

    type: str
    capabilities: tuple[str, ...]
    is_demo: bool = False
    description: str = ""


class StreamParser(Protocol):
    """The pure, incremental half of an adapter: bytes in, events out."""

    def feed(self, chunk: bytes) -> list[Event]: ...

    def finish(self) -> list[Event]: ...


@dataclass(frozen=True, slots=True)
class WireProtocol:
    """The pure parts of one upstream protocol. None of them does I/O, logs, or reads a clock:
    `parse_error` receives the current time for Retry-After dates.

    `build_chat` builds a streaming request, or a non-streaming one when `Endpoint.stream` is
    off; the shell then feeds the body to `parse_completion` instead of a parser."""

    build_chat: Callable[[Endpoint, ChatParams, str | None], PreparedCall]
    new_parser: Callable[[], StreamParser]
    parse_error: Callable[[int, Mapping[str, str], bytes, float], UpstreamError]
    build_models: Callable[[Endpoint, str | None], PreparedCall]
    parse_models: Callable[[bytes], tuple[str, ...]]
    #: Parses a whole JSON answer: the reply to a non-streaming call (`Endpoint.stream` off),
    #: or a server that answered JSON to a streaming request.
    parse_completion: Callable[[bytes], list[Event]]


class Adapter(Protocol):
    """What the gateway needs from a provider. Every method may raise `UpstreamError`."""

    def describe(self) -> ProviderInfo: ...

    def stream_chat(self, params: ChatParams, key: str | None, timeouts: Timeouts) -> Iterator[Event]:
        """Open the upstream call and yield its events.

        Failures opening the call raise `UpstreamError`; failures once events flow end the
        iterator with a `StreamFailure`. Closing the iterator closes the upstream connection.
        """
        ...

    def list_models(self, key: str | None, timeout: float) -> tuple[str, ...]:
        """Models the upstream serves, from its cheapest endpoint; doubles as the health probe
        (FIELD-NOTES 11: health checks must not cost tokens)."""
        ...
