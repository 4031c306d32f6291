"""A soak run: steady subscribers, connection churn and a steady publisher, for minutes at a time.

    python -m bench.soak --seconds 300 --connections 2000 [--url ws://HOST:PORT] [--json PATH]

What it does, with `websockets`' asyncio client, in this one process:
* N steady subscribers connect to one channel and stay for the whole run;
* a publisher publishes R messages a second to that channel, each with a sequence number;
* churn loops connect, subscribe to the channel, wait for one message and leave, over and over
  (every fourth time dropping the TCP connection without a close frame): thousands over the run;
* at the end, every steady subscriber must still be connected and must have had every message the
  server acknowledged, exactly once.
Meanwhile it reads the server's processes in /proc: the resident memory of the whole tree at the
start, after the warm-up and at the end of the load (the drift), and each worker's descriptors
before any client connected and after every client left. Connections a worker opens to other
services (Redis) are counted apart: a pool that grows to its peak is not a leak of client sockets.

Without --url it starts its own server from the repository root (`gunicorn -c gunicorn.conf.py
wsgi:app` with the rate limit off; other SWITCHBOARD_* variables pass through, so
SWITCHBOARD_REDIS_URL=... SWITCHBOARD_WORKERS=2 soaks a Redis-backed pair) and stops it at the
end. With --url it finds the server's processes by the port they listen on (or --server-pid); that
server's rate limit must allow the publisher's rate.

It prints a readable summary and the results as JSON (to --json PATH, or after the summary). Exit
status 1 if a steady subscriber missed, duplicated or got an unknown message or was dropped, a
churn connection failed, a publish failed, a worker was replaced, or a worker kept more than
--fd-tolerance descriptors; 2 if the run could not start. It never leaves its server running and
never waits without a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TIMEOUT = 10.0  # for any one step of a client: a handshake, a reply, a message
CONNECT_AT_ONCE = 50  # handshakes in flight while the steady subscribers connect
CLIENT_ERRORS = (OSError, TimeoutError, RuntimeError, websockets.WebSocketException)


class SoakError(Exception):
    """The run could not start or could not go on; exit status 2."""


# -- the server's processes, from /proc ------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    parent = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(name))
    return tree


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children, tree, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def workers(master: int) -> list[int]:
    return sorted(_children().get(master, []))


def rss_kb(pids: list[int]) -> int:
    """Resident memory of these processes together, in KiB (a process that is gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE_KB
        except OSError:
            pass
    return total


def tcp_sockets() -> dict[str, tuple[int, bool]]:
    """Every TCP socket on this host: its fd link name (socket:[inode]) -> (local port, listening)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    parts = line.split()
                    found[f"socket:[{parts[9]}]"] = (int(parts[1].rsplit(":", 1)[1], 16), parts[3] == "0A")
        except OSError:
            continue
    return found


@dataclass
class Descriptors:
    """One worker's open descriptors: all of them, and its connections out to other services."""

    total: int
    outbound: int  # TCP connections from another local port than the server's: Redis, say

    @property
    def held(self) -> int:
        """What a leak of client sockets (or of anything but outbound connections) would grow."""
        return self.total - self.outbound

    def to_json(self) -> dict:
        return {"total": self.total, "outbound": self.outbound, "held": self.held}


def descriptors(pid: int, server_port: int, sockets: dict[str, tuple[int, bool]]) -> Descriptors | None:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
        links = [os.readlink(f"/proc/{pid}/fd/{name}") for name in names]
    except OSError:
        return None
    outbound = 0
    for link in links:
        port, listening = sockets.get(link, (server_port, False))
        outbound += port != server_port and not listening
    return Descriptors(len(links), outbound)


def listening_master(port: int) -> int | None:
    """The root of the processes that hold a socket listening on `port` (Gunicorn's master)."""
    listeners = {name for name, (local, listening) in tcp_sockets().items() if listening and local == port}
    holders = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if any(os.readlink(f"/proc/{name}/fd/{fd}") in listeners for fd in os.listdir(f"/proc/{name}/fd")):
                    holders.add(int(name))
            except OSError:
                continue
    parents = {pid: parent for parent, pids in _children().items() for pid in pids}
    roots = [pid for pid in holders if parents.get(pid) not in holders]
    return roots[0] if len(roots) == 1 else None


# -- the server ------------------------------------------------------------------------------------


def http_get(url: str, key: str | None = None) -> tuple[int, dict | None]:
    """The status and JSON of an answer; (0, None) when nothing answers."""
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, None
    except (OSError, ValueError):
        return 0, None


def wait_healthy(http: str, timeout: float, ready: Callable[[], bool] = lambda: True) -> bool:
    """Poll /healthz until it answers 200 and `ready()` holds; False after `timeout` seconds.

    A Redis-backed worker says "degraded" (503) until its broker has connected, which its first
    /healthz starts.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_get(http + "/healthz")[0] == 200 and ready():
            return True
        time.sleep(0.1)
    return False


@dataclass
class Target:
    """The server under soak: where it answers and, when it can be seen, its master process."""

    url: str
    http: str
    port: int
    master: int | None
    api_key: str | None


class OwnServer:
    """`gunicorn -c gunicorn.conf.py wsgi:app` on a free port, in a process group of its own."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.http = f"http://127.0.0.1:{self.port}"
        self.api_key = os.environ.get("SWITCHBOARD_API_KEY") or secrets.token_hex(16)
        # Counted as gunicorn.conf.py counts them: the run starts once every one is up.
        redis = os.environ.get("SWITCHBOARD_REDIS_URL")
        self.workers = int(os.environ.get("SWITCHBOARD_WORKERS") or ((os.cpu_count() or 1) if redis else 1))
        env = {
            **os.environ,
            "PORT": str(self.port),
            "SWITCHBOARD_BIND_HOST": "127.0.0.1",
            "SWITCHBOARD_RATE_MESSAGES": "0",
            "SWITCHBOARD_API_KEY": self.api_key,
        }
        gunicorn = Path(sys.executable).with_name("gunicorn")
        command = [str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]
        self.log = tempfile.NamedTemporaryFile(prefix="soak-gunicorn-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [*command, "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 30.0) -> Target:
        def all_workers_up() -> bool:
            if self.process.poll() is not None:
                raise SoakError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            return len(workers(self.process.pid)) == self.workers

        if not wait_healthy(self.http, timeout, all_workers_up):
            self.stop()
            raise SoakError(f"the server was not up with {self.workers} workers in {timeout:.0f} s:\n{self.log_tail()}")
        return Target(f"ws://127.0.0.1:{self.port}/ws", self.http, self.port, self.process.pid, self.api_key)

    def log_tail(self, size: int = 3000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-size:]

    def stop(self) -> int:
        """SIGTERM, as a deployment would; the whole group is killed if it takes over 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        return self.process.returncode


def running_server(url: str, server_pid: int | None, api_key: str | None) -> Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise SoakError(f"--url must be ws://HOST:PORT[/ws] or wss://..., not {url!r}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    http = f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"
    ws_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") or "/ws", parts.query, ""))
    if not wait_healthy(http, 10):
        raise SoakError(f"{http}/healthz did not answer 200 within 10 s")
    master = server_pid or listening_master(port)
    if master is None:
        print("soak: the server's processes were not found: no memory or descriptor figures", file=sys.stderr)
    return Target(ws_url, http, port, master, api_key)


# -- the clients -----------------------------------------------------------------------------------


@dataclass
class Steady:
    """A subscriber that stays for the whole run, counting the copies of each sequence number."""

    ws: ClientConnection | None = None
    counts: bytearray = field(default_factory=bytearray)  # seq -> copies received (at most 255)
    deliveries: int = 0
    highest: int = -1
    caught_up: bool = False
    dropped: str | None = None  # why it left before the end, if it did
    close_code: int | None = None

    def record(self, seq: int) -> None:
        if seq >= len(self.counts):
            self.counts.extend(bytes(max(seq + 1 - len(self.counts), 1024)))
        if self.counts[seq] < 255:
            self.counts[seq] += 1
        self.deliveries += 1
        self.highest = max(self.highest, seq)


@dataclass
class Run:
    """Everything the clients of one run share and count."""

    url: str
    channel: str
    steady: list[Steady]
    opened: int = 0
    churn_opened: int = 0
    churn_clean: int = 0
    churn_dropped: int = 0
    churn_close_codes: Counter = field(default_factory=Counter)
    churn_errors: Counter = field(default_factory=Counter)
    sent: int = 0
    replies: int = 0
    acked: set[int] = field(default_factory=set)
    publish_errors: Counter = field(default_factory=Counter)
    final_seq: int | None = None  # the last acknowledged publish, once publishing has stopped
    caught_up: int = 0
    ending: bool = False
    all_caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    all_replied: asyncio.Event = field(default_factory=asyncio.Event)
    stop_publishing: asyncio.Event = field(default_factory=asyncio.Event)
    stop_churn: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(self) -> ClientConnection:
        # No client pings: the server pings quiet sockets itself, and the library answers.
        ws = await connect(self.url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, ping_interval=None)
        self.opened += 1
        return ws

    def check_caught_up(self, sub: Steady) -> None:
        if not sub.caught_up and self.final_seq is not None and sub.highest >= self.final_seq:
            sub.caught_up = True
            self.caught_up += 1
        if self.final_seq is not None and self.caught_up == len(self.steady):
            self.all_caught_up.set()


async def recv_json(ws: ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def subscribe(ws: ClientConnection, channel: str) -> list[dict]:
    """Read the welcome and subscribe; returns what arrived before the reply (and after it, only it)."""
    welcome = await recv_json(ws)
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome, got {welcome}")
    await ws.send(json.dumps({"type": "subscribe", "channel": channel, "id": "s"}))
    early = []
    while (frame := await recv_json(ws)).get("id") != "s":
        early.append(frame)
    if frame["type"] != "reply":
        raise RuntimeError(f"subscribe refused: {frame}")
    return early


async def join_steady(run: Run, sub: Steady, gate: asyncio.Semaphore) -> None:
    async with gate:
        sub.ws = await run.open()
        early = await subscribe(sub.ws, run.channel)
    for frame in early:
        if frame["type"] == "message":
            sub.record(frame["data"]["seq"])


async def listen_steady(run: Run, sub: Steady) -> None:
    """Count every message until the connection ends; before the end of the run, that is a failure."""
    try:
        async for raw in sub.ws:
            frame = json.loads(raw)
            if frame["type"] == "message":
                sub.record(frame["data"]["seq"])
                run.check_caught_up(sub)
    except websockets.ConnectionClosed:
        pass
    rcvd = sub.ws.protocol.close_rcvd
    sub.close_code = rcvd.code if rcvd is not None else None
    if not run.ending:
        sub.dropped = f"closed by the server with {sub.close_code}" if rcvd else "connection lost"


async def publisher(run: Run, rate: float) -> None:
    """Publish `rate` a second, on a fixed schedule, until told to stop; then await every reply.

    A lost connection ends the publishing: that is a failure of the run, counted, not retried.
    """
    ws = await run.open()
    await recv_json(ws)  # the welcome

    async def read_replies() -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "reply":
                run.acked.add(frame["id"])
            elif frame["type"] == "error":
                run.publish_errors[frame["code"]] += 1
            else:
                continue
            run.replies += 1
            if run.stop_publishing.is_set() and run.replies == run.sent:
                run.all_replied.set()

    reader = asyncio.create_task(read_replies())
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while not run.stop_publishing.is_set():
            seq = run.sent
            data = {"seq": seq, "t": time.time()}
            await ws.send(json.dumps({"type": "publish", "channel": run.channel, "id": seq, "data": data}))
            run.sent += 1
            try:  # the next one on schedule (at once if behind), unless told to stop first
                await asyncio.wait_for(run.stop_publishing.wait(), max(0.0, start + run.sent / rate - loop.time()))
            except TimeoutError:
                pass
        if run.replies == run.sent:
            run.all_replied.set()
        await asyncio.wait_for(run.all_replied.wait(), TIMEOUT)
    except TimeoutError:
        run.publish_errors["no reply"] += run.sent - run.replies
    except websockets.ConnectionClosed as closed:
        run.publish_errors[f"publisher connection lost ({closed})"] += 1
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await ws.close()


async def churner(run: Run, index: int) -> None:
    """Connect, subscribe, hear one message, leave; again and again until told to stop."""
    turn = index
    while not run.stop_churn.is_set():
        turn += 1
        ws = None
        try:
            ws = await run.open()
            run.churn_opened += 1
            early = await subscribe(ws, run.channel)
            if not any(frame["type"] == "message" for frame in early):
                while (await recv_json(ws))["type"] != "message":
                    pass
            if turn % 4 == 0:
                ws.transport.abort()  # gone without a close frame, as a phone leaving coverage is
                run.churn_dropped += 1
            else:
                await ws.close()
                rcvd = ws.protocol.close_rcvd
                run.churn_close_codes[rcvd.code if rcvd is not None else None] += 1
                run.churn_clean += 1
        except CLIENT_ERRORS as error:
            run.churn_errors[f"{type(error).__name__}: {error}"[:120]] += 1
            if ws is not None:
                ws.transport.abort()


# -- measuring -------------------------------------------------------------------------------------


class Measure:
    """The server's memory and its workers' descriptors, when its processes can be seen."""

    def __init__(self, target: Target) -> None:
        self.master = target.master
        self.port = target.port
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self.workers = workers(self.master) if self.master else []
        self.fds_start: dict[int, Descriptors | None] = {}

    def rss(self) -> int | None:
        if self.master is None:
            return None
        value = rss_kb(process_tree(self.master))
        self.samples.append((round(time.monotonic() - self.started, 1), value))
        return value

    async def sample_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.rss()

    def fds(self) -> dict[int, Descriptors | None]:
        sockets = tcp_sockets()
        return {pid: descriptors(pid, self.port, sockets) for pid in self.workers}

    async def baseline(self) -> None:
        """Each worker's descriptors once they stop changing (one that just served a client may
        still be closing it): read until two readings 0.5 s apart agree, for at most 10 s."""
        previous, deadline = None, time.monotonic() + 10
        while (now := self.fds()) != previous and time.monotonic() < deadline:
            previous = now
            await asyncio.sleep(0.5)
        self.fds_start = now

    def excess(self, now: dict[int, Descriptors | None]) -> dict[int, int]:
        """Descriptors, other than outbound connections, each worker holds beyond its baseline."""
        grown = {}
        for pid in self.workers:
            start, end = self.fds_start.get(pid), now.get(pid)
            grown[pid] = max(0, end.held - start.held) if start and end else 0
        return grown

    async def settle(self, tolerance: int, timeout: float) -> dict[int, Descriptors | None]:
        """Descriptors once the workers closed what the clients left (a worker waits up to 5 s
        for a close handshake): read until within the tolerance, for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while max(self.excess(now := self.fds()).values(), default=0) > tolerance and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        return now


