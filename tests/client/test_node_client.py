"""Runs the client's Node tests (tests/client/*.test.mjs) against two real servers.

Two, because the Node tests play a server restart by putting the second server (another epoch,
offsets from 1 again) behind the proxy the client talks to.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.servers import ROOT, Server


def test_client_reconnect_and_recovery(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("the client tests need Node.js 20 or later on PATH (apt-get install -y nodejs)")
    if not (ROOT / "node_modules" / "ws").is_dir():
        pytest.fail("the client tests need the npm package `ws`: run `npm ci` (or `make browser-deps`)")
    servers = [Server(tmp_path, {"SWITCHBOARD_DEMO": "1"}) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        env = {**os.environ, "SWITCHBOARD_TEST_URL": servers[0].url, "SWITCHBOARD_TEST_OTHER_URL": servers[1].url}
        result = subprocess.run(
            [node, "--test", "--test-reporter=spec", "tests/client/"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for server in servers:
            server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
