"""Runs the Node tests of pusher-js and Laravel Echo (tests/pusher/node/*.test.mjs), unchanged and
pinned in package.json, against a real Switchboard (two workers sharing Redis, so clients of one
test land on different workers) and the application back end that signs their subscriptions."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.servers import API_KEY, ROOT, RedisServer
from tests.pusher.backend import KEY, OTHER_KEY


def test_pusher_js_and_laravel_echo_in_node(start_deployment, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("the Pusher client tests need Node.js 20 or later on PATH (apt-get install -y nodejs)")
    for package in ("pusher-js", "laravel-echo", "ws"):
        if not (ROOT / "node_modules" / package).is_dir():
            pytest.fail(f"the Pusher client tests need the npm package {package}: run `npm ci`")
    deployment = start_deployment(redis=RedisServer(tmp_path))
    env = {
        **os.environ,
        "SWITCHBOARD_URL": deployment.server.url,
        "SWITCHBOARD_API_KEY": API_KEY,
        "PUSHER_BACKEND_URL": deployment.backend.url,
        "PUSHER_KEY": KEY,
        "PUSHER_OTHER_KEY": OTHER_KEY,
    }
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "--test-concurrency=1", "tests/pusher/node/"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ℹ pass 10\nℹ fail 0" in result.stdout, result.stdout  # every test ran, none failed
