"""The benchmark harness: every peer through every scenario, one table and a few charts.

    python -m bench.harness [--quick] [--peers a,b] [--scenarios x,y] [--out bench/results]
                            [--repeat N]

For each peer of bench/peers/registry.py it starts the server pinned to CPU 0 (`taskset -c 0`),
pins itself (and so the load generator, bench/loadgen.py, which runs in this process) to CPU 1,
waits until a WebSocket handshake on the peer's ready path succeeds, runs the scenarios, and
stops the server's whole process group (SIGTERM, then SIGKILL). Scenarios that measure memory
get a freshly started server; the others reuse the running one once its connections are gone.

What it must never do: leave a server running, let one peer's failure stop the run (a failure
becomes "n/a" with the reason), or time anything that includes connecting when it claims to
measure fan-out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen
from bench.loadgen import PLAIN, PUB, LoadGen, channel_name, cpu_seconds, latency_summary
from bench.peers import switchboard_redis

ROOT = Path(__file__).resolve().parents[1]
PORTS = range(19200, 19300)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class ScenarioError(Exception):
    """The scenario could not produce its figures; the message is the reason shown as n/a."""


class ScenarioTimeout(ScenarioError):
    pass


# ------------------------------------------------------------------------- the server tree


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, utime + stime in ticks, rss pages) for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        # fields[0] is field 3 (state): ppid is field 4, utime/stime 14/15, rss 24
        table[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]))
    return table


def tree_pids(root: int, table: dict | None = None) -> list[int]:
    """`root` and all its descendants."""
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def _schedstat_ns(pid: int) -> int | None:
    """Time on CPU of all live threads of `pid`, in ns (None if schedstat is missing)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def sockstat_tcp_pages() -> int:
    """Kernel memory of all TCP sockets (pages), from /proc/net/sockstat."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0


def port_free(port: int) -> bool:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_next_port = [PORTS.start]


def pick_port() -> int:
    for _ in range(len(PORTS)):
        port = _next_port[0]
        _next_port[0] = PORTS.start + (port + 1 - PORTS.start) % len(PORTS)
        if port_free(port):
            return port
    raise ScenarioError("no free port in 19200-19299")


class Server:
    """One started peer: its process group, CPU and memory, and how to stop it."""

    def __init__(self, peer, log_path: Path, cpu: int | None) -> None:
        self.peer = peer
        self.log_path = log_path
        self.cpu = cpu
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.base_fds = 0

    def start(self, timeout: float) -> None:
        from bench.peers.registry import command

        self.port = pick_port()
        argv, env = command(self.peer, self.port)
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 -- handed to the child, closed below
        log.write(f"\n==== {datetime.datetime.now().isoformat()} {' '.join(argv)}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ScenarioError(f"failed to start: {exc}") from exc
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ScenarioError(f"failed to start: exited with {code}; {self.log_tail()}")
            if loadgen.probe(self.port, self.peer.ready_path, timeout=1.0):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise ScenarioError(f"failed to start: no handshake within {timeout:.0f} s")
            time.sleep(0.1)
        time.sleep(0.2)  # let a pre-forking server finish booting its worker
        self.base_fds = self.fd_count()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip()[:160] for line in text[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        code = self.proc.poll() if self.proc else None
        return f"server exited with {code} during the scenario; {self.log_tail()}"

    def cpu_s(self) -> float:
        """CPU time of the whole tree (gunicorn master + workers, every thread), seconds.

        Read from each thread's /proc schedstat (nanoseconds), since /proc/<pid>/stat counts
        10 ms ticks, too coarse for short windows; falls back to the ticks if unavailable.
        """
        table = _proc_table()
        total = 0.0
        for pid in tree_pids(self.proc.pid, table):
            ns = _schedstat_ns(pid)
            total += ns / 1e9 if ns is not None else table[pid][1] / CLK_TCK
        return total

    def rss_kib(self) -> int:
        table = _proc_table()
        return sum(table[p][2] for p in tree_pids(self.proc.pid, table)) * PAGE_KIB

    def fd_count(self) -> int:
        n = 0
        for pid in tree_pids(self.proc.pid):
            with contextlib.suppress(OSError):
                n += len(os.listdir(f"/proc/{pid}/fd"))
        return n

    def settle(self, timeout: float) -> bool:
        """Wait until the server has closed the last scenario's connections and gone quiet.

        Quiet: under 10% of a core over 200 ms (socketify's loop idles at ~5%). Some servers
        need many seconds to tear down 10k connections; the next scenario must not pay for it.
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            c0 = self.cpu_s()
            time.sleep(0.2)
            quiet = quiet + 1 if self.cpu_s() - c0 < 0.02 else 0
            # Back to its starting descriptors and quiet; or quiet for a whole second while
            # holding a few more (a broker's connections, opened on first use, stay open).
            if quiet and self.fd_count() <= self.base_fds + 2 or quiet >= 5:
                return True
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = tree_pids(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for pid in [*tree_pids(self.proc.pid), *pids]:  # stragglers outside the group too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None


# ------------------------------------------------------------------------- scenarios


@dataclass
class Ctx:
    """What a scenario gets: the server, its parameters, and its deadline."""

    peer: object
    server: Server
    params: dict
    deadline: float
    gens: list[LoadGen] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # non-figure data (latency quantiles)

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ScenarioTimeout("scenario timeout")
        return left

    def lg(self, deflate: bool = False) -> LoadGen:
        peer = self.peer
        gen = LoadGen(self.server.port, peer.dialect, deflate=deflate, prefix=peer.path_prefix, route=peer.route)
        self.gens.append(gen)
        return gen

    def subscribers(self, lg: LoadGen, n: int, channels: list[str] | None = None, in_flight: int = 200):
        res = lg.open(n, channels=channels, in_flight=in_flight, timeout=self.left())
        if not res.conns:
            raise ScenarioError(f"no connection opened: {_errors(res.errors)}")
        return res

    def publisher(self, lg: LoadGen):
        res = lg.open(1, role=PUB, timeout=min(30.0, self.left()))
        if not res.conns:
            raise ScenarioError(f"publisher failed: {_errors(res.errors)}")
        return res.conns[0]

    def await_members(self, lg: LoadGen, conns: list, pub) -> None:
        """A chat's connections must all be members before anything is measured (loadgen.py)."""
        try:
            lg.await_members(conns, pub, min(30.0, self.left()))
        except loadgen.Timeout as exc:
            raise ScenarioError(str(exc)) from exc

    def require(self, ok: bool, what: str) -> None:
        if not ok:
            raise ScenarioError(what)


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in errors.items()) or "no error recorded"


class Window:
    """CPU of the generator and of the server tree over a measured window (no connecting).

    The server's /proc is read outside the generator's own CPU/wall brackets, so reading it
    does not count as generator work.
    """

    def __init__(self, ctx: Ctx) -> None:
        self.server = ctx.server
        self.s0 = self.server.cpu_s()
        self.g0 = cpu_seconds()
        self.w0 = time.monotonic()

    def end(self) -> dict:
        wall = time.monotonic() - self.w0
        gen = cpu_seconds() - self.g0
        srv = self.server.cpu_s() - self.s0
        return {
            "wall_s": wall,
            "gen_cpu_pct": 100 * gen / wall,
            "server_cpu_s": srv,
            "server_cpu_pct": 100 * srv / wall,
        }


def _health(lg: LoadGen, opened, figures: dict) -> dict:
    figures["connections"] = len(opened.conns)
    figures["refused"] = opened.failed
    figures["dropped"] = lg.dropped
    if lg.errors:
        figures["errors"] = _errors(lg.errors)
    return figures


def scenario_broadcast(ctx: Ctx) -> dict:
    """N subscribers on one channel, spaced single publishes; latency per delivery."""
    p = ctx.params
    n = p["n"]
    lg = ctx.lg()
    opened = ctx.subscribers(lg, n)
    n = len(opened.conns)
    pub = ctx.publisher(lg)
    ch = [channel_name(0)]
    lg.reset_counts()
    per_p99, per_p50, rates = [], [], []
    win = Window(ctx)
    done = 0
    for _ in range(p["count"]):
        start = len(lg.lat)
        t = lg.publish(pub, ch)
        if not lg.wait_deliveries((done + 1) * n, ctx.left()):
            break
        done += 1
        one = latency_summary(lg.lat[start:])
        per_p99.append(one["p99_ms"])
        per_p50.append(one["p50_ms"])
        rates.append(n / max(1e-9, (lg.last_ns - t) / 1e9))
        lg.run_for(p["gap"])
    w = win.end()
    overall = latency_summary(lg.lat)
    ctx.extra["latency_quantiles_ms"] = loadgen.quantiles_ms(lg.lat)
    expected = n * p["count"]
    return _health(
        lg,
        opened,
        {
            "deliveries": lg.delivered,
            "expected_deliveries": expected,
            "missing_conns": lg.missing(opened.conns, p["count"]),
            "broadcasts": done,
            "deliveries_per_s": statistics.median(rates) if rates else None,
            "p50_ms": statistics.median(per_p50) if per_p50 else None,
            "p99_ms": statistics.median(per_p99) if per_p99 else None,
            "p99_overall_ms": overall.get("p99_ms"),
            "max_ms": overall.get("max_ms"),
            "server_cpu_us_per_delivery": _us_per(w["server_cpu_s"], lg.delivered),
            "gen_cpu_pct": w["gen_cpu_pct"],
            "server_cpu_pct": w["server_cpu_pct"],
        },
    )


def _us_per(cpu_s: float, count: int) -> float | None:
    return 1e6 * cpu_s / count if count else None


def scenario_burst(ctx: Ctx) -> dict:
    """`burst` publishes in one send to N subscribers, repeated; deliveries/s."""
    p = ctx.params
    lg = ctx.lg(deflate=p.get("deflate", False))
    opened = ctx.subscribers(lg, p["n"])
    n = len(opened.conns)
    pub = ctx.publisher(lg)
    ctx.await_members(lg, opened.conns, pub)
    lg.lat_on = False
    lg.reset_counts()
    chans = [channel_name(0)] * p["burst"]
    rates = []
    win = Window(ctx)
    for _ in range(p["repeats"]):
        target = lg.delivered + n * p["burst"]
        t = lg.publish(pub, chans)
        if not lg.wait_deliveries(target, ctx.left()):
            break
        rates.append(n * p["burst"] / max(1e-9, (lg.last_ns - t) / 1e9))
        lg.run_for(p["gap"])
    w = win.end()
    return _health(
        lg,
        opened,
        {
            "deliveries": lg.delivered,
            "expected_deliveries": n * p["burst"] * p["repeats"],
            "missing_conns": lg.missing(opened.conns, p["burst"] * p["repeats"]),
            "deliveries_per_s": statistics.median(rates) if rates else None,
            "deliveries_per_s_best": max(rates) if rates else None,
            "deflate_accepted": lg.deflate_accepted / max(1, lg.handshakes),
            "server_cpu_us_per_delivery": _us_per(w["server_cpu_s"], lg.delivered),
            "gen_cpu_pct": w["gen_cpu_pct"],
            "server_cpu_pct": w["server_cpu_pct"],
        },
    )


def scenario_channels(ctx: Ctx) -> dict:
    """N connections over C channels; each round publishes once to every channel (one send)."""
    p = ctx.params
    chans = [channel_name(i) for i in range(p["channels"])]
    lg = ctx.lg()
    opened = ctx.subscribers(lg, p["n"], channels=chans)
    ctx.require(len(opened.conns) == p["n"], f"only {len(opened.conns)} of {p['n']} opened")
    n = p["n"]
    pub = ctx.publisher(lg)
    lg.reset_counts()
    win = Window(ctx)
    first_t = 0
    for _ in range(p["rounds"]):
        target = lg.delivered + n
        t = lg.publish(pub, chans)
        first_t = first_t or t
        if not lg.wait_deliveries(target, ctx.left()):
            break
    w = win.end()
    lat = latency_summary(lg.lat)
    span = (lg.last_ns - first_t) / 1e9 if lg.last_ns else 0
    return _health(
        lg,
        opened,
        {
            "deliveries": lg.delivered,
            "expected_deliveries": n * p["rounds"],
            "missing_conns": lg.missing(opened.conns, p["rounds"]),
            "deliveries_per_s": lg.delivered / span if span > 0 else None,
            "p50_ms": lat.get("p50_ms"),
            "p99_ms": lat.get("p99_ms"),
            "server_cpu_us_per_delivery": _us_per(w["server_cpu_s"], lg.delivered),
            "gen_cpu_pct": w["gen_cpu_pct"],
            "server_cpu_pct": w["server_cpu_pct"],
        },
    )


def scenario_echo(ctx: Ctx) -> dict:
    """One connection, sequential round trips of a ~100-byte message."""
    p = ctx.params
    lg = ctx.lg()
    win = Window(ctx)
    try:
        rtts = loadgen.echo_rtt(lg, p["count"], timeout=min(30.0, ctx.left()))
    except (OSError, ConnectionError) as exc:
        raise ScenarioError(f"echo failed: {exc}") from exc
    w = win.end()
    lat = latency_summary(rtts)
    return {
        "round_trips": len(rtts),
        "expected_round_trips": p["count"],
        "rtt_p50_us": lat["p50_ms"] * 1000,
        "rtt_p99_us": lat["p99_ms"] * 1000,
        "server_cpu_us_per_rtt": _us_per(w["server_cpu_s"], len(rtts)),
        "gen_cpu_pct": w["gen_cpu_pct"],
        "dropped": 0,
        "refused": 0,
    }


def scenario_idle(ctx: Ctx) -> dict:
    """RSS of the server tree per connection: idle, then after a few broadcasts."""
    p = ctx.params
    srv = ctx.server
    lg = ctx.lg(deflate=p.get("deflate", False))
    # Warm-up: let lazy imports and first-use allocations happen before the baseline.
    warm = lg.open(5, timeout=min(20.0, ctx.left()))
    wpub = ctx.publisher(lg)
    ctx.await_members(lg, warm.conns, wpub)
    lg.publish(wpub, [channel_name(0)])
    lg.wait_deliveries(len(warm.conns), min(10.0, ctx.left()))
    lg.close([*warm.conns, wpub])
    srv.settle(5.0)
    lg.run_for(p["settle"])
    lg.reset_counts()
    lg.dropped = 0
    rss0, tcp0 = srv.rss_kib(), sockstat_tcp_pages()
    opened = ctx.subscribers(lg, p["n"])
    n = len(opened.conns)
    lg.run_for(p["settle"])
    rss1, tcp1 = srv.rss_kib(), sockstat_tcp_pages()
    pub = ctx.publisher(lg)
    ctx.await_members(lg, opened.conns, pub)
    for i in range(p["broadcasts"]):
        lg.publish(pub, [channel_name(0)])
        lg.wait_deliveries(n * (i + 1), ctx.left())
    lg.run_for(p["settle"])
    rss2 = srv.rss_kib()
    return _health(
        lg,
        opened,
        {
            "deliveries": lg.delivered,
            "expected_deliveries": n * p["broadcasts"],
            "missing_conns": lg.missing(opened.conns, p["broadcasts"]),
            "rss_before_kib": rss0,
            "rss_idle_kib": rss1,
            "rss_after_kib": rss2,
            "kib_per_conn_idle": (rss1 - rss0) / n,
            "kib_per_conn_after": (rss2 - rss0) / n,
            "kib_per_conn_growth": (rss2 - rss1) / n,
            "kernel_tcp_kib_per_conn": (tcp1 - tcp0) * PAGE_KIB / n,
            "deflate_accepted": lg.deflate_accepted / max(1, lg.handshakes),
        },
    )


def scenario_idle_plain(ctx: Ctx) -> dict:
    """RSS of the server tree per open connection that only waits (an echo app's, at its route)."""
    p = ctx.params
    srv = ctx.server
    lg = ctx.lg()
    warm = lg.open(5, role=PLAIN, timeout=min(20.0, ctx.left()))
    lg.close(warm.conns)
    srv.settle(5.0)
    lg.run_for(p["settle"])
    lg.dropped = 0
    rss0, tcp0 = srv.rss_kib(), sockstat_tcp_pages()
    opened = lg.open(p["n"], role=PLAIN, timeout=ctx.left())
    if not opened.conns:
        raise ScenarioError(f"no connection opened: {_errors(opened.errors)}")
    n = len(opened.conns)
    lg.run_for(p["settle"])
    rss1, tcp1 = srv.rss_kib(), sockstat_tcp_pages()
    return _health(
        lg,
        opened,
        {
            "rss_before_kib": rss0,
            "rss_idle_kib": rss1,
            "kib_per_conn_idle": (rss1 - rss0) / n,
            "kernel_tcp_kib_per_conn": (tcp1 - tcp0) * PAGE_KIB / n,
        },
    )


def scenario_rpc(ctx: Ctx) -> dict:
    """One native connection: a call to the peer's no-op RPC method and a publish, taken in turn,
    each waiting for its reply; the round trip of each."""
    p = ctx.params
    lg = ctx.lg()
    data = b'{"t":%019d,"s":%010d,"p":"xx"}' % (time.time_ns(), 1_000_000_000)
    commands = {
        "rpc": b'{"type":"rpc","method":"%s","params":{}' % ctx.peer.rpc_method.encode(),
        "publish": b'{"type":"publish","channel":"%s","data":%s' % (channel_name(0).encode(), data),
    }
    win = Window(ctx)
    try:
        rtts = loadgen.command_rtts(lg, commands, p["count"], timeout=min(30.0, ctx.left()))
    except (OSError, ConnectionError) as exc:
        raise ScenarioError(f"round trips failed: {exc}") from exc
    w = win.end()
    rpc, publish = latency_summary(rtts["rpc"]), latency_summary(rtts["publish"])
    done = len(rtts["rpc"]) + len(rtts["publish"])
    return {
        "round_trips": done,
        "expected_round_trips": 2 * p["count"],
        "rpc_p50_us": rpc["p50_ms"] * 1000,
        "rpc_p99_us": rpc["p99_ms"] * 1000,
        "publish_p50_us": publish["p50_ms"] * 1000,
        "publish_p99_us": publish["p99_ms"] * 1000,
        "server_cpu_us_per_rtt": _us_per(w["server_cpu_s"], done),
        "dropped": 0,
        "refused": 0,
    }


def scenario_connect(ctx: Ctx) -> dict:
    """Handshakes per second with a bounded number in flight; then close them."""
    p = ctx.params
    lg = ctx.lg()
    win = Window(ctx)
    res = lg.open(p["n"], role=PLAIN, in_flight=p["in_flight"], timeout=ctx.left())
    w = win.end()
    figures = {
        "connections": len(res.conns),
        "refused": res.failed,
        "dropped": lg.dropped,
        "connects_per_s": len(res.conns) / res.elapsed if res.elapsed else None,
        "server_cpu_us_per_connect": _us_per(w["server_cpu_s"], len(res.conns)),
        "gen_cpu_pct": w["gen_cpu_pct"],
        "server_cpu_pct": w["server_cpu_pct"],
    }
    if res.errors:
        figures["errors"] = _errors(res.errors)
    return figures


def scenario_storm(ctx: Ctx) -> dict:
    """N subscribers over C channels, all cut at once; `missed` messages per channel are published
    while they are away, then every one reconnects within `window` seconds (random moments, as
    jittered backoff spreads them) and subscribes again from where it was. Servers whose protocol
    has recovery (an epoch in the subscribe reply) replay what was missed; the others' subscribers
    lose it, which `deliveries` shows."""
    p = ctx.params
    chans = [channel_name(i) for i in range(p["channels"])]
    lg = ctx.lg()
    opened = ctx.subscribers(lg, p["n"], channels=chans)
    n = len(opened.conns)
    ctx.require(n == p["n"], f"only {n} of {p['n']} opened")
    pub = ctx.publisher(lg)
    target = lg.delivered + n
    lg.publish(pub, chans)
    ctx.require(lg.wait_deliveries(target, ctx.left()), "the first message did not reach everyone")
    lg.resume_from(1)
    recovers = bool(lg.positions)
    dropped_wall = time.time_ns()
    dropped_at = time.monotonic()
    lg.abort(opened.conns)
    for _ in range(p["missed"]):
        lg.publish(pub, chans)
    lg.reset_counts()
    win = Window(ctx)
    back_at = time.monotonic()
    res = lg.open_spread(n, chans, p["window"], timeout=ctx.left())
    resubscribed_s = back_at - dropped_at + res.elapsed if res.conns else None
    expected = len(res.conns) * p["missed"]
    if recovers:
        lg.wait_deliveries(expected, min(30.0, ctx.left()))
    w = win.end()
    recovered = sum(1 for c in res.conns if c.got == p["missed"]) if recovers else 0
    all_back = recovers and recovered == n
    return _health(
        lg,
        res,
        {
            "reconnected": len(res.conns),
            "resubscribed_s": resubscribed_s,
            "recovers": recovers,
            "recovered_conns": recovered,
            "recovered_s": (lg.last_ns - dropped_wall) / 1e9 if all_back and lg.last_ns else None,
            "deliveries": lg.delivered,
            "expected_deliveries": expected,
            "server_cpu_us_per_reconnect": _us_per(w["server_cpu_s"], len(res.conns)),
            "gen_cpu_pct": w["gen_cpu_pct"],
            "server_cpu_pct": w["server_cpu_pct"],
        },
    )


def scenario_fanout_cpu(ctx: Ctx) -> dict:
    """Stream publishes to N subscribers, at most `window` undelivered; server µs/delivery."""
    p = ctx.params
    lg = ctx.lg()
    opened = ctx.subscribers(lg, p["n"])
    n = len(opened.conns)
    pub = ctx.publisher(lg)
    lg.lat_on = False
    lg.reset_counts()
    ch = channel_name(0)
    sent = 0
    win = Window(ctx)
    first_t = 0
    end = time.monotonic() + p["seconds"]
    while time.monotonic() < end:
        room = p["window"] - (sent - lg.delivered // n)
        if room > 0:
            t = lg.publish(pub, [ch] * room)
            first_t = first_t or t
            sent += room
        lg.poll(0.05, lg.nap)
        ctx.left()
    drained = lg.wait_deliveries(sent * n, min(30.0, ctx.left()))
    w = win.end()
    span = (lg.last_ns - first_t) / 1e9 if lg.last_ns else 0
    return _health(
        lg,
        opened,
        {
            "deliveries": lg.delivered,
            "expected_deliveries": sent * n,
            "drained": drained,
            "missing_conns": lg.missing(opened.conns, sent),
            "messages": sent,
            "deliveries_per_s": lg.delivered / span if span > 0 else None,
            "server_cpu_us_per_delivery": _us_per(w["server_cpu_s"], lg.delivered),
            "gen_cpu_pct": w["gen_cpu_pct"],
            "server_cpu_pct": w["server_cpu_pct"],
        },
    )


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Ctx], dict]
    full: dict
    quick: dict
    timeout: float  # seconds, full size; quick runs get a third (at least 20 s)
    fresh: bool = False  # needs a newly started server (memory figures)
    title: str = ""
    # The load generator's dialects it is measured in.
    dialects: tuple[str, ...] = loadgen.PUBSUB_DIALECTS
    # A Peer attribute that must be set for it to apply ("rpc_method").
    requires: str = ""

    def applies_to(self, peer) -> bool:
        return peer.dialect in self.dialects and (not self.requires or bool(getattr(peer, self.requires)))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "idle_10k",
            scenario_idle,
            {"n": 10000, "broadcasts": 3, "settle": 1.0},
            {"n": 300, "broadcasts": 2, "settle": 0.3},
            120,
            fresh=True,
            title="RSS per idle subscribed connection, then after broadcasts",
        ),
        Scenario(
            "idle_10k_deflate",
            scenario_idle,
            {"n": 10000, "broadcasts": 3, "settle": 1.0, "deflate": True},
            {"n": 300, "broadcasts": 2, "settle": 0.3, "deflate": True},
            120,
            fresh=True,
            title="The same with permessage-deflate offered, as browsers do",
        ),
        Scenario(
            "echo",
            scenario_echo,
            {"count": 5000},
            {"count": 200},
            60,
            title="One connection, sequential ~100-byte round trips",
            dialects=(*loadgen.PUBSUB_DIALECTS, "echo"),
        ),
        Scenario(
            "connect_rate",
            scenario_connect,
            {"n": 2000, "in_flight": 50},
            {"n": 200, "in_flight": 20},
            60,
            title="WebSocket handshakes per second",
        ),
        Scenario(
            "broadcast_5k",
            scenario_broadcast,
            {"n": 5000, "count": 20, "gap": 0.05},
            {"n": 200, "count": 5, "gap": 0.01},
            120,
            title="Single publishes to N subscribers of one channel",
        ),
        Scenario(
            "broadcast_10k",
            scenario_broadcast,
            {"n": 10000, "count": 20, "gap": 0.05},
            {"n": 400, "count": 5, "gap": 0.01},
            180,
            title="Single publishes to N subscribers of one channel",
        ),
        Scenario(
            "burst_5k",
            scenario_burst,
            {"n": 5000, "burst": 20, "repeats": 5, "gap": 0.05},
            {"n": 200, "burst": 20, "repeats": 3, "gap": 0.01},
            120,
            title="20 publishes back to back (one send) to N subscribers",
        ),
        Scenario(
            "burst_5k_deflate",
            scenario_burst,
            {"n": 5000, "burst": 20, "repeats": 5, "gap": 0.05, "deflate": True},
            {"n": 200, "burst": 20, "repeats": 3, "gap": 0.01, "deflate": True},
            180,
            title="The same burst, permessage-deflate offered",
        ),
        Scenario(
            "channels_10k",
            scenario_channels,
            {"n": 10000, "channels": 1000, "rounds": 10},
            {"n": 400, "channels": 40, "rounds": 3},
            180,
            title="N connections over N/10 channels, one publish per channel per round",
        ),
        Scenario(
            "fanout_cpu",
            scenario_fanout_cpu,
            {"n": 1000, "seconds": 3.0, "window": 16},
            {"n": 100, "seconds": 0.5, "window": 8},
            90,
            title="Streaming publishes to 1,000 subscribers: server CPU per delivery",
        ),
        Scenario(
            "storm_10k",
            scenario_storm,
            {"n": 10000, "channels": 100, "missed": 5, "window": 2.0},
            {"n": 300, "channels": 10, "missed": 2, "window": 0.5},
            180,
            title="A reconnect storm: N subscribers cut at once, all back within the window, recovering what they missed",
            # The graphql and pusher dialects subscribe without a position: their rows measure
            # fan-out, and the native one the storm.
            dialects=("json", "socketio"),
        ),
        Scenario(
            "burst_chat_1k",
            scenario_burst,
            {"n": 1000, "burst": 20, "repeats": 5, "gap": 0.05},
            {"n": 100, "burst": 20, "repeats": 3, "gap": 0.01},
            120,
            title="The chat: 20 messages sent back to back (one send) by one member, to N members",
            dialects=loadgen.CHAT_DIALECTS,
        ),
        Scenario(
            "idle_chat",
            scenario_idle,
            {"n": 10000, "broadcasts": 3, "settle": 1.0},
            {"n": 300, "broadcasts": 2, "settle": 0.3},
            180,
            fresh=True,
            title="The chat: RSS per idle member, then after a few messages",
            dialects=loadgen.CHAT_DIALECTS,
        ),
        Scenario(
            "idle_echo",
            scenario_idle_plain,
            {"n": 10000, "settle": 1.0},
            {"n": 300, "settle": 0.3},
            120,
            fresh=True,
            title="The echo app: RSS per idle connection",
            dialects=("echo",),
        ),
        Scenario(
            "rpc_rtt",
            scenario_rpc,
            {"count": 5000},
            {"count": 200},
            60,
            title="One connection: a call to a no-op RPC method and a publish, in turn, each waiting for its reply",
            dialects=("json",),
            requires="rpc_method",
        ),
    )
}

