"""The same publish load over 1, 2 and 3 Redis instances, then a 3-master Redis Cluster: does
each instance's load divide?

For each instance count, start that many redis-servers and Switchboard (two Gunicorn workers)
with SWITCHBOARD_REDIS_URL listing them all, open subscribers over many channels, publish to every
channel round after round, and read for each redis-server the CPU it spent (utime + stime from
/proc/<pid>/stat) and the commands it processed (INFO stats), over the publishing only. With the
channels spread by a consistent hash, each of N instances should take about 1/N of the work.
The last run does the same over three cluster masters (no replicas) joined by redis-cli, with
Switchboard given a redis+cluster:// URL: its partitions spread over the masters' slot ranges.

Run from the repository root:
    .venv/bin/python -m bench.redis_shards                 # full sizes
    .venv/bin/python -m bench.redis_shards --quick         # a smoke check, not a measurement
Writes bench/results/redis_shards/results.md and results.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    """One redis-server on a free port, without persistence; a cluster node when given a folder
    for its node file."""

    def __init__(self, cluster_folder: Path | None = None) -> None:
        self.port = free_port()
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no"]  # fmt: skip
        if cluster_folder is not None:
            # The bus on its own free port: the default, port + 10000, may be taken or past 65535.
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                     "--cluster-port", str(free_port()), "--cluster-require-full-coverage", "no"]  # fmt: skip
        self.process = subprocess.Popen(argv, cwd=cluster_folder, stdout=subprocess.DEVNULL)
        wait_port(self.port)
        self.client = redis.Redis(port=self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cluster_ok(self) -> bool:
        return b"cluster_state:ok" in self.client.execute_command("CLUSTER", "INFO", NEVER_DECODE=True)

    def sample(self) -> tuple[float, int]:
        return cpu_seconds(self.process.pid), int(self.client.info("stats")["total_commands_processed"])

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


def standalone(count: int) -> tuple[list[Instance], str]:
    """`count` independent redis-servers and the URL listing them all."""
    instances = [Instance() for _ in range(count)]
    return instances, ",".join(f"redis://{instance.address}/0" for instance in instances)


def cluster(count: int, folder: Path) -> tuple[list[Instance], str]:
    """`count` masters made one cluster by redis-cli (which splits the slots evenly), once every
    node reports cluster_state:ok, and the redis+cluster:// URL naming them."""
    nodes = [Instance(folder) for _ in range(count)]
    redis_cli = shutil.which("redis-cli", path=str(Path(redis_server_binary()).parent)) or "redis-cli"
    try:
        subprocess.run(
            [redis_cli, "--cluster", "create", *(node.address for node in nodes), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(node.cluster_ok() for node in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster never reached cluster_state:ok")
            time.sleep(0.1)
    except (subprocess.SubprocessError, TimeoutError):
        for node in nodes:
            node.stop()
        raise
    return nodes, "redis+cluster://" + ",".join(node.address for node in nodes)


def start_switchboard(redis_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        SWITCHBOARD_REDIS_URL=redis_url,
        SWITCHBOARD_WORKERS="2",
        SWITCHBOARD_RATE_MESSAGES="0",
        SWITCHBOARD_LOG_LEVEL="warning",
    )
    gunicorn = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, start_new_session=True
    )
    wait_port(port)
    return gunicorn, port


def measure(count: int, size: dict, as_cluster: bool = False) -> dict:
    """One run over `count` instances (cluster masters if `as_cluster`): per instance, CPU seconds
    and commands per second."""
    with tempfile.TemporaryDirectory(prefix="redis-shards-") as folder:
        instances, url = cluster(count, Path(folder)) if as_cluster else standalone(count)
        try:
            return {"instances": count, "cluster": as_cluster} | run_load(instances, url, size)
        finally:
            for instance in instances:
                instance.stop()


def run_load(instances: list[Instance], url: str, size: dict) -> dict:
    """Switchboard over `url`, the load, and each instance's CPU and commands over the publishing."""
    gunicorn, port = start_switchboard(url)
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
    return {
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
        label = f"{run['instances']} (Cluster)" if run["cluster"] else run["instances"]
        lines.append(f"| {label} | {run['deliveries']}/{run['expected']} | {cpu} | {commands} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "redis_shards"))
    options = parser.parse_args(argv)
    raise_nofile()
    size = SIZES["quick" if options.quick else "full"]
    runs = [measure(count, size) for count in (1, 2, 3)] + [measure(3, size, as_cluster=True)]
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
