"""The events an adapter yields: the one internal currency between adapters and the relay.

Every output format (plain text, SSE, OpenAI chunks) is encoded from these, never by re-parsing
another format. An adapter yields zero or more `TextDelta`s, at most one `Usage` and one `Finish`,
and ends either normally or with a single `StreamFailure` as its last event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.errors import UpstreamError


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's reply, as the upstream sent it."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported by the upstream (absent when the protocol gives none)."""

    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def as_dict(self) -> dict[str, int | None]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Finish:
    """The upstream said the reply is complete, and why (normalised: stop, length, content_filter...)."""

    reason: str | None


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """The stream cannot go on; carries the classified upstream error."""

    error: UpstreamError


Event = TextDelta | Usage | Finish | StreamFailure
