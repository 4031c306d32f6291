"""The outbox relay against the HTTP API: rows per second and commit-to-delivery latency.

    python -m bench.outbox [--rows 5000] [--paced 500] [--rate 200] [--out DIR] [--quick]

Starts a throwaway PostgreSQL (bench/postgres.py), Switchboard (one worker) and one WebSocket
subscriber, then sends the same numbered messages three ways, one after the other:

- `api`: `POST /api/publish`, one request at a time on one kept-alive connection (what the relay
  itself does for each row);
- `notify`: rows written into the outbox, published by `switchboard-server outbox-relay` woken by
  the table's NOTIFY hint (the default);
- `poll`: the same relay with `--no-listen`, finding rows by polling alone (every 0.5 s, the default).

Two figures each: throughput, `rows` messages committed in one transaction (for `api`: sent back
to back) and timed until the subscriber has the last one; latency, `paced` messages at `rate` per
second, each its own transaction, from just before its COMMIT (for `api`: before its request) to
its arrival at the subscriber, p50 and p99. What it must never do: leave a server running, or
count a message the subscriber did not receive.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from websockets.sync.client import connect

from bench.client_stream import start_server
from bench.postgres import PostgresServer, free_port
from switchboard_server import outbox

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "outbox-bench"
API_KEY = "bench-api-key"


class Subscriber(threading.Thread):
    """Receives the channel and notes each message's number and arrival time (ns)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.ws = connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_size=None, legacy=True)
        self.ws.recv()  # welcome
        self.ws.send(json.dumps({"type": "subscribe", "channel": CHANNEL, "id": 1}))
        self.ws.recv()
        self.arrivals: list[tuple[int, int, int]] = []  # (n, sent ns, arrived ns)
        self.changed = threading.Condition()

    def run(self) -> None:
        for frame in self.ws:
            message = json.loads(frame)
            if message.get("type") == "message":
                with self.changed:
                    self.arrivals.append((message["data"]["n"], message["data"]["t"], time.time_ns()))
                    self.changed.notify_all()

    def take(self, count: int, timeout: float = 120.0) -> list[tuple[int, int, int]]:
        """The next `count` arrivals, once all are in; then forgets them."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.arrivals) >= count, timeout):
                raise TimeoutError(f"{len(self.arrivals)} of {count} messages arrived")
            taken, self.arrivals = self.arrivals[:count], self.arrivals[count:]
        if sorted(n for n, _, _ in taken) != list(range(count)):
            raise AssertionError("messages missing or repeated")
        return taken


def api_sender(port: int):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def send(n: int) -> None:
        body = json.dumps({"channel": CHANNEL, "data": {"n": n, "t": time.time_ns()}})
        connection.request("POST", "/api/publish", body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"publish refused: {response.status}")

    return send


def outbox_sender(dsn: str):
    connection = psycopg.connect(dsn)

    def send(n: int) -> None:
        outbox.write(connection, CHANNEL, {"n": n, "t": time.time_ns()})
        connection.commit()

    return send


def outbox_backlog(dsn: str, rows: int) -> int:
    """Commit `rows` rows in one transaction; returns the time (ns) just before the COMMIT."""
    with psycopg.connect(dsn) as connection:
        for n in range(rows):
            outbox.write(connection, CHANNEL, {"n": n, "t": 0})
        started = time.time_ns()
        connection.commit()
    return started


def start_relay(dsn: str, port: int, listen: bool, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_API_KEY=API_KEY, SWITCHBOARD_LOG_FORMAT="json")
    log = open(log_path, "wb")
    relay = subprocess.Popen(
        [sys.executable, "-c", "from switchboard_server.cli import main; main()", "outbox-relay", "--dsn", dsn,
         "--server-url", f"http://127.0.0.1:{port}", *(() if listen else ("--no-listen",))],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while b'"relay ready"' not in log_path.read_bytes():
        if relay.poll() is not None or time.monotonic() > deadline:
            relay.kill()
            raise RuntimeError(f"the relay did not start; see {log_path}")
        time.sleep(0.05)
    return relay


def paced(send, subscriber: Subscriber, count: int, rate: float) -> dict:
    """Send `count` messages at `rate` per second; latency percentiles in milliseconds."""
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        send(n)
    latencies = sorted((arrived - sent) / 1e6 for _, sent, arrived in subscriber.take(count))
    return {"p50_ms": round(statistics.median(latencies), 2), "p99_ms": round(latencies[int(0.99 * (count - 1))], 2)}


def measure(rows: int, paced_count: int, rate: float, workdir: Path, log=print) -> dict:
    postgres = PostgresServer()
    port = free_port()
    server = start_server(port, rows, workdir / "server.log", {"SWITCHBOARD_API_KEY": API_KEY})
    results: dict = {}
    try:
        subscriber = Subscriber(port)
        subscriber.start()
        send = api_sender(port)
        started = time.time_ns()
        for n in range(rows):
            send(n)
        last = max(arrived for _, _, arrived in subscriber.take(rows))
        results["api"] = {
            "rows_per_s": round(rows / ((last - started) / 1e9)),
            **paced(send, subscriber, paced_count, rate),
        }
        log(f"  api: {results['api']}")
        for mode in ("notify", "poll"):
            dsn = postgres.new_database(f"bench_{mode}")
            relay = start_relay(dsn, port, mode == "notify", workdir / f"relay-{mode}.log")
            try:
                started = outbox_backlog(dsn, rows)
                last = max(arrived for _, _, arrived in subscriber.take(rows))
                throughput = round(rows / ((last - started) / 1e9))
                results[mode] = {"rows_per_s": throughput, **paced(outbox_sender(dsn), subscriber, paced_count, rate)}
            finally:
                relay.terminate()
                relay.wait(15)
            log(f"  {mode}: {results[mode]}")
    finally:
        server.terminate()
        server.wait(15)
        postgres.remove()
    return results


def markdown(results: dict, params: dict) -> str:
    lines = [
        f"# Outbox relay against the HTTP API ({params['rows']} rows; {params['paced']} paced at {params['rate']}/s)",
        "",
        "| path | rows/s | commit-to-delivery p50 | p99 |",
        "|---|--:|--:|--:|",
    ]
    names = {"api": "`/api/publish`", "notify": "outbox, NOTIFY hint", "poll": "outbox, polling alone (0.5 s)"}
    for mode, figures in results.items():
        lines.append(f"| {names[mode]} | {figures['rows_per_s']} | {figures['p50_ms']} ms | {figures['p99_ms']} ms |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--paced", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--quick", action="store_true", help="200 rows, 50 paced: a smoke check, not a measurement")
    parser.add_argument("--out", default="bench/results/outbox")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.paced = 200, 50
    params = {"rows": args.rows, "paced": args.paced, "rate": args.rate}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("outbox:", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        results = measure(args.rows, args.paced, args.rate, Path(workdir))
    (out / "results.json").write_text(json.dumps({"params": params, "results": results}, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, params))
    print(markdown(results, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