SUM_KEYS = {
    "dropped",
    "refused",
    "missing_conns",
    "deliveries",
    "expected_deliveries",
    "round_trips",
    "expected_round_trips",
    "connections",
    "reconnected",
    "recovered_conns",
    "messages",
    "broadcasts",
}


def aggregate(runs: list[dict]) -> dict:
    """Figures of repeated runs: counts summed, everything else the median."""
    if len(runs) == 1:
        return dict(runs[0])
    out: dict = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if key in SUM_KEYS and len(nums) == len(values):
            out[key] = sum(nums)
        elif nums and len(nums) == len(values):
            out[key] = statistics.median(nums)
        else:
            out[key] = values[-1]
    return out


# ------------------------------------------------------------------------- running


def _alarm(signum, frame):
    raise ScenarioTimeout("scenario timeout (watchdog)")


def run_scenario(peer, sc: Scenario, server: Server, params: dict, timeout: float) -> dict:
    """One run of one scenario on a started server; raises ScenarioError on failure."""
    ctx = Ctx(peer, server, params, time.monotonic() + timeout)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout + 15)
    try:
        figures = sc.run(ctx)
        if not server.alive():
            raise ScenarioError(server.exit_reason())
        figures.update({f"_{k}": v for k, v in ctx.extra.items()})
        return figures
    except ScenarioError:
        if not server.alive():
            raise ScenarioError(server.exit_reason()) from None
        raise
    except Exception as exc:  # a bug or an OS error: this scenario is n/a, the run goes on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise ScenarioError(f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        for gen in ctx.gens:
            gen.shutdown()


