"""The package as a user gets it: a wheel built from the checkout, installed into a fresh virtual
environment, and its `switchboard-server` command run from outside the checkout.

The wheel is built from a copy of the files it is made of, so setuptools' build/ and *.egg-info
land in the copy and the checkout stays as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.servers import ROOT, Endpoint, free_port

PACKAGE_FILES = ("pyproject.toml", "README.md")
KEY = "wheel-test-key"


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=outside_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def outside_env() -> dict[str, str]:
    """The environment without this checkout's settings or import paths."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SWITCHBOARD_", "PYTHON", "VIRTUAL_ENV")) and name != "PORT"
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin` folder of a fresh virtual environment with only the wheel (and its dependencies)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(
        ROOT / "switchboard_server", source / "switchboard_server", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in PACKAGE_FILES:
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", source, cwd=work)
    (wheel,) = (work / "dist").glob("switchboard_server-*.whl")
    run(sys.executable, "-m", "venv", work / "venv", cwd=work)
    bin_dir = work / "venv" / "bin"
    run(bin_dir / "python", "-m", "pip", "install", wheel, cwd=work)
    return bin_dir


def test_the_command_lists_its_main_options(installed: Path):
    usage = run(installed / "switchboard-server", "--help", cwd=installed)
    for option in ("--port", "--workers", "--redis-url", "--api-key"):
        assert option in usage


@pytest.fixture
def server(installed: Path, tmp_path: Path) -> Iterator[tuple[Endpoint, subprocess.Popen]]:
    """`switchboard-server --port P --api-key K`, run from a folder that is not the checkout."""
    endpoint = Endpoint(free_port())
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen(
        [installed / "switchboard-server", "--port", str(endpoint.port), "--api-key", KEY],
        cwd=tmp_path,
        env=outside_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while endpoint.health()[0] != 200:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        yield endpoint, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


def test_the_installed_server_serves_and_drains_on_exit(server, installed: Path):
    endpoint, process = server
    status, health = endpoint.health()
    assert (status, health["status"]) == (200, "ok")
    # It is the installed copy that answers, not this checkout.
    location = run(
        installed / "python", "-c", "import switchboard_server; print(switchboard_server.__file__)", cwd=installed
    )
    assert not Path(location.strip()).is_relative_to(ROOT)

    with endpoint.client("/ws") as client:
        assert client.welcome["type"] == "welcome"
        assert client.command("subscribe", channel="wheel")["type"] == "reply"
        status, body = endpoint.api("POST", "/api/publish", {"channel": "wheel", "data": {"n": 1}}, key=KEY)
        assert status == 200, body
        message = client.next_push("message")
        assert (message["offset"], message["data"]) == (body["offset"], {"n": 1})

        process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                json.loads(client.ws.recv(timeout=30))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # drained: come back later
    assert process.wait(30) == 0
