"""The chat page streaming real replies: token by token, stopped mid-way, from the worker that
answered, with the controls and the conversation's history reaching the gateway."""

from __future__ import annotations

import json
import re
import threading

import pytest

from tests.browser.helpers import ARTIFACTS, last_reply, meta, send, wait_settled, watch_reply
from tests.fakes.http_server import eventually
from tests.fakes.openai_server import Stream
from tests.live.helpers import worker_toml

pytestmark = pytest.mark.browser

WORDS = ["Streaming ", "through ", "Cortex, ", "one ", "token ", "at ", "a ", "time."]


def test_the_reply_grows_token_by_token_then_says_who_answered(fake_openai, gateway, open_page):
    upstream = fake_openai(chat=Stream(chunks=WORDS, delay=0.2))
    upstream.queue(Stream(chunks=["Hello! ", "Ask me anything."]))  # a first, quick turn
    gw = gateway(worker_toml("fake-one", upstream.base_url), env={"HEALTH_CHECK_INTERVAL": "1"})
    page = open_page(gw)
    send(page, "Hello there")
    assert wait_settled(page) == "done"
    page.locator("#workers [data-worker=fake-one][data-status=healthy]").wait_for()
    screenshot = ARTIFACTS / "chat-mid-stream.png"
    screenshot.unlink(missing_ok=True)
    shot_while: list[str | None] = []

    def screenshot_mid_stream(text: str) -> None:
        if not shot_while and len(text.split()) >= 3:
            page.screenshot(path=str(screenshot))
            shot_while.append(last_reply(page).get_attribute("data-state"))

    send(page, "Show me a stream")
    states = watch_reply(page, on_state=screenshot_mid_stream)

    final = "".join(WORDS)
    assert states[-1] == final
    growing = [text for text in states if text and text != final]
    assert len(growing) >= 3, f"the reply was not seen growing: {states!r}"
    assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:], strict=False)), states
    assert shot_while == ["streaming"] and screenshot.stat().st_size > 0

    assert last_reply(page).get_attribute("data-state") == "done"
    assert meta(page, "worker") == "fake-one" and meta(page, "model") == "fake-model"
    assert re.fullmatch(r"first token \d+\.\d\d s", meta(page, "ttft"))
    assert re.fullmatch(r"total \d+\.\d\d s", meta(page, "total"))
    assert re.fullmatch(r"\d+\.\d tok/s", meta(page, "rate"))
    assert meta(page, "usage") == f"10 in / {len(WORDS)} out tokens"  # the fake counts words as tokens
    assert page.locator("#send").is_enabled() and page.locator("#stop").is_disabled()


def test_stop_ends_the_reply_and_the_upstream_connection(fake_openai, gateway, open_page):
    gate = threading.Event()  # the fake holds everything after the first token until set
    upstream = fake_openai(chat=Stream(chunks=["Never ", "finished ", "reply"], gate=gate))
    gw = gateway(worker_toml("up", upstream.base_url), env={"IDLE_TIMEOUT": "60"})
    page = open_page(gw)
    try:
        send(page, "Tell me everything")
        page.locator("#conversation .msg.assistant[data-state=streaming]").wait_for()
        assert last_reply(page).locator(".text").text_content() == "Never "
        assert page.locator("#send").is_disabled()
        page.locator("#stop").click()

        (record,) = upstream.streams
        assert record.closed_by_peer.wait(timeout=5), "the upstream connection stayed open after Stop"
        assert not record.finished and record.sent == 1
        assert wait_settled(page) == "stopped"
        assert last_reply(page).locator(".mark").inner_text() == "stopped"
        assert last_reply(page).locator(".text").text_content() == "Never "
        assert meta(page, "worker") == "up"
        assert page.locator("#send").is_enabled() and page.locator("#stop").is_disabled()
    finally:
        gate.set()


def test_the_worker_shown_is_the_one_that_answered(fake_openai, gateway, open_page, refused_url):
    second = fake_openai(chat=Stream(chunks=["answered ", "by ", "the ", "second"]))
    gw = gateway(worker_toml("first", refused_url, priority=1) + worker_toml("second", second.base_url, priority=2))
    page = open_page(gw)
    send(page, "who is there?")
    assert wait_settled(page) == "done"
    assert last_reply(page).locator(".text").text_content() == "answered by the second"
    assert meta(page, "worker") == "second" and meta(page, "attempts") == "2 attempts"
    assert len(second.chat_requests) == 1
    # The failed attempt marked the first worker down at once; the panel shows it after the reply.
    page.locator("#workers [data-worker=first][data-status=unavailable]").wait_for()
    assert "connect" in page.locator("#workers [data-worker=first] .worker-error").inner_text()


