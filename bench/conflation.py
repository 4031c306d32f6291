"""A ticker to subscribers of which some read slowly: conflation keeps the fast ones unharmed.

    python -m bench.conflation [--fast 900] [--slow 100] [--rate 1000] [--seconds 20] [--json FILE]

Starts Switchboard (one worker, the rate limit off, pinned to CPU 0) with a `ticker:` namespace
that is conflated over the whole channel (docs/latest-value.md). The load generator
(bench/loadgen.py, pinned to CPU 1) opens `fast` subscribers that read everything and one
publisher that sends `rate` messages a second (in batches every 10 ms), and measures each
delivery's publish-to-delivery latency. It runs twice on a fresh server each time: with the fast
subscribers alone, then with `slow` more in a process of their own, each on a socket with a tiny
receive buffer read 1 KiB every 100 ms. Reported per run: the fast subscribers' latency p50/p99,
whether each got every message, the server's peak memory (RSS of its processes), and how many
slow subscribers were closed (none should be: they are conflated, not cut off as slow consumers).
What it must never do: leave the server or the slow readers running.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.client_stream import start_switchboard

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "ticker:bench"
NAMESPACES = '[namespaces."ticker:"]\nconflate = true\nconflation_window = 0.1\nhistory_size = 1\n'
LOAD_CPU = 1  # the server runs on CPU 0 (client_stream.start_switchboard)
BATCH_EVERY = 0.01  # seconds between publish batches


# -- the slow readers, run as `python -m bench.conflation --slow-readers N --port P` -----------------


def slow_readers(port: int, count: int) -> None:
    """Subscribe `count` raw sockets, say "ready", then read 1 KiB of each every 100 ms until
    stdin closes; print how many the server closed and the bytes read."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        payload = json.dumps({"type": "subscribe", "channel": CHANNEL, "id": 1}).encode()
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        sock.setblocking(False)
        socks.append(sock)
    print("ready", flush=True)
    os.set_blocking(sys.stdin.fileno(), False)
    closed, read = set(), 0
    while not _stdin_closed():
        for index, sock in enumerate(socks):
            if index in closed:
                continue
            try:
                data = sock.recv(1024)
            except BlockingIOError:
                continue
            if not data:
                closed.add(index)
            read += len(data)
        time.sleep(0.1)
    print(json.dumps({"closed": len(closed), "bytes_read": read}), flush=True)


def _stdin_closed() -> bool:
    try:
        return sys.stdin.buffer.read() == b""
    except BlockingIOError:
        return False


# -- the server and the runs ----------------------------------------------------------------------


def start_server(port: int, tmp: Path) -> subprocess.Popen:
    namespaces = tmp / "namespaces.toml"
    namespaces.write_text(NAMESPACES)
    return start_switchboard(port, tmp / "gunicorn.log", {"SWITCHBOARD_NAMESPACES": str(namespaces)})


def server_rss_mib(server: subprocess.Popen) -> float:
    """Resident memory of the server's processes (Gunicorn's master and its worker), in MiB."""
    total = 0
    for pid in [server.pid, *_children(server.pid)]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run(fast: int, slow: int, rate: int, seconds: float) -> dict:
    """One run on a fresh server: the fast subscribers' figures, memory, slow ones closed."""
    from bench import loadgen
    from bench.harness import pick_port

    port = pick_port()
    with tempfile.TemporaryDirectory(prefix="conflation-") as tmp:
        server = start_server(port, Path(tmp))
        readers = None
        try:
            lg = loadgen.LoadGen(port)
            subscribers = lg.open(fast, loadgen.SUB, channels=[CHANNEL]).conns
            publisher = lg.open(1, loadgen.PUB).conns[0]
            if slow:
                argv = [sys.executable, "-m", "bench.conflation", "--slow-readers", str(slow), "--port", str(port)]
                readers = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                if readers.stdout.readline().strip() != "ready":
                    raise RuntimeError("the slow readers did not start")
            lg.reset_counts()
            published, peak = _publish(lg, publisher, rate, seconds, server)
            lg.wait_deliveries(published * len(subscribers), timeout=30)
            latency = loadgen.latency_summary(lg.lat)
            figures = {
                "fast": len(subscribers),
                "slow": slow,
                "published": published,
                "fast_missing": lg.missing(subscribers, published),
                "p50_ms": round(latency.get("p50_ms", 0), 2),
                "p99_ms": round(latency.get("p99_ms", 0), 2),
                "server_rss_mib": round(peak, 1),
            }
            if readers is not None:
                out, _ = readers.communicate(timeout=30)
                figures.update(json.loads(out.strip().splitlines()[-1]))
                readers = None
            lg.shutdown()
            return figures
        finally:
            if readers is not None:
                readers.kill()
                readers.wait()
            server.terminate()
            server.wait(15)


def _publish(lg, publisher, rate: int, seconds: float, server: subprocess.Popen) -> tuple[int, float]:
    """`rate` messages a second for `seconds`, a batch every 10 ms; the count and peak RSS."""
    per_batch = max(1, round(rate * BATCH_EVERY))
    batches = int(seconds / BATCH_EVERY)
    peak = 0.0
    started = time.monotonic()
    for n in range(batches):
        lg.publish(publisher, [CHANNEL] * per_batch)
        if n % 50 == 0:
            peak = max(peak, server_rss_mib(server))
        due = started + (n + 1) * BATCH_EVERY
        while (left := due - time.monotonic()) > 0:
            lg.poll(left)
    return batches * per_batch, max(peak, server_rss_mib(server))


def measure(fast: int = 900, slow: int = 100, rate: int = 1000, seconds: float = 20.0, log=print) -> dict:
    """Both runs, the fast subscribers alone and beside the slow ones, and their ratios."""
    alone = run(fast, 0, rate, seconds)
    log(f"  {fast} fast subscribers alone: {alone}")
    beside = run(fast, slow, rate, seconds)
    log(f"  {fast} fast beside {slow} slow: {beside}")
    return {
        "rate": rate,
        "seconds": seconds,
        "alone": alone,
        "with_slow": beside,
        "p99_ratio": round(beside["p99_ms"] / alone["p99_ms"], 2) if alone["p99_ms"] else None,
        "rss_ratio": round(beside["server_rss_mib"] / alone["server_rss_mib"], 2),
    }


def harness_row(quick: bool, log) -> dict:
    """The figures for bench.harness's results (tiny sizes when quick), or n/a with the reason."""
    try:
        sizes = {"fast": 90, "slow": 10, "rate": 200, "seconds": 2.0} if quick else {}
        return {"status": "ok", **measure(**sizes, log=log)}
    except Exception as exc:  # one failure must not stop the run (see bench/harness.py)
        return {"status": "n/a", "reason": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", type=int, default=900)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--rate", type=int, default=1000, help="messages per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--slow-readers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.slow_readers:
        slow_readers(args.port, args.slow_readers)
        return 0
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CPU})
    figures = measure(args.fast, args.slow, args.rate, args.seconds)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
