"""The chat example (examples/chat) under a real Gunicorn, used by two people in Chromium.

Ann and Bob log in with the app's own form, meet in a room, see each other online and typing,
talk; the publish hook refuses what it must and stores the rest in the app's SQLite database,
which the test reads at the end; a room with more than a page of history is read back through
the `older` RPC.
"""

from __future__ import annotations

import ast
import http.cookiejar
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.hostapp.running import HostServer
from tests.integration.servers import ROOT, Client

CHAT_APP = "examples.chat.app:create_app()"
HOOKS = ROOT / "examples" / "chat" / "realtime.py"
GUIDE = ROOT / "docs" / "example-chat.md"


class ChatServer(HostServer):
    """`gunicorn -k switchboard_server.Worker ... 'examples.chat.app:create_app()'` on a database
    of its own; ready once its home page answers."""

    ready_path = "/"

    def __init__(self, tmp_path: Path) -> None:
        self.database = tmp_path / "chat.sqlite3"
        super().__init__(tmp_path, app=CHAT_APP, env={"CHAT_DATABASE_URL": f"sqlite:///{self.database}"})

    def stored(self, room: str) -> list[tuple[str, str]]:
        """(user, text) of every message the app stored for `room`, oldest first."""
        with sqlite3.connect(self.database) as database:
            query = "SELECT user, text FROM message WHERE room = ? ORDER BY id"
            return database.execute(query, (room,)).fetchall()


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path_factory.mktemp("chat")).wait_ready()
    yield server
    server.stop()


def enter(browser: Browser, chat: ChatServer, name: str, room: str) -> tuple[BrowserContext, Page]:
    """A person of their own (a browser context: their own cookies) logs in and opens `room`."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(chat.url + "/")
    page.fill("input[name=name]", name)
    page.fill("input[name=room]", room)
    page.click("#login button")
    expect(page).to_have_url(f"{chat.url}/rooms/{room}")
    expect(page.locator("#status")).to_have_attribute("data-ready", "yes")
    return context, page


def send(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#send button")


def test_two_people_chat_and_what_they_say_is_checked_and_stored(chat, browser: Browser):
    ann_context, ann = enter(browser, chat, "ann", "lobby")
    bob_context, bob = enter(browser, chat, "bob", "lobby")
    try:
        expect(ann.locator("#online li")).to_have_text(["ann", "bob"])  # bob's join
        expect(bob.locator("#online li")).to_have_text(["ann", "bob"])  # the presence() list

        ann.locator("#text").press_sequentially("hel")
        expect(bob.locator("#typing")).to_have_text("ann is typing…")

        send(ann, "   hello, bob  ")
        expect(bob.locator("#messages li")).to_have_text(["ann: hello, bob"])
        expect(ann.locator("#messages li")).to_have_text(["ann: hello, bob"])

        send(ann, "   ")
        expect(ann.locator("#problem")).to_have_text("empty message: type something first")
        send(bob, "x" * 501)
        expect(bob.locator("#problem")).to_have_text("too long: 501 characters, 500 at most")
        assert bob.input_value("#text") == "x" * 501  # kept, to be shortened

        bob_context.close()  # bob closes his page
        expect(ann.locator("#online li")).to_have_text(["ann"])
        expect(ann.locator("#messages li")).to_have_text(["ann: hello, bob"])
    finally:
        ann_context.close()
    assert chat.stored("lobby") == [("ann", "hello, bob")]


def test_a_long_history_is_read_back_fifty_at_a_time(chat, browser: Browser):
    """60 messages sent through the app's own publish path (a logged-in WebSocket): the room opens
    on the newest 50, and "load older" brings the other 10 through the RPC."""
    with logged_in_socket(chat, "carol") as carol:
        for number in range(1, 61):
            reply = carol.command("publish", channel="presence-archive", data={"text": f"note {number}"})
            assert reply["type"] == "reply", reply
    context, page = enter(browser, chat, "dan", "archive")
    try:
        messages = page.locator("#messages li")
        expect(messages).to_have_count(50)
        expect(messages.first).to_have_text("carol: note 11")
        expect(messages.last).to_have_text("carol: note 60")
        page.click("#older")
        expect(messages).to_have_count(60)
        expect(messages.first).to_have_text("carol: note 1")
        expect(page.locator("#older")).to_be_hidden()  # nothing older left
    finally:
        context.close()
    assert chat.stored("archive") == [("carol", f"note {number}") for number in range(1, 61)]


def test_a_socket_without_a_login_is_refused(chat):
    client = chat.switchboard.client("/ws")
    try:
        assert (client.welcome["type"], client.welcome["code"], client.welcome["message"]) == (
            "error",
            "forbidden",
            "log in first",
        )
    finally:
        client.close()


def test_typing_goes_through_its_route_only(chat):
    """Clients cannot publish on a typing- channel themselves, and the typing route turns away
    a room name it would not make a channel of."""
    with logged_in_socket(chat, "dan") as dan:
        refused = dan.command("publish", channel="typing-archive", data={"typing": True})
        assert (refused["type"], refused["message"]) == ("error", "this chat publishes in rooms only (presence-<room>)")
    cookie = {"Cookie": login(chat, "dan")}
    with connect(chat.switchboard.ws_url + "/ws/typing/no%20such", additional_headers=cookie) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "no such room")


def login(chat: ChatServer, name: str) -> str:
    """The session cookie of a login through the app's form, as a Cookie header."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"name": name, "room": "archive"}).encode()
    opener.open(chat.url + "/login", data=form, timeout=10).close()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def logged_in_socket(chat: ChatServer, name: str) -> closing[Client]:
    """A WebSocket to /rt/ws carrying the session cookie of a login through the app's form."""
    client = chat.switchboard.client("/ws", additional_headers={"Cookie": login(chat, name)})
    assert client.welcome["user"] == name, client.welcome
    return closing(client)


def test_the_guide_shows_each_hook_as_the_app_has_it():
    """docs/example-chat.md quotes every function of realtime.py, decorators included, verbatim."""
    source = HOOKS.read_text()
    lines, guide = source.splitlines(), GUIDE.read_text()
    functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    assert [function.name for function in functions] == ["who", "keep", "checked_text", "typing", "older"]
    for function in functions:
        start = min(node.lineno for node in [*function.decorator_list, function])
        assert "\n".join(lines[start - 1 : function.end_lineno]) in guide, function.name
