"""Fixtures for driving the demo page in headless Chromium: the system's Chromium, via Playwright.

Playwright's own browser downloads are never used (`playwright install` needs hosts this project
cannot reach); `make browser-deps` installs Chromium from Debian instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.integration.servers import Server

DEMO = {"SWITCHBOARD_DEMO": "1"}


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[Server]:
    """A server with the demo routes on, stopped after the test."""
    server = Server(tmp_path, DEMO).wait_ready()
    yield server
    server.stop()


@pytest.fixture
def join(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open the demo in a browser of its own, join a room as `name`, and wait until connected.

    Every page must end the test without a script error and without a dialog having opened.
    """
    contexts = []
    problems: list[str] = []

    def join(server: Server, name: str, room: str = "lobby", viewport: dict | None = None) -> Page:
        context = browser.new_context(viewport=viewport or {"width": 1000, "height": 640})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"{name}: script error: {error}"))

        def dismiss(dialog: Dialog) -> None:
            problems.append(f"{name}: a dialog opened: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", dismiss)
        page.goto(server.url)
        page.fill("#join [name=name]", name)
        page.fill("#join [name=room]", room)
        page.click("#join button")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        return page

    yield join
    for context in contexts:
        context.close()
    assert not problems