# -- the run ---------------------------------------------------------------------------------------


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise SoakError(f"{needed} descriptors are needed but RLIMIT_NOFILE is {hard}: raise it (ulimit -n)")


async def prime(run: Run) -> None:
    """One whole session before the baseline, so what a worker opens on first use (its broker
    connections) counts as where it started."""
    channel = run.channel + "-prime"
    async with await run.open() as ws:
        await subscribe(ws, channel)
        await ws.send(json.dumps({"type": "publish", "channel": channel, "data": {}, "id": "p"}))
        while (await recv_json(ws))["type"] != "message":
            pass


async def soak(args: argparse.Namespace, target: Target) -> dict:
    run = Run(target.url, args.channel, [Steady() for _ in range(args.connections)])
    await prime(run)
    measure = Measure(target)
    await measure.baseline()
    memory = {"server_tree_start": measure.rss()}
    began = time.monotonic()

    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    try:
        joining = asyncio.gather(*(join_steady(run, sub, gate) for sub in run.steady))
        await asyncio.wait_for(joining, 60 + args.connections / 50)
    except CLIENT_ERRORS as error:
        raise SoakError(f"the steady subscribers could not all connect and subscribe: {error!r}") from None
    listening = [asyncio.create_task(listen_steady(run, sub)) for sub in run.steady]
    connect_seconds = time.monotonic() - began
    memory["steady_connected"] = measure.rss()

    load_began = time.monotonic()
    publishing = asyncio.create_task(publisher(run, args.rate))
    churning = [asyncio.create_task(churner(run, index)) for index in range(args.churners)]
    sampler = asyncio.create_task(measure.sample_every(args.sample_every))
    await asyncio.sleep(args.warmup)
    memory["after_warmup"] = measure.rss()
    await asyncio.sleep(args.seconds - args.warmup)
    memory["end_of_load"] = measure.rss()
    load_seconds = time.monotonic() - load_began

    # Wind down: churn first (each loop still needs one more message), then the publisher; then
    # every steady subscriber must reach the last acknowledged message.
    run.stop_churn.set()
    await asyncio.wait_for(asyncio.gather(*churning), 3 * TIMEOUT)
    run.stop_publishing.set()
    await asyncio.wait_for(publishing, 3 * TIMEOUT)
    run.final_seq = max(run.acked, default=-1)
    for sub in run.steady:
        run.check_caught_up(sub)
    try:
        await asyncio.wait_for(run.all_caught_up.wait(), 2 * TIMEOUT)
    except TimeoutError:
        pass  # counted below as missed messages
    run.ending = True
    await asyncio.wait_for(asyncio.gather(*(sub.ws.close() for sub in run.steady)), 3 * TIMEOUT)
    await asyncio.wait_for(asyncio.gather(*listening), 3 * TIMEOUT)
    sampler.cancel()
    fds_end = await measure.settle(args.fd_tolerance, args.settle)
    memory["after_all_closed"] = measure.rss()
    memory["drift"] = memory["end_of_load"] - memory["after_warmup"] if memory["after_warmup"] is not None else None
    memory["samples"] = measure.samples
    server = await asyncio.to_thread(check_server, target, args, len(measure.workers))

    result = {
        "ok": True,
        "failures": [],
        "config": {
            "url": target.url,
            "seconds": args.seconds,
            "connections": args.connections,
            "churners": args.churners,
            "rate": args.rate,
            "warmup": args.warmup,
            "channel": args.channel,
            "fd_tolerance": args.fd_tolerance,
        },
        "timing": {
            "steady_connect_seconds": round(connect_seconds, 2),
            "load_seconds": round(load_seconds, 2),
            "total_seconds": round(time.monotonic() - began, 2),
        },
        "connections": {
            "opened_total": run.opened,
            "steady": len(run.steady),
            "publisher": 1,
            "priming": 1,
            "churn": {
                "opened": run.churn_opened,
                "per_second": round(run.churn_opened / load_seconds, 1),
                "closed_cleanly": run.churn_clean,
                "dropped_without_close": run.churn_dropped,
                "close_codes": {str(code): n for code, n in run.churn_close_codes.items()},
                "errors": dict(run.churn_errors),
            },
        },
        "messages": {
            "published": run.final_seq + 1,
            "acknowledged": len(run.acked),
            "errors": dict(run.publish_errors),
        },
        "steady": tally(run),
        "memory_kb": memory,
        "fds": {
            "workers": measure.workers,
            "start": {str(pid): fds.to_json() if fds else None for pid, fds in measure.fds_start.items()},
            "end": {str(pid): fds.to_json() if fds else None for pid, fds in fds_end.items()},
            "excess": {str(pid): n for pid, n in measure.excess(fds_end).items()},
            "workers_at_the_end": workers(measure.master) if measure.master else [],
            "tolerance": args.fd_tolerance,
        },
        "server": server,
    }
    result["failures"] = judge(result, run)
    result["ok"] = not result["failures"]
    return result


