"""A host app that sets Switchboard up wrongly does not start, and says why.

Each is started for real, under Gunicorn (the output is Gunicorn's log) or as plain Python.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.hostapp.running import HostServer
from tests.integration.servers import ROOT

ALREADY_SET_UP = "Switchboard is already set up on this app: call init_app once, with one extension per app"
NEEDS_GEVENT = "Switchboard needs gevent: run it under Gunicorn with its worker"


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            "route_at_the_socket_path",
            "the app already has a route at /rt/ws: mount Switchboard under another url_prefix",
        ),
        ("two_extensions", ALREADY_SET_UP),
        ("init_app_twice", ALREADY_SET_UP),
    ],
)
def test_gunicorn_refuses_to_start_a_host_app_set_up_wrongly(tmp_path, factory, message):
    server = HostServer(tmp_path, app=f"tests.hostapp.broken:{factory}()")
    try:
        assert server.wait_exit() != 0
        assert message in server.log()
    finally:
        server.stop()


def test_gunicorns_sync_worker_is_refused_with_the_reason(tmp_path):
    server = HostServer(tmp_path, worker="sync")
    try:
        assert server.wait_exit() != 0
        assert NEEDS_GEVENT in server.log()
    finally:
        server.stop()


def build_host_app(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the host app and build it in a plain interpreter, with no gevent patching."""
    return subprocess.run(
        [sys.executable, "-c", "from tests.hostapp.host import create_app; create_app()"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_host_app_built_without_gevents_patching_is_refused_with_the_reason():
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "HOSTAPP_"))}
    result = build_host_app(environment)
    assert result.returncode != 0
    assert NEEDS_GEVENT in result.stderr
    # The same app without Switchboard starts fine in the same interpreter: the refusal is the extension's.
    result = build_host_app({**environment, "HOSTAPP_WITHOUT_SWITCHBOARD": "1"})
    assert result.returncode == 0, result.stderr
