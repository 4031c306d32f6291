"""The host app under a real Gunicorn, and an endpoint for the Switchboard it mounts under /rt."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.integration.servers import API_KEY, GUNICORN, ROOT, TOKEN_SECRET, Endpoint, free_port
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


class HostServer:
    """`gunicorn -k WORKER -b 127.0.0.1:PORT APP` from the repository root, with its output kept."""

    def __init__(
        self,
        tmp_path: Path,
        worker: str = "switchboard_server.Worker",
        app: str = HOST_APP,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.switchboard = Mounted(self.port)
        self.log_path = tmp_path / f"host-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "HOSTAPP_"))}
        environment.update(SETTINGS)
        environment.update(env or {})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [GUNICORN, "-k", worker, "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10", app],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> HostServer:
        """Wait until the host's own /me answers (the baseline has no /rt/healthz)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/me", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"the host app did not answer /me:\n{self.log()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """For a start that must fail: Gunicorn's exit status, once it has given up."""
        return self.process.wait(timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
