"""The same publish load over 1, 2 and 3 Redis instances: does each instance's load divide?

For each instance count, start that many redis-servers and Switchboard (two Gunicorn workers)
with SWITCHBOARD_REDIS_URL listing them all, open subscribers over many channels, publish to every
channel round after round, and read for each redis-server the CPU it spent (utime + stime from
/proc/<pid>/stat) and the commands it processed (INFO stats), over the publishing only. With the
channels spread by a consistent hash, each of N instances should take about 1/N of the work.

Run from the repository root:
    .venv/bin/python -m bench.redis_shards                 # full sizes
    .venv/bin/python -m bench.redis_shards --quick         # a smoke check, not a measurement
Writes bench/results/redis_shards/results.md and results.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from bench.loadgen import PUB, LoadGen, channel_name, raise_nofile
from bench.peers.switchboard_redis import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
SIZES = {"full": {"n": 10000, "channels": 1000, "rounds": 30}, "quick": {"n": 500, "channels": 100, "rounds": 5}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Instance:
    """One redis-server on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)
        self.client = redis.Redis(port=self.port)

    def sample(self) -> tuple[float, int]:
        return cpu_seconds(self.process.pid), int(self.client.info("stats")["total_commands_processed"])

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


def start_switchboard(instances: list[Instance]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        SWITCHBOARD_REDIS_URL=",".join(f"redis://127.0.0.1:{instance.port}/0" for instance in instances),
        SWITCHBOARD_WORKERS="2",
        SWITCHBOARD_RATE_MESSAGES="0",
        SWITCHBOARD_LOG_LEVEL="warning",
    )
    gunicorn = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, start_new_session=True
    )
    wait_port(port)
    return gunicorn, port


def measure(count: int, size: dict) -> dict:
    """One run over `count` instances: per instance, CPU seconds and commands per second."""
    instances = [Instance() for _ in range(count)]
    gunicorn, port = start_switchboard(instances)
    try:
        channels = [channel_name(i) for i in range(size["channels"])]
        lg = LoadGen(port)
        opened = lg.open(size["n"], channels=channels, timeout=120)
        publisher = lg.open(1, role=PUB, timeout=30).conns[0]
        before = [instance.sample() for instance in instances]
        started = time.monotonic()
        for _ in range(size["rounds"]):
            target = lg.delivered + len(opened.conns)
            lg.publish(publisher, channels)
            if not lg.wait_deliveries(target, 60):
                break
        seconds = time.monotonic() - started
        after = [instance.sample() for instance in instances]
        lg.shutdown()
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(15)
        for instance in instances:
            instance.stop()
    return {
        "instances": count,
        "seconds": seconds,
        "deliveries": lg.delivered,
        "expected": len(opened.conns) * size["rounds"],
        "cpu_s": [a[0] - b[0] for a, b in zip(after, before, strict=True)],
        "commands_per_s": [(a[1] - b[1]) / seconds for a, b in zip(after, before, strict=True)],
    }


def table(runs: list[dict]) -> str:
    lines = [
        "| instances | deliveries | each instance's CPU (s) | each instance's commands/s | busiest instance's share of the CPU |",
        "|--:|--:|---|---|--:|",
    ]
    for run in runs:
        cpu = ", ".join(f"{value:.2f}" for value in run["cpu_s"])
        commands = ", ".join(f"{value:,.0f}" for value in run["commands_per_s"])
        total = sum(run["cpu_s"])
        share = f"{max(run['cpu_s']) / total:.0%}" if total else "n/a (too little to measure)"
        lines.append(f"| {run['instances']} | {run['deliveries']}/{run['expected']} | {cpu} | {commands} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "redis_shards"))
    options = parser.parse_args(argv)
    raise_nofile()
    size = SIZES["quick" if options.quick else "full"]
    runs = [measure(count, size) for count in (1, 2, 3)]
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"size": size, "runs": runs}, indent=2))
    heading = (
        f"{size['n']} subscribers over {size['channels']} channels, {size['rounds']} rounds of one publish"
        " per channel, two Gunicorn workers; per redis-server, over the publishing only:\n\n"
    )
    report = heading + table(runs)
    (out / "results.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