def run_peer(name: str, scenarios: list[Scenario], args, log) -> dict:
    from bench.peers.registry import PEERS

    peer = PEERS[name]
    results: dict = {}
    server = Server(peer, Path(args.out) / "logs" / f"{name}.log", args.server_cpu)
    used = False
    start_failure = None
    try:
        for sc in [sc for sc in scenarios if sc.applies_to(peer)]:
            if start_failure:
                results[sc.name] = {"status": "n/a", "reason": start_failure}
                log(f"  {name}/{sc.name}: n/a (did not start)")
                continue
            params = sc.quick if args.quick else sc.full
            timeout = max(20.0, sc.timeout / 3) if args.quick else sc.timeout
            runs, reason = [], None
            for _ in range(args.repeat):
                try:
                    if sc.fresh and used or not server.alive():
                        server.stop()
                        used = False
                    if not server.alive():
                        server.start(args.start_timeout)
                    used = True
                    runs.append(run_scenario(peer, sc, server, params, timeout))
                    if not server.settle(60.0):
                        log(f"  {name}/{sc.name}: server still busy 60 s after closing")
                except ScenarioError as exc:
                    reason = str(exc)
                    if reason.startswith("failed to start"):
                        start_failure = reason
                    server.stop()
                    break
            if reason and not runs:
                results[sc.name] = {"status": "n/a", "reason": reason}
            else:
                figs = aggregate([{k: v for k, v in r.items() if not k.startswith("_")} for r in runs])
                entry = {"status": "ok", "figures": figs, "runs": runs, "params": params}
                if reason:
                    entry["note"] = f"only {len(runs)} of {args.repeat} runs: {reason}"
                results[sc.name] = entry
            log(f"  {name}/{sc.name}: {_brief(results[sc.name])}")
    finally:
        server.stop()
    return results