def check_server(target: Target, args: argparse.Namespace, workers: int) -> dict:
    """After the run: is every worker still healthy, and has the server forgotten every client?"""
    # Workers take turns answering; ask often enough to hear from each (most likely).
    answers = [http_get(target.http + "/healthz") for _ in range(4 * max(workers, 1))]
    unhealthy = Counter(json.dumps(body) for status, body in answers if status != 200)
    found: dict = {"unhealthy_answers": dict(unhealthy), "healthz_asked": len(answers)}
    if target.api_key:
        # Counts of subscribers reach the API through the broker: poll until they are gone.
        deadline = time.monotonic() + args.settle
        while True:
            status, body = http_get(target.http + "/api/channels", target.api_key)
            names = {channel["name"]: channel["subscribers"] for channel in (body or {}).get("channels", [])}
            left = {name: count for name, count in names.items() if name.startswith(args.channel)}
            if (status == 200 and not left) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        found["channels_left"] = left if status == 200 else f"/api/channels answered {status}"
        found["stats"] = http_get(target.http + "/api/stats", target.api_key)[1]
    return found


def tally(run: Run) -> dict:
    """Every steady subscriber against the publishes the server acknowledged."""
    published = run.final_seq + 1
    unacked = [seq for seq in range(published) if seq not in run.acked]
    missed = duplicated = unexpected = missing_subs = duplicated_subs = 0
    for sub in run.steady:
        counts = sub.counts[:published].ljust(published, b"\0")
        sub_missed = counts.count(0) - sum(1 for seq in unacked if counts[seq] == 0)
        sub_duplicated = 0
        if len(counts) - counts.count(0) - counts.count(1):  # some arrived twice or more
            sub_duplicated = sum((value - 1) * counts.count(value) for value in set(counts) if value > 1)
        unexpected += sum(1 for seq in unacked if counts[seq]) + sum(1 for value in sub.counts[published:] if value)
        missed += sub_missed
        duplicated += sub_duplicated
        missing_subs += sub_missed > 0
        duplicated_subs += sub_duplicated > 0
    return {
        "subscribers": len(run.steady),
        "connected_to_the_end": sum(sub.dropped is None for sub in run.steady),
        "deliveries": sum(sub.deliveries for sub in run.steady),
        "missed": missed,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "subscribers_missing_messages": missing_subs,
        "subscribers_with_duplicates": duplicated_subs,
        "left_early": dict(Counter(sub.dropped for sub in run.steady if sub.dropped)),
        "close_codes_at_the_end": dict(Counter(str(sub.close_code) for sub in run.steady if not sub.dropped)),
    }


