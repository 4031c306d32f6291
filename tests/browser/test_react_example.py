"""examples/react-graphql in headless Chromium: chat and presence over /ws, an activity feed over
a GraphQL subscription (the graphql-ws client), built by Vite the way the README says."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DEMO
from tests.integration.servers import ROOT, Server

PAGE = "/examples/react-graphql/"
RECONNECT_MS = 20_000


@pytest.fixture(scope="module")
def built() -> None:
    """`npm run build:example`, so the page tested is the one in the sources."""
    npm = shutil.which("npm")
    if npm is None or not (ROOT / "node_modules" / "vite").is_dir():
        pytest.fail("the React example needs npm and its packages: run `npm ci` (make test does)")
    result = subprocess.run([npm, "run", "build:example"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def open_room(browser: Browser, built) -> Iterator[Callable[[Server, str], Page]]:
    contexts, problems = [], []

    def open_room(server: Server, name: str) -> Page:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"{name}: {error}"))
        page.goto(server.url + PAGE)
        page.fill("#join [name=name]", name)
        page.fill("#join [name=room]", "garden")
        page.click("#join button")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        return page

    yield open_room
    for context in contexts:
        context.close()
    assert not problems


def say(page: Page, text: str) -> None:
    page.fill("#composer [name=text]", text)
    page.press("#composer [name=text]", "Enter")


def test_chat_presence_and_a_graphql_activity_feed(tmp_path, open_room):
    server = Server(tmp_path, DEMO).wait_ready()
    try:
        server.api("POST", "/api/publish", {"channel": "activity", "data": "deploy started"})
        ann = open_room(server, "ann")
        ben = open_room(server, "ben")
        for page in (ann, ben):
            expect(page.locator("#online .name")).to_have_text(["ann", "ben"])
            expect(page.locator("#activity li")).to_have_text(["deploy started"])  # from history
        say(ann, "Hello from React")
        say(ben, "Hi ann")
        for page in (ann, ben):
            expect(page.locator("#messages .text")).to_have_text(["Hello from React", "Hi ann"])
            expect(page.locator("#messages .from")).to_have_text(["ann", "ben"])
        # A service over HTTP, a native client, a GraphQL mutation: the feed shows each once.
        server.api("POST", "/api/publish", {"channel": "activity", "data": "deploy finished"})
        with server.client() as native:
            native.command("publish", channel="activity", data={"build": 42})
        mutation = '{"query": "mutation { publish(channel: \\"activity\\", data: \\"from GraphQL\\") { offset } }"}'
        status, _ = server.api("POST", "/graphql", raw=mutation.encode())
        assert status == 200
        feed = ["deploy started", "deploy finished", '{"build":42}', "from GraphQL"]
        for page in (ann, ben):
            expect(page.locator("#activity li")).to_have_text(feed)
        ben.close()
        expect(ann.locator("#online .name")).to_have_text(["ann"])

        # A restart loses the in-memory history: the feed says nothing false, starts again from
        # the new server's history, and goes on live; the chat reconnects by itself.
        server.stop()
        server = Server(tmp_path, DEMO, port=server.port).wait_ready()
        server.api("POST", "/api/publish", {"channel": "activity", "data": "after the restart"})
        expect(ann.locator("#status")).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
        expect(ann.locator("#activity li")).to_have_text(["after the restart"], timeout=RECONNECT_MS)
        server.api("POST", "/api/publish", {"channel": "activity", "data": "live again"})
        expect(ann.locator("#activity li")).to_have_text(["after the restart", "live again"])
        expect(ann.locator("#activity-problem")).to_have_text("")
    finally:
        server.stop()
