"""pusher-js's and Laravel Echo's browser builds, unchanged, in headless Chromium against Switchboard.

The page (tests/pusher/page.html) comes from the application back end (tests/pusher/backend.py),
which also signs the subscriptions, as in a real deployment; the WebSocket goes to Switchboard on
its own port. Here, beside the other browser tests, to share their one Chromium.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.pusher.deployments import Deployment, deploy


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    instance = deploy(tmp_path_factory.mktemp("browser"))
    yield instance
    instance.stop()


@pytest.fixture
def open_page(browser: Browser, deployment: Deployment) -> Iterator[Callable[[], Page]]:
    """A fresh page (a browser context of its own) on the back end's test page; no script errors."""
    contexts, problems = [], []

    def open_page() -> Page:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(deployment.backend.url)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems


def test_pusher_js_in_chromium_subscribes_and_hears_events_and_presence(open_page, deployment):
    port, backend = deployment.server.port, deployment.backend
    ann, ben = open_page(), open_page()
    for page, user in ((ann, "ann"), (ben, "ben")):
        page.evaluate("([port, user]) => usePusher(port, user)", [port, user])
    members = ann.evaluate(
        """async () => {
          const room = client.subscribe("presence-browser");
          const members = await first(room, "pusher:subscription_succeeded");
          window.added = first(room, "pusher:member_added");
          window.news = first(client.subscribe("browser-news"), "headline");
          await first(client.channel("browser-news"), "pusher:subscription_succeeded");
          return members.count;
        }"""
    )
    assert members == 1
    ben.evaluate('() => first(client.subscribe("presence-browser"), "pusher:subscription_succeeded")')
    assert ann.evaluate("() => added") == {"id": "ben", "info": {"name": "Ben"}}
    backend.pusher.trigger("browser-news", "headline", {"title": "From the pusher library"})
    assert ann.evaluate("() => news") == {"title": "From the pusher library"}
    assert ann.evaluate("() => client.connection.socket_id").count(".") == 1


def test_laravel_echo_in_chromium_whispers_on_a_private_channel(open_page, deployment):
    port = deployment.server.port
    ann, ben = open_page(), open_page()
    for page, user in ((ann, "ann"), (ben, "ben")):
        page.evaluate("([port, user]) => useEcho(port, user)", [port, user])
        page.evaluate(
            """() => new Promise((resolve) => {
              window.chat = echo.private("browser-chat").subscribed(resolve);
            })"""
        )
    ben.evaluate('() => { window.whisper = new Promise((resolve) => chat.listenForWhisper("typing", resolve)); }')
    ann.evaluate('() => chat.whisper("typing", {name: "Ann"})')
    assert ben.evaluate("() => whisper") == {"name": "Ann"}
    refused = ann.evaluate(
        """() => new Promise((resolve) => {
          const forger = new Echo.default({broadcaster: "pusher", key: "key1", cluster: "mt1",
            wsHost: "127.0.0.1", wsPort: chat.pusher.config.wsPort, forceTLS: false,
            enabledTransports: ["ws"], auth: {params: {user: "forger"}}});
          forger.private("browser-vault").error(resolve);
        })"""
    )
    assert refused["status"] == 401 and refused["type"] == "AuthError"
