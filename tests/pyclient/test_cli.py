"""The `switchboard` command line, run as a person at a terminal would, against a real server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from switchboard_client import connect

from tests.integration.servers import API_KEY

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [SWITCHBOARD, *args], capture_output=True, text=True, timeout=60, env={**environment, **(env or {})}
    )


class Lines:
    """A long-running command's stdout, a line at a time, with a timeout."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([SWITCHBOARD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(line) for line in self.process.stdout], daemon=True).start()

    def next(self, timeout: float = 15) -> str:
        try:
            return self._lines.get(timeout=timeout).rstrip("\n")
        except queue.Empty:
            ended = self.process.poll() is not None
            raise AssertionError(
                f"no line in {timeout} s" + (f": {self.process.stderr.read()}" if ended else "")
            ) from None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_publish_and_online_over_http_then_tail_from_an_offset(server):
    env = {"SWITCHBOARD_URL": server.url, "SWITCHBOARD_API_KEY": API_KEY}
    published = [run("publish", "cli-room", json.dumps({"n": n}), env=env) for n in range(3)]
    assert [p.returncode for p in published] == [0, 0, 0], published[0].stderr
    offsets = [int(p.stdout) for p in published]
    tail = Lines("--url", server.ws_url + "/ws", "tail", "cli-room", "--since", str(offsets[0]))
    try:
        assert tail.next() == f'#{offsets[1]} (service): {{"n":1}}'
        assert tail.next() == f'#{offsets[2]} (service): {{"n":2}}'
        with connect(server.ws_url + "/ws", server.token("ann", info={"desk": 4})) as ann:
            ann.subscribe("presence-cli")
            ann.publish("cli-room", "live")
            assert tail.next() == f'#{offsets[2] + 1} ann: "live"'
            online = run("online", "presence-cli", env=env)
            assert (online.returncode, online.stdout) == (0, 'ann {"desk":4}\n')
    finally:
        tail.stop()


def test_over_the_websocket_with_a_token_and_json_lines(server):
    token = server.token("cat")
    tail = Lines("--url", server.url, "--token", token, "tail", "presence-cli-ws", "--json")
    try:
        server.wait_until(lambda: server.api("GET", "/api/channels/presence-cli-ws/presence")[1]["members"])
        with connect(server.ws_url + "/ws", server.token("dan")) as dan:
            dan.subscribe("presence-cli-ws")
            assert json.loads(tail.next()) == {
                "type": "join",
                "channel": "presence-cli-ws",
                "user": "dan",
                "info": None,
            }
            published = run("--url", server.url, "--token", token, "publish", "presence-cli-ws", '"hello"')
            assert published.returncode == 0, published.stderr
            line = json.loads(tail.next())
            assert (line["offset"], line["from"], line["data"]) == (int(published.stdout), "cat", "hello")
            online = run("--url", server.url, "--token", token, "online", "presence-cli-ws")
            assert online.stdout.split() == ["cat", "dan"]
    finally:
        tail.stop()


def test_mistakes_get_a_clear_message_and_a_status(server):
    not_json = run("--url", server.url, "publish", "room", "hello")
    assert not_json.returncode == 2 and "not JSON" in not_json.stderr and "quotes" in not_json.stderr
    refused = run("--url", server.url, "publish", "has spaces", "1")
    assert refused.returncode == 1 and "invalid_channel" in refused.stderr
    wrong_key = run("--url", server.url, "--api-key", "nope", "online", "room")
    assert wrong_key.returncode == 1 and "unauthorized" in wrong_key.stderr
    bad_url = run("--url", "ftp://example", "online", "room")
    assert bad_url.returncode == 2 and "--url" in bad_url.stderr
    usage = run("tail")
    assert usage.returncode == 2 and "channel" in usage.stderr
