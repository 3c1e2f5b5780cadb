"""Driving the chat page the way a user does, and reading what it shows."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Locator, Page

#: Screenshots the test run writes for a reviewer (README, "GET /"); ignored by git.
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

SETTLED = ("done", "error", "stopped", "failed")

# The text of the latest reply as the user sees it ("" while it waits for the first token),
# and its state: waiting, streaming, then one of SETTLED.
_LAST_REPLY = """() => {
  const replies = document.querySelectorAll('#conversation .msg.assistant');
  const reply = replies[replies.length - 1];
  if (!reply) return null;
  const state = reply.dataset.state;
  return [state, state === 'waiting' ? '' : reply.querySelector('.text').textContent];
}"""


def send(page: Page, text: str) -> None:
    """Type a message in the prompt and press Enter, as a keyboard user does."""
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def last_reply(page: Page) -> Locator:
    return page.locator("#conversation .msg.assistant").last


def meta(page: Page, name: str) -> str:
    """One field of the latest reply's metadata line (worker, model, ttft, total, rate, usage...)."""
    return last_reply(page).locator(f".meta [data-field={name}]").inner_text()


def wait_settled(page: Page, timeout: float = 15.0) -> str:
    """Wait until the latest reply has ended, however it ended; return its state."""
    page.wait_for_function(
        "(settled) => { const r = [...document.querySelectorAll('#conversation .msg.assistant')].pop();"
        " return r !== undefined && settled.includes(r.dataset.state); }",
        arg=list(SETTLED),
        timeout=timeout * 1000,
    )
    return last_reply(page).get_attribute("data-state") or ""


def watch_reply(page: Page, timeout: float = 15.0, on_state=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Poll the latest reply's text until it has settled (or `timeout` passes) and return every
    distinct text it showed, in order. `on_state(text)` is called at each new one."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, text = page.evaluate(_LAST_REPLY) or ("waiting", "")
        if not seen or text != seen[-1]:
            seen.append(text)
            if on_state is not None:
                on_state(text)
        if state in SETTLED:
            return seen
        time.sleep(0.01)  # a poll interval, not a wait for anything
    raise AssertionError(f"the reply did not settle in {timeout}s; it showed {seen!r}")