def judge(result: dict, run: Run) -> list[str]:
    steady, fds, messages = result["steady"], result["fds"], result["messages"]
    failures = []
    if steady["missed"]:
        failures.append(f"{steady['missed']} messages missed by {steady['subscribers_missing_messages']} subscribers")
    if steady["duplicated"]:
        failures.append(f"{steady['duplicated']} duplicates to {steady['subscribers_with_duplicates']} subscribers")
    if steady["unexpected"]:
        failures.append(f"{steady['unexpected']} deliveries of messages that were never acknowledged")
    if steady["left_early"]:
        failures.append(f"steady subscribers left early: {steady['left_early']}")
    if run.churn_errors:
        failures.append(f"{sum(run.churn_errors.values())} churn connections failed")
    if set(run.churn_close_codes) - {1000}:
        failures.append(f"churn closes were answered with {dict(run.churn_close_codes)}")
    if run.publish_errors:
        failures.append(f"publishes failed: {dict(run.publish_errors)}")
    if messages["published"] == 0:
        failures.append("nothing was published")
    if result["server"]["unhealthy_answers"]:
        failures.append(f"the server is unhealthy after the run: {result['server']['unhealthy_answers']}")
    if result["server"].get("channels_left"):
        failures.append(f"the server still counts subscribers: {result['server']['channels_left']}")
    if fds["workers_at_the_end"] != fds["workers"]:
        failures.append(f"the workers changed during the run: {fds['workers']} -> {fds['workers_at_the_end']}")
    elif max(fds["excess"].values(), default=0) > fds["tolerance"]:
        failures.append(f"workers hold more descriptors than at the start: {fds['excess']}")
    return failures


