"""The built-in demo provider: a deterministic reply, streamed word by word, no upstream.

It is the embedded default so that `make run` on a machine with no API keys still shows a
real stream flowing through the gateway (dispatch, relay, encoders, the chat page). It is
labelled as a demo everywhere it appears, and switches itself off as soon as a real
provider is configured (unless `DEMO_PROVIDER=on`).
"""

from __future__ import annotations

from collections.abc import Iterator

import gevent

from providers.base import ChatParams, ProviderInfo, Timeouts
from providers.events import Event, Finish, TextDelta, Usage

DEMO_MODEL = "cortex-demo"

INFO = ProviderInfo(
    type="demo",
    capabilities=("chat", "streaming", "usage", "models"),
    is_demo=True,
    description="Built-in demo: a deterministic reply streamed word by word, no real model",
)

_QUOTE_LIMIT = 160


def demo_reply(params: ChatParams) -> str:
    """The reply text: fixed wording around the last user message, so tests can predict it."""
    last_user = next((m.content for m in reversed(params.messages) if m.role == "user"), "")
    quoted = " ".join(last_user.split())
    if len(quoted) > _QUOTE_LIMIT:
        quoted = quoted[: _QUOTE_LIMIT - 1] + "…"
    return (
        "Hello from Cortex! This reply comes from the built-in demo provider, streamed word by word "
        "so you can watch the gateway relay each token as it arrives. "
        f"You said: \u201c{quoted}\u201d. "
        "To talk to a real model, set GROQ_API_KEYS, OPENAI_COMPAT_URLS or CORTEX_CONFIG and restart; "
        "the demo provider then steps aside."
    )


def demo_words(text: str) -> list[str]:
    """Split into stream pieces that concatenate back to exactly `text`."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def _count_words(params: ChatParams) -> int:
    return sum(len(m.content.split()) for m in params.messages)


class DemoAdapter:
    """An `Adapter` whose 'upstream' is a local function; `delay` paces the words."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def describe(self) -> ProviderInfo:
        return INFO

    def list_models(self, key: str | None, timeout: float) -> tuple[str, ...]:
        return (DEMO_MODEL,)

    def stream_chat(self, params: ChatParams, key: str | None, timeouts: Timeouts) -> Iterator[Event]:
        return self._events(params)

    def _events(self, params: ChatParams) -> Iterator[Event]:
        words = demo_words(demo_reply(params))
        limit = params.max_tokens if params.max_tokens is not None else len(words)
        sent = 0
        for word in words[:limit]:
            if sent and self.delay > 0:
                gevent.sleep(self.delay)
            yield TextDelta(word)
            sent += 1
        yield Finish("stop" if sent == len(words) else "length")
        yield Usage(input_tokens=_count_words(params), output_tokens=sent)
