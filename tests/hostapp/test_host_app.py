"""A host Flask app with Switchboard mounted under /rt, under a real Gunicorn with Switchboard's worker.

The host's own routes, session, templates, big upload, error pages and hooks must answer exactly as
they do in the same app without Switchboard (under Gunicorn's plain gevent worker); under /rt,
real clients of every protocol (the Python client, Node's `ws`, `graphql-ws`, pusher-js, Chromium)
must hear what the host publishes from a plain view and what the HTTP APIs publish.
"""

from __future__ import annotations

import http.cookiejar
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pusher
import pytest
from playwright.sync_api import Browser, expect
from switchboard_client import HTTPClient, connect

from tests.graphql.clients import MESSAGES, NodeGraphQL
from tests.hostapp.running import PREFIX, HostServer
from tests.integration.servers import API_KEY, ROOT
from tests.pusher.backend import APP_ID, KEY, library

BIG = 300 * 1024  # over Switchboard's 64 KiB message limit, under the host's own 4 MiB
HOST_HEADERS = ("Content-Type", "X-Host-Hook", "X-Host-Page")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostServer]:
    """The host app with Switchboard, under Switchboard's worker."""
    server = HostServer(tmp_path_factory.mktemp("host")).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostServer]:
    """The same host app without Switchboard, under Gunicorn's own gevent worker."""
    server = HostServer(
        tmp_path_factory.mktemp("baseline"), worker="gevent", env={"HOSTAPP_WITHOUT_SWITCHBOARD": "1"}
    ).wait_ready()
    yield server
    server.stop()


class Browsing:
    """One visitor of the host app: urllib with a cookie jar, every answer kept as plain values."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with self._opener.open(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def form(self, path: str, **fields: str) -> tuple[int, dict[str, str], bytes]:
        body = urllib.parse.urlencode(fields).encode()
        return self.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})


def multipart(name: str, filename: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def visit(base: str) -> list[tuple[str, int, dict[str, str], bytes]]:
    """A visitor's tour of the host's own pages; each answer as (step, status, host headers, body)."""
    visitor = Browsing(base)
    upload, upload_headers = multipart("file", "big.bin", b"u" * BIG)
    steps = {
        "home, anonymous": lambda: visitor.request("GET", "/"),
        "login": lambda: visitor.form("/login", name="ann"),
        "login without a name": lambda: visitor.form("/login", name=""),
        "me": lambda: visitor.request("GET", "/me"),
        "home, logged in": lambda: visitor.request("GET", "/"),
        "wrong method": lambda: visitor.request("POST", "/me", b""),
        "multipart upload": lambda: visitor.request("POST", "/upload", upload, upload_headers),
        "raw upload": lambda: visitor.request("POST", "/upload", b"r" * BIG, {"Content-Type": "text/plain"}),
        "no such page": lambda: visitor.request("GET", "/no/such/page"),
        "no such page under /rt": lambda: visitor.request("GET", PREFIX + "/no-such-page"),
        "no such page at the prefix": lambda: visitor.request("GET", PREFIX),
    }
    seen = []
    for step, call in steps.items():
        status, headers, body = call()
        seen.append((step, status, {name: headers.get(name) for name in HOST_HEADERS}, body))
    cookies = sorted((cookie.name, cookie.path, cookie.has_nonstandard_attr("HttpOnly")) for cookie in visitor.jar)
    seen.append(("cookies", 0, {}, repr(cookies).encode()))
    return seen


# -- the host app, unchanged ----------------------------------------------------------------------


def test_the_host_app_answers_exactly_as_it_does_without_switchboard(host, baseline):
    mounted, alone = visit(host.url), visit(baseline.url)
    assert mounted == alone
    # And what the tour saw is the host's own: its session, template, upload size, 404 page, hook.
    seen = {step: (status, headers, body) for step, status, headers, body in mounted}
    assert seen["me"] == (200, {**seen["me"][1], "X-Host-Hook": "tagged"}, b'{"tagged":true,"user":"ann"}\n')
    assert b'<p id="user">ann</p>' in seen["home, logged in"][2]
    assert json.loads(seen["multipart upload"][2]) == json.loads(seen["raw upload"][2]) == {"size": BIG}
    for step in ("no such page", "no such page under /rt", "no such page at the prefix"):
        status, headers, body = seen[step]
        assert (status, headers["Content-Type"], headers["X-Host-Page"]) == (
            404,
            "text/html; charset=utf-8",
            "not-found",
        )
        assert b"The host app has no page at" in body


def test_switchboard_routes_keep_their_own_limit_and_json_errors_and_the_host_hook_still_runs(host):
    visitor = Browsing(host.switchboard.url)
    big = json.dumps({"channel": "room", "data": "x" * BIG}).encode()
    status, headers, body = visitor.request(
        "POST", "/api/publish", big, {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    )
    assert (status, headers["Content-Type"], json.loads(body)["code"]) == (413, "application/json", "too_large")
    status, headers, body = visitor.request("GET", "/metrics")  # off unless asked for
    assert (status, json.loads(body)["code"]) == (404, "not_found")
    status, headers, body = visitor.request("GET", "/healthz")
    assert (status, json.loads(body)["status"], headers["X-Host-Hook"]) == (200, "ok", "tagged")


# -- under /rt: real clients of every protocol ----------------------------------------------------


def logged_in(host: HostServer, name: str) -> Browsing:
    visitor = Browsing(host.url)
    assert visitor.form("/login", name=name)[0] == 200
    return visitor


def notify(visitor: Browsing, channel: str, text: str, event: str | None = None) -> int:
    """Publish through the host's own /notify view; the offset it answers with."""
    fields = {"channel": channel, "text": text, **({"event": event} if event else {})}
    status, _, body = visitor.form("/notify", **fields)
    assert status == 200, body
    return json.loads(body)["offset"]


