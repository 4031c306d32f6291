"""examples/ as the README runs them: independent processes next to a server, watched by a client."""

from __future__ import annotations

import os
import subprocess
import sys

from switchboard_client import connect

from tests.integration.servers import API_KEY, ROOT


def example(name: str, *args: str, server) -> tuple[list[str], dict[str, str]]:
    """The command line and environment to run examples/<name> against `server`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_URL=server.url, SWITCHBOARD_API_KEY=API_KEY)
    return [sys.executable, str(ROOT / "examples" / name), *args], env


def test_the_activity_feed_publishes_over_http(server):
    with connect(server.ws_url + "/ws") as watcher:
        activity = watcher.subscribe("activity")
        argv, env = example("activity_feed.py", "--count", "3", "--every", "0", server=server)
        feed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert feed.returncode == 0, feed.stderr
        received = [activity.recv(10) for _ in range(3)]
        assert [m.offset for m in received] == [int(line) for line in feed.stdout.split()]
        assert [(m.data["n"], m.data["event"], m.sender) for m in received] == [
            (1, "order placed", None),
            (2, "payment captured", None),
            (3, "build finished", None),
        ]


def test_the_presence_announcer_says_who_joined_and_left(server):
    argv, env = example("presence_announcer.py", "--room", "lobby", server=server)
    announcer = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with connect(server.ws_url + "/ws", server.token("watcher")) as watcher:
            room = watcher.subscribe("presence-lobby")

            def announcer_is_in() -> bool:
                return "announcer" in [m.user for m in watcher.presence("presence-lobby")]

            server.wait_until(lambda: announcer_is_in() or announcer.poll() is not None)
            assert announcer.poll() is None, announcer.stderr.read()
            with connect(server.ws_url + "/ws", server.token("ann")) as ann:
                ann.subscribe("presence-lobby")
                joined = room.recv(10)
            left = room.recv(10)
            assert [(m.sender, m.data) for m in (joined, left)] == [
                ("announcer", {"text": "ann joined"}),
                ("announcer", {"text": "ann left"}),
            ]
    finally:
        announcer.terminate()
        announcer.wait(10)