def _brief(entry: dict) -> str:
    if entry["status"] != "ok":
        return "n/a: " + entry["reason"]
    f = entry["figures"]
    keys = (
        "deliveries_per_s",
        "p50_ms",
        "p99_ms",
        "server_cpu_us_per_delivery",
        "kib_per_conn_idle",
        "kib_per_conn_after",
        "rtt_p50_us",
        "rtt_p99_us",
        "rpc_p50_us",
        "rpc_p99_us",
        "publish_p50_us",
        "publish_p99_us",
        "connects_per_s",
        "deliveries",
        "expected_deliveries",
        "dropped",
        "refused",
        "gen_cpu_pct",
    )
    parts = []
    for k in keys:
        v = f.get(k)
        if v is not None:
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def machine_info(args) -> dict:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "mode": "quick" if args.quick else "full",
        "repeat": args.repeat,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "nofile": loadgen.raise_nofile(),
        "redis": redis_version(),
    }


def redis_version() -> str:
    """ "7.0.15, jemalloc-5.3.0" for the redis-server the Redis peer runs; its allocator and version
    move that peer's figures."""
    binary = switchboard_redis.redis_server_binary()
    if binary is None:
        return ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5).stdout
        fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
        return f"{fields.get('v', '?')}, {fields.get('malloc', '?')}"
    return ""


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(
        prog="python -m bench.harness",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    ap.add_argument("--peers", help="comma-separated peer names (default: all in the registry)")
    ap.add_argument("--scenarios", help="comma-separated scenario names (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="output directory")
    ap.add_argument("--repeat", type=int, default=1, help="runs per scenario (median reported)")
    ap.add_argument("--start-timeout", type=float, default=30.0)
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    ap.add_argument("--list", action="store_true", help="list peers and scenarios, then exit")
    args = ap.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    args.server_cpu = 0 if pin else None
    args.client_cpu = 1 if pin else None
    return args


def main(argv: list[str] | None = None) -> int:
    from bench import report
    from bench.peers.registry import PEERS

    args = parse_args(argv)
    if args.list:
        print("peers:", ", ".join(PEERS))
        print("scenarios:", ", ".join(SCENARIOS))
        return 0
    peers = args.peers.split(",") if args.peers else list(PEERS)
    names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    unknown = [p for p in peers if p not in PEERS] + [s for s in names if s not in SCENARIOS]
    if unknown:
        print(f"unknown peer or scenario: {', '.join(unknown)}", file=sys.stderr)
        return 2
    scenarios = [SCENARIOS[s] for s in names]
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = machine_info(args)

    def log(msg: str) -> None:
        print(msg, flush=True)

    # SIGTERM/SIGINT: unwind through the `finally` blocks that stop the servers.
    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    results: dict = {}
    t0 = time.monotonic()
    for name in peers:
        log(f"{name}:")
        results[name] = run_peer(name, scenarios, args, log)
    client_row = None
    if "switchboard" in peers:  # the Python client's own row: bench/client_stream.py
        from bench import client_stream

        log("client_stream:")
        client_row = client_stream.harness_row(args.quick, log)
        from bench import conflation  # a ticker beside slow readers: bench/conflation.py

        log("conflation:")
        conflation_row = conflation.harness_row(args.quick, log)
    meta["duration_s"] = round(time.monotonic() - t0, 1)
    doc = {
        "meta": meta,
        "scenarios": {s.name: {"title": s.title, "params": s.quick if args.quick else s.full} for s in scenarios},
        "results": results,
    }
    if client_row is not None:
        doc["client_stream"] = client_row
        doc["conflation"] = conflation_row
    report.write(doc, out)
    print()
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
