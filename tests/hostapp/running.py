"""The host app under a real Gunicorn, and an endpoint for the Switchboard it mounts under /rt."""

from __future__ import annotations

from pathlib import Path

from tests.integration.servers import API_KEY, GUNICORN, TOKEN_SECRET, Endpoint, Server, free_port
from tests.pusher.backend import APPS

HOST_APP = "tests.hostapp.host:create_app()"
PREFIX = "/rt"
# The Switchboard settings the tests give through the environment (SWITCHBOARD_*).
SETTINGS = {"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_TOKEN_SECRET": TOKEN_SECRET, "SWITCHBOARD_PUSHER_APPS": APPS}


class Mounted(Endpoint):
    """Switchboard as mounted in the host app: every URL is under /rt."""

    @property
    def url(self) -> str:
        return super().url + PREFIX

    @property
    def ws_url(self) -> str:
        return super().ws_url + PREFIX


class HostServer(Server):
    """`gunicorn -k WORKER -b 127.0.0.1:PORT APP` from the repository root, with its output kept;
    ready once the host's own /me answers (the baseline has no /rt/healthz)."""

    ready_path = "/me"

    def __init__(
        self,
        tmp_path: Path,
        worker: str = "switchboard_server.Worker",
        app: str = HOST_APP,
        env: dict[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        port = free_port()
        command = [
            GUNICORN,
            "-k",
            worker,
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "10",
            app,
        ]
        super().__init__(tmp_path, {**SETTINGS, **(env or {})}, port=port, command=command)
        self.switchboard = Mounted(port)

    def wait_ready(self, timeout: float = 20.0) -> HostServer:
        super().wait_ready(timeout)
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        """For a start that must fail: Gunicorn's exit status, once it has given up."""
        return self.process.wait(timeout)
