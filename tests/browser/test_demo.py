"""The demo page, driven in headless Chromium: chat, presence, a restart, hostile text."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import DEMO
from tests.integration.servers import ROOT, Server

SCREENSHOT = ROOT / "docs" / "demo.png"
PHONE = {"width": 375, "height": 667}
# Reconnecting after a restart waits out a backoff delay of up to a few seconds.
RECONNECT_MS = 20_000


def say(page: Page, text: str) -> None:
    page.fill("#composer [name=text]", text)
    page.press("#composer [name=text]", "Enter")


def expect_messages(page: Page, texts: list[str]) -> None:
    """Exactly these messages, in this order, all confirmed by the server."""
    expect(page.locator("#messages li .text")).to_have_text(texts)
    expect(page.locator("#messages li.pending, #messages li.failed")).to_have_count(0)


def test_two_pages_chat_both_ways_and_see_a_services_activity(demo_server, join):
    alice = join(demo_server, "alice")
    bob = join(demo_server, "bob", viewport=PHONE)
    for page in (alice, bob):
        expect(page.locator("#online .name")).to_have_text(["alice", "bob"])

    say(alice, "Hi Bob! Is the deploy done?")
    expect_messages(bob, ["Hi Bob! Is the deploy done?"])
    say(bob, "Watching it on the activity panel")
    for page in (alice, bob):
        expect_messages(page, ["Hi Bob! Is the deploy done?", "Watching it on the activity panel"])
        expect(page.locator("#messages li .from")).to_have_text(["alice", "bob"])

    for step in ("build passed", "deploy finished"):
        status, _ = demo_server.api("POST", "/api/publish", {"channel": "activity", "data": {"billing": step}})
        assert status == 200
    for page in (alice, bob):
        expect(page.locator("#activity .data")).to_have_text(
            ['{"billing":"build passed"}', '{"billing":"deploy finished"}']
        )

    say(alice, "Great, thanks!")
    expect_messages(bob, ["Hi Bob! Is the deploy done?", "Watching it on the activity panel", "Great, thanks!"])
    alice.screenshot(path=SCREENSHOT)
    # On the phone: one column, nothing wider than the screen, the composer above the fold.
    assert bob.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(bob.locator("#composer button")).to_be_in_viewport()


def test_online_list_follows_pages_joining_and_closing(demo_server, join):
    alice = join(demo_server, "alice", room="ops")
    expect(alice.locator("#online .name")).to_have_text(["alice"])
    bob = join(demo_server, "bob", room="ops")
    expect(alice.locator("#online .name")).to_have_text(["alice", "bob"])
    expect(bob.locator("#online .you")).to_have_count(1)
    bob.context.close()
    expect(alice.locator("#online .name")).to_have_text(["alice"])


def test_html_in_messages_and_names_is_shown_as_text(demo_server, join):
    hostile = "<img src=x onerror=alert(1)>"
    mallory = join(demo_server, "<b>mallory</b>")
    alice = join(demo_server, "alice")
    say(mallory, hostile)
    demo_server.api("POST", "/api/publish", {"channel": "activity", "data": hostile})
    for page in (mallory, alice):
        expect_messages(page, [hostile])
        expect(page.locator("#messages .from")).to_have_text(["<b>mallory</b>"])
        expect(page.locator("#online .name")).to_have_text(["<b>mallory</b>", "alice"])
        expect(page.locator("#activity .data")).to_have_text([f'"{hostile}"'])
        assert page.locator("main img, main b").count() == 0


def test_history_that_overlaps_is_shown_once_in_order(tmp_path, join):
    # History holds 5 of 8, so subscribing from offset 0 cannot recover: the page also reloads
    # history over HTTP, and the two deliveries overlap completely.
    server = Server(tmp_path, {**DEMO, "SWITCHBOARD_HISTORY_SIZE": "5"}).wait_ready()
    try:
        for n in range(1, 9):
            server.api("POST", "/api/publish", {"channel": "activity", "data": n})
        page = join(server, "alice")
        expect(page.locator("#activity")).to_have_attribute("data-reloads", "1")
        expect(page.locator("#activity .data")).to_have_text(["4", "5", "6", "7", "8"])
    finally:
        server.stop()


def test_a_server_restart_mid_conversation_loses_nothing_and_shows_nothing_twice(tmp_path, join):
    first = Server(tmp_path, DEMO).wait_ready()
    try:
        alice = join(first, "alice")
        bob = join(first, "bob")
        say(alice, "before 1")
        expect_messages(bob, ["before 1"])
        say(bob, "before 2")
        expect_messages(alice, ["before 1", "before 2"])
    finally:
        first.stop()  # SIGTERM: both pages get close 1012 (the drain)
    for page in (alice, bob):
        expect(page.locator("#status")).not_to_have_attribute("data-state", "connected")

    # Bob stays offline until Alice's message is on the new server, so he can only get it from
    # the history the page reloads when its re-subscription reports recovered:false.
    bob.context.set_offline(True)
    say(alice, "while down")
    expect(alice.locator("#messages li.pending .text")).to_have_text(["while down"])

    second = Server(tmp_path, DEMO, port=first.port).wait_ready()
    try:
        expect(alice.locator("#status")).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
        expect_messages(alice, ["before 1", "before 2", "while down"])
        expect(bob.locator("#status")).not_to_have_attribute("data-state", "connected")
        bob.context.set_offline(False)
        expect(bob.locator("#status")).to_have_attribute("data-state", "connected", timeout=RECONNECT_MS)
        expect(bob.locator("#messages")).to_have_attribute("data-reloads", "1")
        expect_messages(bob, ["before 1", "before 2", "while down"])

        say(bob, "after 1")
        expect_messages(alice, ["before 1", "before 2", "while down", "after 1"])
        say(alice, "after 2")
        for page in (alice, bob):
            expect_messages(page, ["before 1", "before 2", "while down", "after 1", "after 2"])
            expect(page.locator("#online .name")).to_have_text(["alice", "bob"])
            expect(page.locator("#online")).not_to_have_class(re.compile("stale"))
    finally:
        second.stop()