def test_controls_history_and_api_key_reach_the_gateway(fake_openai, gateway, open_page):
    alpha = fake_openai(chat=Stream(chunks=["from ", "alpha"]))
    beta = fake_openai(chat=Stream(chunks=["First ", "answer."]))
    gw = gateway(
        worker_toml("alpha", alpha.base_url, priority=1)
        + worker_toml("beta", beta.base_url, priority=2, models=("beta-small", "beta-large"))
    )
    page = open_page(gw)
    chat_headers: list[dict[str, str]] = []
    page.on("request", lambda r: chat_headers.append(r.headers) if r.url.endswith("/api/chat") else None)

    page.get_by_label("Provider").select_option("beta")
    model_options = page.locator("#model option").all_inner_texts()
    assert model_options == ["default (beta-small)", "beta-small", "beta-large"]
    page.get_by_label("Model").select_option("beta-large")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Max tokens").fill("50")
    page.get_by_label("System prompt").fill("Be brief.")
    page.locator("#key-box summary").click()  # the "API key" disclosure
    page.get_by_label("Gateway API key").fill("sk-client-123")

    send(page, "first question")
    assert wait_settled(page) == "done"
    beta.chat = Stream(chunks=["Second ", "answer."])
    send(page, "second question")
    assert wait_settled(page) == "done"
    assert meta(page, "worker") == "beta" and meta(page, "model") == "beta-large"

    assert alpha.chat_requests == [] and len(beta.chat_requests) == 2
    body = beta.chat_requests[1].json()
    assert isinstance(body, dict)
    assert body["model"] == "beta-large" and body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "second question"},
    ]
    assert [h.get("authorization") for h in chat_headers] == ["Bearer sk-client-123"] * 2
    assert all(h.get("accept") == "text/event-stream" for h in chat_headers)

    page.get_by_role("button", name="Clear conversation").click()
    assert page.locator("#conversation .msg").count() == 0
    beta.chat = Stream(chunks=["Fresh."])
    send(page, "again")
    assert wait_settled(page) == "done"
    assert [m["role"] for m in json.loads(beta.chat_requests[2].body)["messages"]] == ["system", "user"]

    # The key is kept for this tab only: in its session storage, back after a reload, unknown to
    # another tab and never in local storage.
    assert page.evaluate("() => sessionStorage.getItem('cortex.apiKey')") == "sk-client-123"
    assert page.evaluate("() => localStorage.length") == 0
    page.reload()
    assert page.locator("#api-key").input_value() == "sk-client-123"
    other_tab = page.context.new_page()
    other_tab.goto(gw.url + "/")
    assert other_tab.locator("#api-key").input_value() == ""


def test_enter_sends_and_shift_enter_adds_a_new_line(fake_openai, gateway, open_page):
    upstream = fake_openai(chat=Stream(chunks=["Two ", "lines ", "received."]))
    gw = gateway(worker_toml("up", upstream.base_url))
    page = open_page(gw)
    prompt = page.locator("#prompt")
    assert page.evaluate("() => document.activeElement.id") == "prompt"  # ready to type on load
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert prompt.input_value() == "line one\nline two"
    assert page.locator("#conversation .msg").count() == 0 and upstream.chat_requests == []

    page.keyboard.press("Enter")
    assert wait_settled(page) == "done"
    assert page.locator("#conversation .msg.user").inner_text() == "line one\nline two"
    assert prompt.input_value() == ""
    body = upstream.chat_requests[0].json()
    assert isinstance(body, dict) and body["messages"][-1] == {"role": "user", "content": "line one\nline two"}
    assert page.evaluate("() => document.activeElement.id") == "prompt"  # the next message can follow at once


def test_phone_sized_and_dark(fake_openai, gateway, open_page):
    upstream = fake_openai(chat=Stream(chunks=["A reply that is long enough to wrap ", "on a narrow phone screen."]))
    gw = gateway(worker_toml("up", upstream.base_url))
    page = open_page(gw, viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
    send(page, "hello from a phone")
    assert wait_settled(page) == "done"
    assert eventually(lambda: page.locator("#workers li").count() == 1)
    page.screenshot(path=str(ARTIFACTS / "chat-phone-dark.png"), full_page=True)

    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    composer = page.locator("#composer").bounding_box()
    settings = page.locator(".side").bounding_box()
    assert composer and settings and settings["y"] >= composer["y"] + composer["height"]  # one column
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert sum(map(int, re.findall(r"\d+", background)[:3])) < 3 * 60, background  # dark by the system's preference
