"""Chromium's own WebSocket, no client library: a whole session, a clean close, and a shutdown.

The page talks to the server directly with `new WebSocket(url)`: it reads its welcome, subscribes,
publishes, gets its own message back, and closes; the close event must carry the server's 1000 and
be clean. Held open while the server is stopped with SIGTERM, it must be told 1012 (the drain's
"reconnect later"), cleanly.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.integration import conftest as integration
from tests.integration.servers import Server
from tests.integration.test_real_clients import DATA

# The integration tests' servers: `server` (both brokers) and `start_server`.
server = integration.server
start_server = integration.start_server

# Runs in the page. `window.switchboard` is one socket with `next(type | id)` to await a frame;
# a frame that never comes fails after 10 s, and so does the socket closing first.
OPEN = """async (url) => {
  const ws = new WebSocket(url);
  const inbox = [];
  let wake = () => {};
  ws.onmessage = (event) => { inbox.push(JSON.parse(event.data)); wake(); };
  const closed = new Promise((resolve) => {
    ws.onclose = (event) => resolve({code: event.code, wasClean: event.wasClean});
  });
  const next = async (wanted) => {
    const matches = typeof wanted === "number"
      ? (frame) => frame.id === wanted && (frame.type === "reply" || frame.type === "error")
      : (frame) => frame.type === wanted;
    let timer;
    const late = new Promise((resolve) => { timer = setTimeout(resolve, 10000, "late"); });
    try {
      for (;;) {
        const index = inbox.findIndex(matches);
        if (index >= 0) return inbox.splice(index, 1)[0];
        const arrived = new Promise((resolve) => { wake = resolve; });
        const ended = await Promise.race([arrived.then(() => null), closed, late]);
        if (ended === "late") throw new Error(`no ${wanted} within 10 s`);
        if (ended) throw new Error(`closed with ${ended.code} while waiting for ${wanted}`);
      }
    } finally {
      clearTimeout(timer);
    }
  };
  const send = (command) => ws.send(JSON.stringify(command));
  window.switchboard = {ws, next, send, closed};
  return await next("welcome");
}"""

SUBSCRIBE = """async (channel) => {
  const {send, next} = window.switchboard;
  send({type: "subscribe", channel, id: 1});
  return await next(1);
}"""

PUBLISH_AND_HEAR_IT = """async ({channel, data}) => {
  const {send, next} = window.switchboard;
  send({type: "publish", channel, data, id: 2});
  const published = await next(2);
  return {published, message: await next("message")};
}"""

CLOSE = """async () => {
  window.switchboard.ws.close(1000, "done");
  return await window.switchboard.closed;
}"""

SERVER_CLOSED = "async () => await window.switchboard.closed"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def visit(page: Page, target: Server, user: str) -> dict:
    """Open a page on the server's origin, as an app would be, and connect as `user`."""
    page.goto(target.url + "/healthz")
    return page.evaluate(OPEN, f"{target.ws_url}/ws?token={target.token(user)}")


def test_chromium_subscribes_publishes_hears_itself_and_closes_with_1000(page, server):
    welcome = visit(page, server, "chromium-user")
    assert welcome["type"] == "welcome" and welcome["user"] == "chromium-user"
    assert page.evaluate(SUBSCRIBE, "room-chromium")["type"] == "reply"

    heard = page.evaluate(PUBLISH_AND_HEAR_IT, {"channel": "room-chromium", "data": DATA})
    assert heard["published"]["type"] == "reply", heard
    assert heard["message"] == {
        "type": "message",
        "channel": "room-chromium",
        "offset": heard["published"]["result"]["offset"],
        "data": DATA,
        "from": "chromium-user",
    }
    assert page.evaluate(CLOSE) == {"code": 1000, "wasClean": True}


def test_chromium_is_told_1012_when_the_server_shuts_down(page, start_server):
    target = start_server()
    assert visit(page, target, "chromium-user")["type"] == "welcome"
    assert page.evaluate(SUBSCRIBE, "lobby")["type"] == "reply"
    assert target.api("GET", "/api/channels")[1]["channels"] == [{"name": "lobby", "subscribers": 1}]

    assert target.stop(signal.SIGTERM) == 0
    assert page.evaluate(SERVER_CLOSED) == {"code": 1012, "wasClean": True}
