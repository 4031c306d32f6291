"""What one idle `/ws` connection holds in a worker, part by part, measured rather than guessed.

    python -m bench.memory [--connections 5000]

Three runs in fresh processes, each opening N server-side sockets over socket pairs (the
descriptors are made before measuring, so only user-space memory is counted): the OS socket and
its I/O watcher alone; the same with a reader greenlet parked on each, as transport/connection.py parks
it; and whole connections through the hub (`Hub.open`, the native session, one subscription
each). Each part is the difference of resident memory (VmRSS) per connection, and the hub's own
records are broken down further by allocation site with tracemalloc. Kernel socket buffers are
not in RSS: `make bench`'s idle_10k reports them (`kernel_tcp_kib_per_conn` in results.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import socket
import subprocess
import sys
import tracemalloc

STAGES = ("sockets", "greenlets", "connections")


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _measure(stage: str, n: int, trace: bool) -> dict:
    """Run in a fresh, monkey-patched process: KiB per connection for one stage."""
    import _socket

    import gevent
    import greenlet

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    hub = gevent.get_hub()
    pairs = [socket.socketpair() for _ in range(n + 20)]
    kept: list = []

    def park(raw, watcher) -> None:  # the reader's wait, as in Connection._read_loop
        wake = greenlet.getcurrent().switch
        while True:
            try:
                data = raw.recv(65536)
            except BlockingIOError:
                data = None
            if data is None:
                watcher.start(wake)
                try:
                    hub.switch()
                finally:
                    watcher.stop()
                continue
            if not data:
                return

    if stage == "connections":
        from switchboard_server.core.auth import ANONYMOUS
        from switchboard_server.core.config import Config
        from switchboard_server.state import SwitchboardState
        from switchboard_server.transport.frames import OP_TEXT

        state = SwitchboardState(Config(rate_messages=0))
        engine, native = state.hub, state.native

        def open_one(server_side) -> None:
            conn = engine.open(server_side, ANONYMOUS)
            conn.start(native.serve)
            kept.append(conn)

        def settle() -> None:
            gevent.sleep(0.3)
            for conn in kept:
                if not conn.subscriptions:
                    native.on_message(conn, OP_TEXT, b'{"type":"subscribe","channel":"room","id":1}')
            gevent.sleep(0.3)
    else:

        def open_one(server_side) -> None:
            raw = _socket.socket(fileno=server_side.detach())
            raw.setblocking(False)
            watcher = hub.loop.io(raw.fileno(), 1)
            kept.append((raw, watcher))
            if stage == "greenlets":
                hub.loop.run_callback(greenlet.greenlet(park, parent=hub).switch, raw, watcher)

        def settle() -> None:
            gevent.sleep(0.3)

    for server_side, _client in pairs[:20]:  # warm-up: first-use allocations are not per connection
        open_one(server_side)
    settle()
    gc.collect()
    if trace:
        tracemalloc.start()
    before = tracemalloc.take_snapshot() if trace else None
    rss_before = _rss_kib()
    for server_side, _client in pairs[20:]:
        open_one(server_side)
    settle()
    gc.collect()
    result = {"kib_per_connection": (_rss_kib() - rss_before) / n}
    if trace:
        stats = tracemalloc.take_snapshot().compare_to(before, "filename")
        result["traced_kib"] = sum(stat.size_diff for stat in stats) / n / 1024
        result["traced_bytes_by_file"] = {
            stat.traceback[0].filename.rsplit("/", 2)[-2] + "/" + stat.traceback[0].filename.rsplit("/", 1)[-1]: round(
                stat.size_diff / n
            )
            for stat in stats
            if stat.size_diff / n >= 16
        }
    return result


def _run_stage(stage: str, n: int, trace: bool = False) -> dict:
    command = [sys.executable, "-m", "bench.memory", "--stage", stage, "--connections", str(n)]
    out = subprocess.run(command + (["--trace"] if trace else []), capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def breakdown(n: int) -> dict:
    """KiB per idle connection for each part, and the hub records' allocation sites."""
    sockets, greenlets, connections = (_run_stage(stage, n)["kib_per_connection"] for stage in STAGES)
    # What tracemalloc sees of a parked greenlet is its object and its saved C stack; the rest
    # of its resident memory is the page of Python frames (its data stack) that it touches.
    traced_greenlet = (
        _run_stage("greenlets", n, trace=True)["traced_kib"] - _run_stage("sockets", n, True)["traced_kib"]
    )
    traced = _run_stage("connections", n, trace=True)["traced_bytes_by_file"]
    return {
        "connections": n,
        "socket_and_watcher_kib": round(sockets, 2),
        "greenlet_and_saved_c_stack_kib": round(traced_greenlet, 2),
        "greenlet_python_frames_kib": round(greenlets - sockets - traced_greenlet, 2),
        "hub_records_kib": round(connections - greenlets, 2),
        "total_kib": round(connections, 2),
        "traced_bytes_by_file": traced,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        from gevent import monkey

        monkey.patch_all()
        print(json.dumps(_measure(args.stage, args.connections, args.trace)))
        return 0
    parts = breakdown(args.connections)
    print(f"One idle, subscribed /ws connection, {parts['connections']} in one process (KiB each):")
    print(f"  OS socket and its I/O watcher            {parts['socket_and_watcher_kib']:6.2f}")
    print(f"  reader greenlet and its saved C stack    {parts['greenlet_and_saved_c_stack_kib']:6.2f}")
    print(f"  reader's Python frames (data stack page) {parts['greenlet_python_frames_kib']:6.2f}")
    print(f"  hub records                              {parts['hub_records_kib']:6.2f}")
    print(f"  total                                    {parts['total_kib']:6.2f}")
    print("Allocations of whole connections by file (bytes each, tracemalloc):")
    for name, size in parts["traced_bytes_by_file"].items():
        print(f"  {size:6d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
