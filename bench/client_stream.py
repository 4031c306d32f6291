"""The Python client receiving a stream on one core, against the `websockets` client reading it raw.

    python -m bench.client_stream [--messages 100000] [--repeat 7] [--json FILE]

Starts Switchboard (one worker, the rate limit off, pinned to CPU 0) with a history big enough to
hold the whole stream, fills one channel with N numbered messages, then runs each reader in a
process of its own pinned to CPU 1. A reader subscribes with `since=0`, so the server replays the
stream as fast as the reader takes it, and is timed from the subscribe reply to the N-th message:

- raw: `websockets.sync.client`, `recv()` and `json.loads` per frame;
- client: `switchboard_client`'s sync client iterating a subscription.

Both check every message's number (so both count exactly N, in order). Each round runs the two
back to back (alternating which goes first), `repeat` rounds; reported are the median messages/s
and CPU µs per message of each, and the median of the rounds' ratios (client / raw): on a shared
machine, speed drifts between rounds, far less within one. What it must never do: leave the
server running, or compare figures from readers that did not get the same stream.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "stream"
READERS = ("raw", "client")
SERVER_CPU, READER_CPU = 0, 1


# -- the readers, each run as `python -m bench.client_stream --reader NAME` -----------------------


def read_raw(url: str, count: int) -> tuple[float, float]:
    from websockets.sync.client import connect

    with connect(url, compression=None) as ws:
        ws.recv()  # welcome
        ws.send(json.dumps({"type": "subscribe", "channel": CHANNEL, "since": 0, "id": 1}))
        assert json.loads(ws.recv())["result"]["recovered"]
        started, cpu = time.perf_counter(), time.process_time()
        for n in range(count):
            if json.loads(ws.recv())["data"]["n"] != n:
                raise AssertionError(f"message {n} out of order")
        return time.perf_counter() - started, time.process_time() - cpu


def read_client(url: str, count: int) -> tuple[float, float]:
    from switchboard_client import connect

    with connect(url) as client:
        subscription = client.subscribe(CHANNEL, since=0)
        started, cpu = time.perf_counter(), time.process_time()
        for n, message in enumerate(subscription):
            if message.data["n"] != n:
                raise AssertionError(f"message {n} out of order")
            if n == count - 1:
                return time.perf_counter() - started, time.process_time() - cpu
    raise AssertionError("the subscription ended early")


def reader_main(name: str, url: str, count: int) -> None:
    seconds, cpu = (read_raw if name == "raw" else read_client)(url, count)
    print(json.dumps({"reader": name, "messages": count, "seconds": seconds, "cpu_seconds": cpu}))


# -- the server and the runs ----------------------------------------------------------------------


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if (os.cpu_count() or 1) >= 2 else argv


def start_server(port: int, count: int, log_path: Path, settings: dict[str, str] | None = None) -> subprocess.Popen:
    """Switchboard, one worker, with history and a send queue that hold the whole stream."""
    return start_switchboard(
        port,
        log_path,
        {
            "SWITCHBOARD_HISTORY_SIZE": str(count),
            # The whole replay is queued at once for the reader: let it, rather than cut a slow consumer.
            "SWITCHBOARD_SEND_QUEUE_MESSAGES": str(count + 1000),
            "SWITCHBOARD_SEND_QUEUE_BYTES": str(count * 1000),
            **(settings or {}),
        },
    )


def start_switchboard(port: int, log_path: Path, settings: dict[str, str]) -> subprocess.Popen:
    """The standalone server with one worker on SERVER_CPU, the rate limit off and `settings`
    over the defaults (none of the caller's own SWITCHBOARD_ variables), once /healthz answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(PORT=str(port), SWITCHBOARD_WORKERS="1", SWITCHBOARD_RATE_MESSAGES="0", SWITCHBOARD_LOG_LEVEL="warning")
    env.update(settings)
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            _pinned(SERVER_CPU, [gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"]),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the server did not start; see {log_path}") from None
            time.sleep(0.1)


def fill(url: str, count: int) -> None:
    """Publish `count` numbered messages of about 100 bytes, pipelined 1,000 at a time."""
    from websockets.sync.client import connect

    with connect(url, compression=None) as ws:
        ws.recv()
        pad = "x" * 60
        for start in range(0, count, 1000):
            batch = range(start, min(count, start + 1000))
            for n in batch:
                ws.send(json.dumps({"type": "publish", "channel": CHANNEL, "data": {"n": n, "pad": pad}, "id": n}))
            for _ in batch:
                reply = json.loads(ws.recv())
                if reply["type"] != "reply":
                    raise RuntimeError(f"publish refused: {reply}")


def run_reader(name: str, url: str, count: int) -> tuple[float, float]:
    """Messages per second, and CPU µs per message (all the reader's threads)."""
    argv = [sys.executable, "-m", "bench.client_stream", "--reader", name, "--url", url, "--messages", str(count)]
    done = subprocess.run(_pinned(READER_CPU, argv), cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the {name} reader failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["messages"] / result["seconds"], result["cpu_seconds"] / result["messages"] * 1e6


def measure(count: int = 100000, repeat: int = 7, log=print) -> dict:
    """Start a server, fill it, run each reader `repeat` times in turn; the figures as a dict."""
    from bench.harness import pick_port

    port = pick_port()
    url = f"ws://127.0.0.1:{port}/ws"
    with tempfile.TemporaryDirectory(prefix="client-stream-") as tmp:
        server = start_server(port, count, Path(tmp) / "gunicorn.log")
        try:
            fill(url, count)
            rates: dict[str, list[float]] = {name: [] for name in READERS}
            cpu: dict[str, list[float]] = {name: [] for name in READERS}
            for run in range(repeat):
                # Back to back, first one then the other first: this machine's speed drifts.
                for name in READERS if run % 2 == 0 else READERS[::-1]:
                    rate, us = run_reader(name, url, count)
                    rates[name].append(rate)
                    cpu[name].append(us)
                log(
                    f"  run {run + 1}: "
                    + ", ".join(
                        f"{name} {rates[name][-1]:,.0f}/s ({cpu[name][-1]:.2f} µs CPU each)" for name in READERS
                    )
                )
        finally:
            server.terminate()
            server.wait(15)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "messages": count,
        "repeat": repeat,
        "raw_per_s": round(medians["raw"]),
        "client_per_s": round(medians["client"]),
        # The median of each round's own ratio: a round's two runs share the machine's mood.
        "ratio": round(statistics.median(c / r for c, r in zip(rates["client"], rates["raw"], strict=True)), 3),
        "raw_cpu_us": round(statistics.median(cpu["raw"]), 2),
        "client_cpu_us": round(statistics.median(cpu["client"]), 2),
        "runs": {name: [round(v) for v in values] for name, values in rates.items()},
    }


def harness_row(quick: bool, log) -> dict:
    """The figures for bench.harness's results (tiny sizes when quick), or n/a with the reason."""
    try:
        return {"status": "ok", **(measure(2000, 1, log) if quick else measure(log=log))}
    except Exception as exc:  # one failure must not stop the run (see bench/harness.py)
        return {"status": "n/a", "reason": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--reader", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader:
        reader_main(args.reader, args.url, args.messages)
        return 0
    figures = measure(args.messages, args.repeat)
    print(
        f"{args.messages:,} messages, {args.repeat} rounds, medians: websockets raw {figures['raw_per_s']:,}/s, "
        f"switchboard_client {figures['client_per_s']:,}/s, ratio {figures['ratio']:.2f}x; "
        f"CPU per message {figures['raw_cpu_us']} µs raw, {figures['client_cpu_us']} µs client"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