# -- the report ------------------------------------------------------------------------------------


def mib(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"


def server_state(server: dict) -> str:
    unhealthy = sum(server["unhealthy_answers"].values())
    health = f"{unhealthy} of {server['healthz_asked']} /healthz answers not 200" if unhealthy else "healthy"
    if "channels_left" not in server:
        return health + " (no API key: subscriber counts not checked)"
    left = server["channels_left"]
    return health + (f", still counting subscribers: {left}" if left else ", no subscribers left")


def summary(result: dict) -> str:
    config, conn, churn = result["config"], result["connections"], result["connections"]["churn"]
    steady, memory, fds, messages = result["steady"], result["memory_kb"], result["fds"], result["messages"]
    drift = "n/a" if memory["drift"] is None else f"{memory['drift'] / 1024:+.1f} MiB"

    def per_worker(readings: dict, key: str) -> str:
        return ", ".join(f"{pid}: {fd[key]}" for pid, fd in readings.items() if fd) or "n/a"

    return "\n".join(
        [
            f"Switchboard soak of {config['url']}: {result['timing']['load_seconds']:.0f} s of load, "
            f"{config['connections']:,} steady subscribers, {config['churners']} churn loops, "
            f"{config['rate']:g} publishes/s",
            f"  connections opened  {conn['opened_total']:,}: {conn['steady']:,} steady, 1 publisher, 1 priming, "
            f"{churn['opened']:,} churn ({churn['per_second']:g}/s; {churn['closed_cleanly']:,} closed, answered "
            f"{churn['close_codes']}; {churn['dropped_without_close']:,} dropped; "
            f"{sum(churn['errors'].values())} failed)",
            f"  messages published  {messages['published']:,} ({messages['acknowledged']:,} acknowledged)",
            f"  steady subscribers  {steady['connected_to_the_end']:,} of {steady['subscribers']:,} there to the end; "
            f"{steady['deliveries']:,} deliveries, {steady['missed']} missed, {steady['duplicated']} duplicated",
            f"  server memory (RSS) start {mib(memory['server_tree_start'])}, steady connected "
            f"{mib(memory['steady_connected'])}, after warm-up {mib(memory['after_warmup'])}, end of load "
            f"{mib(memory['end_of_load'])} (drift {drift}), all closed {mib(memory['after_all_closed'])}",
            f"  worker descriptors  start {per_worker(fds['start'], 'total')}; end {per_worker(fds['end'], 'total')}; "
            f"of which outbound at the end {per_worker(fds['end'], 'outbound')} (tolerance {fds['tolerance']})",
            f"  server afterwards   {server_state(result['server'])}",
            "  result              " + ("PASS" if result["ok"] else "FAIL: " + "; ".join(result["failures"])),
            *([f"  server log          {result['server_log']}"] if result.get("server_log") else []),
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (default 60)")
    parser.add_argument("--connections", type=int, default=200, help="steady subscribers (default 200)")
    parser.add_argument("--url", help="ws://HOST:PORT[/ws] of a running server (default: start one)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's master pid (default: by port)")
    parser.add_argument("--api-key", help="with --url: its API key, to add /api/stats to the results")
    parser.add_argument("--churners", type=int, default=10, help="churn loops at once (default 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="publishes per second (default 20)")
    parser.add_argument("--warmup", type=float, help="load before the warm memory reading (default S/5, at most 30)")
    parser.add_argument("--channel", default="soak", help="the channel (default soak)")
    parser.add_argument("--fd-tolerance", type=int, default=5, help="extra descriptors per worker (default 5)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds workers get to close (default 15)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory readings")
    parser.add_argument("--json", type=Path, help="write the results here instead of after the summary")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.connections < 1 or args.rate <= 0 or args.churners < 0:
        parser.error("--seconds, --connections and --rate must be positive, --churners not negative")
    args.warmup = min(args.seconds, min(30.0, args.seconds / 5) if args.warmup is None else args.warmup)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server, result = None, {}
    try:
        raise_file_limit(args.connections + args.churners + 100)
        if args.url:
            target = running_server(args.url, args.server_pid, args.api_key)
        else:
            server = OwnServer()
            target = server.start()
        result = asyncio.run(soak(args, target))
        if server is not None:
            result["server_exit"] = server.stop()
            if result["server_exit"] != 0:
                result["failures"].append(f"the server exited with {result['server_exit']} on SIGTERM")
                result["ok"] = False
            if not result["ok"]:
                result["server_log"] = server.log.name  # kept for the post-mortem
    except SoakError as error:
        print(f"soak: {error}", file=sys.stderr)
        if server is not None:
            result["server_log"] = server.log.name
            print(f"soak: the server's log is {server.log.name}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
            if not result.get("server_log"):
                Path(server.log.name).unlink(missing_ok=True)
    print(summary(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    else:
        print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
