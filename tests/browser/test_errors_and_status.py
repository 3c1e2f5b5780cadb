"""What the page shows when things go wrong: the 503 of a gateway with no worker left (before the
stream, or as an error event after keep-alives), a refused request, a reply cut mid-way, and a
worker going down in the status panel."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser.helpers import last_reply, meta, send, wait_settled
from tests.fakes.openai_server import Error, Stream, error_body
from tests.live.helpers import worker_toml

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("when", ["before-the-stream", "after-keepalives"])
def test_every_worker_down_shows_the_503_message(fake_openai, gateway, open_page, refused_url, when):
    if when == "before-the-stream":  # both refuse the connection: a 503 JSON answer
        toml = worker_toml("first", refused_url, priority=1) + worker_toml("second", refused_url, priority=2)
        env = {}
        cause = "first: connect"
    else:  # silent past a keep-alive, then cut: the 503 arrives as an SSE error event
        silent = fake_openai(chat=Stream(first_delay=0.7, cut_after=0))
        toml = worker_toml("first", silent.base_url)
        env = {"SSE_KEEPALIVE_INTERVAL": "0.2", "MAX_ATTEMPTS": "1"}
        cause = "first: interrupted"
    gw = gateway(toml, env=env)
    page = open_page(gw)
    send(page, "anyone?")

    assert wait_settled(page) == "failed"
    reply = last_reply(page)
    message = reply.locator(".text").inner_text()
    assert message.startswith("503 No workers available: "), message
    assert cause in message and re.search(r"\(retry in \d+ s\)$", message), message
    assert reply.get_attribute("role") == "alert" and "error" in (reply.get_attribute("class") or "")
    assert page.locator("#conversation .msg.user.unsent").count() == 1  # not part of the next request
    assert page.locator("#send").is_enabled()


def test_refused_and_rate_limited_requests_read_as_messages(fake_openai, gateway, open_page):
    too_long = error_body("This model's maximum context length is 8192 tokens.", "invalid_request_error",
                          "context_length_exceeded", "messages")  # fmt: skip
    upstream = fake_openai(chat=Error(400, too_long))
    gw = gateway(worker_toml("only", upstream.base_url))
    page = open_page(gw)

    send(page, "a very long question")
    assert wait_settled(page) == "failed"
    assert last_reply(page).locator(".text").inner_text() == (
        "400 The provider rejected the request: only refused the request: "
        "This model's maximum context length is 8192 tokens."
    )

    # The gateway has no rate limit of its own yet: its 429 answer, in its native shape, is
    # played back by the browser to show how the page reads it.
    body = {"error": "Too many requests", "details": "slow down: 60 requests per minute", "timestamp": "x"}
    page.route("**/api/chat", lambda route: route.fulfill(status=429, headers={"Retry-After": "7"},
                                                          content_type="application/json", body=json.dumps(body)))  # fmt: skip
    send(page, "again")
    assert wait_settled(page) == "failed"
    assert last_reply(page).locator(".text").inner_text() == (
        "429 Too many requests: slow down: 60 requests per minute (retry in 7 s)"
    )


def test_a_cut_mid_stream_is_marked_on_the_partial_reply(fake_openai, gateway, open_page):
    upstream = fake_openai(chat=Stream(chunks=["one ", "two ", "three ", "four"], cut_after=2))
    gw = gateway(worker_toml("flaky", upstream.base_url))
    page = open_page(gw)
    send(page, "count to four")

    assert wait_settled(page) == "error"
    reply = last_reply(page)
    assert reply.locator(".text").text_content() == "one two "  # what arrived stays
    mark = reply.locator(".mark.error")
    assert mark.get_attribute("role") == "alert"
    assert mark.inner_text().startswith("stream failed: interrupted: ")
    assert meta(page, "worker") == "flaky"

    # The partial reply is part of the conversation: the next request carries it.
    upstream.chat = Stream(chunks=["five"])
    send(page, "go on")
    assert wait_settled(page) == "done"
    body = upstream.chat_requests[1].json()
    assert isinstance(body, dict)
    assert body["messages"][1] == {"role": "assistant", "content": "one two "}


def test_the_status_panel_shows_a_worker_going_down(fake_openai, gateway, open_page):
    one, two = fake_openai(), fake_openai()
    gw = gateway(worker_toml("one", one.base_url) + worker_toml("two", two.base_url),
                 env={"HEALTH_CHECK_INTERVAL": "0.5"})  # fmt: skip
    page = open_page(gw)
    page.locator("#workers [data-worker=one][data-status=healthy]").wait_for()
    page.locator("#workers [data-worker=two][data-status=healthy]").wait_for()
    assert page.locator("#overall").get_attribute("data-status") == "healthy"

    one.stop()
    # Within a probe interval and a page refresh (3 s): nothing but the page's own polling.
    page.locator("#workers [data-worker=one][data-status=unavailable]").wait_for(timeout=10_000)
    assert page.locator("#workers [data-worker=one] .worker-error").inner_text().startswith("connect")
    assert page.locator("#workers [data-worker=two]").get_attribute("data-status") == "healthy"
    assert page.locator("#overall").inner_text() == "degraded · 1 of 2 workers available"
