"""The stats page in headless Chromium: it asks for the API key, then its figures follow the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.servers import API_KEY, Server


@pytest.fixture
def stats_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, {"SWITCHBOARD_STATS_PAGE": "1"}).wait_ready()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert not problems


def test_the_numbers_move_when_clients_connect_and_talk(stats_server: Server, page: Page):
    page.goto(stats_server.url + "/stats")
    page.fill("#key-form [name=key]", "not-the-key")
    page.click("#key-form button")
    expect(page.locator("#key-error")).to_contain_text("wrong API key")
    expect(page.locator("#state")).to_have_attribute("data-state", "waiting")

    page.fill("#key-form [name=key]", API_KEY)
    page.click("#key-form button")
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.locator("#connections")).to_have_text("0")

    clients = [stats_server.client() for _ in range(3)]
    expect(page.locator("#connections")).to_have_text("3", timeout=10_000)
    expect(page.locator("#opened")).to_have_text("3")
    for client in clients:
        client.command("subscribe", channel="room")
    for n in range(20):
        clients[0].command("publish", channel="room", data=n)
    expect(page.locator("#publishes")).to_have_text("20 / 0", timeout=10_000)
    # 20 publishes to 3 subscribers, plus replies, within one 2 s interval or two: never 0 out/s.
    expect(page.locator("#out-rate")).not_to_have_text("0.0")
    expect(page.locator("#out-rate")).not_to_have_text("–")

    for client in clients:
        assert [message["data"] for message in client.messages(20)] == list(range(20))
        client.close()
    expect(page.locator("#connections")).to_have_text("0", timeout=10_000)

    # Both charts drew; the key stayed in this tab, out of the URL.
    for chart in ("#connections-chart", "#messages-chart"):
        assert page.eval_on_selector(chart, "canvas => canvas.width") > 0
    assert page.evaluate("sessionStorage.getItem('switchboard.apiKey')") == API_KEY
    assert API_KEY not in page.url

    # A reload keeps the key for this tab and goes straight to the figures.
    page.reload()
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
