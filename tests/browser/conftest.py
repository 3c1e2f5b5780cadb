"""The chat page in a real headless Chromium (Debian's `chromium`, driven by Playwright for
Python), against the gateway under gunicorn+gevent on 127.0.0.1 and fake upstreams.

Playwright's own browser download is never used: `executable_path` is Debian's binary, which
`make test` installs when it is missing. The flags keep Chromium off the network: on a closed
network its background requests (component updates, sync, safe browsing...) are refused, many
at a time, and as root it needs --no-sandbox. Playwright gives every launch a fresh, empty
profile directory (its own --user-data-dir) and adds --headless.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, sync_playwright

from tests.gateway_process import GatewayProcess

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1100, "height": 720}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = (
            f"Debian's chromium is not installed at {CHROMIUM}: `make test` installs it (apt-get install chromium)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@dataclass
class PageWatch:
    """What a page did that a test did not ask for: uncaught script errors, console errors,
    and requests to anywhere but the gateway."""

    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # An error status answered to fetch() is logged by Chromium itself; the page shows it.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")

    def outside(self) -> list[str]:
        return [r.url for r in self.requests if not r.url.startswith((self.origin + "/", "data:"))]


@pytest.fixture
def open_page(browser: Browser, gateway: Callable[..., GatewayProcess]) -> Iterator[Callable[..., Page]]:
    """Factory: open the chat page of a started gateway in a new browser context (fresh
    storage), wait until it has loaded the providers, and at teardown check that it raised no
    script error and asked nothing of any other origin. Depends on `gateway` so that the
    browser's keep-alive connections are closed before the gateway is told to stop."""
    contexts: list[tuple[BrowserContext, PageWatch]] = []

    def make(gw: GatewayProcess, **context_options: object) -> Page:
        options: dict[str, object] = {"viewport": DESKTOP, "color_scheme": "light", **context_options}
        context = browser.new_context(**options)  # type: ignore[arg-type]
        context.set_default_timeout(10_000)
        watch = PageWatch(gw.url)
        contexts.append((context, watch))
        page = context.new_page()
        page.on("console", watch.on_console)
        page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
        page.on("request", lambda request: watch.requests.append(request))
        page.goto(gw.url + "/")
        page.wait_for_function("() => document.querySelectorAll('#provider option').length > 1")
        return page

    yield make
    for context, _ in contexts:
        context.close()
    for _, watch in contexts:
        assert not watch.errors, watch.errors
        assert not watch.outside(), f"the page asked outside the gateway: {watch.outside()}"