def test_a_whole_handshake_under_the_prefix_is_answered_before_flask(host):
    """Switchboard's worker takes a whole, acceptable /rt/ws handshake itself; one it would refuse
    goes through Gunicorn and Flask (and the host's hook) to the route, which answers 426."""
    head = (
        f"GET {PREFIX}/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: VERSION\r\n\r\n"
    )
    answers = []
    for version in ("13", "8"):
        with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
            sock.sendall(head.replace("VERSION", version).encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(4096)
            answers.append(answer.split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 426 UPGRADE REQUIRED"]
    hooked = json.loads(Browsing(host.url).request("GET", "/hooked")[2])
    assert hooked.get(f"{PREFIX}/ws") == 1  # the refused one alone


def test_the_python_client_hears_the_hosts_view_and_the_http_api(host):
    ann = logged_in(host, "ann")
    endpoint = host.switchboard
    with connect(endpoint.ws_url + "/ws", token=endpoint.token("py-user"), timeout=10) as client:
        assert client.user == "py-user"
        with client.subscribe("presence-py") as subscription:
            offset = notify(ann, "presence-py", "from the view")
            message = subscription.recv(timeout=10)
            assert (message.offset, message.data) == (offset, {"text": "from the view", "by": "ann"})

            with HTTPClient(endpoint.url, api_key=API_KEY) as http:
                offset = http.publish("presence-py", {"text": "from the API"})
            message = subscription.recv(timeout=10)
            assert (message.offset, message.data) == (offset, {"text": "from the API"})

            # The host's views read presence and history through the extension too.
            status, _, body = ann.request("GET", "/channel/presence-py")
            seen = json.loads(body)
            assert status == 200
            assert [member["user"] for member in seen["members"]] == ["py-user"]
            assert seen["offset"] == offset
            held = [(message["offset"], message["data"]) for message in seen["messages"]]
            assert held == [(offset - 1, {"text": "from the view", "by": "ann"}), (offset, {"text": "from the API"})]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("the Node client tests need Node.js 20 or later on PATH (apt-get install -y nodejs)")
    for package in ("ws", "graphql-ws", "pusher-js"):
        if not (ROOT / "node_modules" / package).is_dir():
            pytest.fail(f"the Node client tests need the npm package {package}: run `npm ci`")
    return found


def test_node_ws_holds_a_whole_session_on_the_mounted_socket(host):
    endpoint = host.switchboard
    url = f"{endpoint.ws_url}/ws?token={endpoint.token('node-user')}"
    data = {"text": "héllo from node", "n": 1}
    result = subprocess.run(
        [node(), "tests/client/real_client.mjs", "session", url, "presence-node", json.dumps(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout)
    assert seen["welcome"]["user"] == "node-user"
    assert seen["message"]["data"] == data
    assert seen["message"]["from"] == "node-user"
    assert seen["close"]["code"] == 1000


def test_graphql_ws_hears_the_hosts_view(host):
    node()
    ann = logged_in(host, "ann")
    graphql = NodeGraphQL()
    try:
        graphql.connect("gql", host.switchboard, token=host.switchboard.token("gql-user"))
        graphql.subscribe("gql", "feed", MESSAGES, channel="gql-room")
        wait_for_subscriber(host, "gql-room")
        offset = notify(ann, "gql-room", "to graphql")
        message = graphql.next("feed")["messages"]
        assert (message["offset"], message["data"]) == (offset, {"text": "to graphql", "by": "ann"})
    finally:
        graphql.close()


def wait_for_subscriber(host: HostServer, channel: str, timeout: float = 15.0) -> None:
    """Until the server counts a subscriber on `channel` (a GraphQL subscription has no reply)."""
    deadline = time.monotonic() + timeout
    while True:
        channels = host.switchboard.api("GET", "/api/channels")[1]["channels"]
        if any(entry["name"] == channel and entry["subscribers"] > 0 for entry in channels):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody subscribed to {channel} within {timeout} s")
        time.sleep(0.05)


def trigger_mounted(port: int, channel: str, event: str, data: dict) -> None:
    """The `pusher` library's trigger, signed over the path as the server sees it (with /rt).

    The library has no option for a path prefix: this builds its own request object for the
    mounted path (as pusher-http-php's `path` option does) and sends it with its own backend.
    """
    client = library(port)._pusher_client
    params = {"name": event, "channels": [channel], "data": json.dumps(data)}
    request = pusher.http.Request(client, pusher.http.POST, f"{PREFIX}/apps/{APP_ID}/events", params)
    assert client.http.send_request(request) == {}


def test_pusher_js_hears_the_hosts_view_and_the_pusher_http_api(host):
    ann = logged_in(host, "ann")
    listener = subprocess.Popen(
        [node(), "tests/hostapp/pusher_listener.mjs", host.switchboard.url, KEY, "host-news", "notice", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(listener.stdout.readline()) == {"subscribed": True}
        notify(ann, "host-news", "from the view", event="notice")
        assert json.loads(listener.stdout.readline()) == {"data": {"text": "from the view", "by": "ann"}}
        trigger_mounted(host.port, "host-news", "notice", {"text": "from the pusher library"})
        assert json.loads(listener.stdout.readline()) == {"data": {"text": "from the pusher library"}}
        assert listener.wait(15) == 0, listener.stderr.read()
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        listener.stdout.close()
        listener.stderr.close()


def test_chromium_on_a_host_page_hears_the_hosts_view(host, browser: Browser):
    ann = logged_in(host, "ann")
    context = browser.new_context()
    problems: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(host.url + "/chat")
        expect(page.locator("#status")).to_have_attribute("data-subscribed", "yes")
        notify(ann, "room", "hello, browser")
        expect(page.locator("#messages li")).to_have_text(["ann: hello, browser"])
    finally:
        context.close()
    assert not problems


def test_a_connected_client_is_told_to_come_back_later_when_the_host_app_shuts_down(tmp_path: Path):
    server = HostServer(tmp_path).wait_ready()
    endpoint = server.switchboard
    holder = subprocess.Popen(
        [node(), "tests/client/real_client.mjs", "hold", f"{endpoint.ws_url}/ws", "lobby"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(holder.stdout.readline()) == {"subscribed": True}
        assert server.stop() == 0
        # The host app's worker drains as the standalone server's does (docs/deployment.md).
        close = json.loads(holder.stdout.readline())["close"]
        assert close["code"] == 1012 and close["reason"].startswith("server restarting: reconnect within")
    finally:
        server.stop()
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()
