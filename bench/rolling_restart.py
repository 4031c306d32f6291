"""A rolling restart of two Switchboard instances behind nginx, with the drain and without it.

Two Gunicorn instances share one Redis behind deploy/nginx.conf; N subscribers connect through
nginx to one channel, on which a publisher sends a numbered stream (1, 2, 3, ...) over the HTTP
API. Each instance in turn gets SIGTERM, exits, and is started again on its port, as a deploy
would. The subscribers resume from their offsets after each reconnect and check the numbers.

Measured, per run: the time from each SIGTERM until the last client that instance had is
subscribed again elsewhere ("back"), the peak rate of handshakes the surviving instance logged per
100 ms while the other one drained (it should follow the drain window, not arrive as one spike),
messages lost and duplicated (both must be 0), and connections the draining instance accepted
after it started draining (0). The same restart with SWITCHBOARD_DRAIN_WINDOW=0 (every connection
closed at once with 1001, the behaviour before the drain) runs beside it.

    .venv/bin/python -m bench.rolling_restart                 # 10,000 subscribers, both modes
    .venv/bin/python -m bench.rolling_restart --quick         # 300 subscribers: a smoke run
    .venv/bin/python -m bench.rolling_restart --subscribers 2000 --window 5 --json out.json

The subscribers run in --procs processes of asyncio clients; tests/integration/test_drain.py uses
the same subscribers (native `websockets`, the Python client, GraphQL) to check the guarantees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "stream"
READY = 0  # published until every subscriber has seen it: they are all subscribed
END = -1  # the stream is over: a subscriber that has it stops
API_KEY = "bench-api-key"
GRAPHQL_PROTOCOL = "graphql-transport-ws"
MESSAGES_QUERY = (
    "subscription ($channel: String!, $since: Offset, $epoch: String) "
    "{ messages(channel: $channel, since: $since, epoch: $epoch) { offset epoch data } }"
)
_RESTART_WITHIN = re.compile(r"reconnect within (\d+) ms")


# -- the subscribers ----------------------------------------------------------------------------


@dataclass
class Record:
    """What one subscriber saw: the numbers, each close, and when it was subscribed again."""

    kind: str
    values: list[int] = field(default_factory=list)
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    lost_at: list[float] = field(default_factory=list)
    back_at: list[float] = field(default_factory=list)
    refused: int = 0  # handshakes that failed (a client behind nginx should see none)
    failures: int = 0  # in a row, for the backoff
    ready: bool = False
    done: bool = False
    error: str = ""

    def take(self, data: Any) -> bool:
        """Note one message's data; True once the stream is over."""
        if data == READY:
            self.ready = True
        elif data == END:
            self.done = True
        else:
            self.values.append(data)
        return self.done

    def lost(self, code: int | None, reason: str) -> float:
        """Note a close; the seconds to wait before reconnecting, as the Switchboard clients do:
        a random moment within a drain's window (1012), else a short jittered backoff."""
        self.closes.append((code, reason))
        self.lost_at.append(time.time())
        match = _RESTART_WITHIN.search(reason or "") if code == 1012 else None
        if match:
            return int(match.group(1)) / 1000 * random.random()
        return self.backoff()

    def backoff(self) -> float:
        """The clients' own backoff: between half and all of 0.5 s doubled per failure, up to 15 s."""
        ceiling = min(15.0, 0.5 * 2**self.failures)
        self.failures += 1
        return ceiling * (0.5 + random.random() / 2)


async def native(url: str, record: Record) -> None:
    """A `/ws` subscriber on the `websockets` library, resuming from its offset (protocol.md)."""
    offset, epoch, delay = 0, None, 0.0
    while not record.done:
        await asyncio.sleep(delay)
        try:
            async with websockets.connect(url + "/ws", open_timeout=30, compression=None) as ws:
                await ws.recv()  # welcome
                record.failures = 0
                command = {"type": "subscribe", "id": 1, "channel": CHANNEL, "since": offset}
                if epoch is not None:
                    command["epoch"] = epoch
                await ws.send(json.dumps(command))
                try:
                    async for text in ws:
                        frame = json.loads(text)
                        if frame["type"] == "message":
                            offset = frame["offset"]
                            if record.take(frame["data"]):
                                return
                        elif frame["type"] == "reply":
                            epoch = frame["result"]["epoch"]
                            if record.closes:
                                record.back_at.append(time.time())
                        elif frame["type"] == "error":
                            raise RuntimeError(f"error frame: {frame}")
                except ConnectionClosed:
                    pass
                delay = record.lost(ws.close_code, ws.close_reason or "")
        except (OSError, InvalidHandshake, TimeoutError):
            record.refused += 1
            delay = record.backoff()


async def graphql(url: str, record: Record) -> None:
    """A graphql-transport-ws subscriber to `messages`, resuming with since and epoch."""
    offset, epoch, delay = None, None, 0.0
    while not record.done:
        await asyncio.sleep(delay)
        try:
            async with websockets.connect(
                url + "/graphql", subprotocols=[GRAPHQL_PROTOCOL], open_timeout=30, compression=None
            ) as ws:
                await ws.send('{"type":"connection_init"}')
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                record.failures = 0
                variables = {"channel": CHANNEL}
                if epoch is not None:
                    variables.update(since=offset, epoch=epoch)
                await ws.send(
                    json.dumps(
                        {"id": "1", "type": "subscribe", "payload": {"query": MESSAGES_QUERY, "variables": variables}}
                    )
                )
                if record.closes:
                    record.back_at.append(time.time())
                try:
                    async for text in ws:
                        frame = json.loads(text)
                        if frame["type"] == "next":
                            message = frame["payload"]["data"]["messages"]
                            offset, epoch = message["offset"], message["epoch"]
                            if record.take(message["data"]):
                                return
                        elif frame["type"] == "error":
                            raise RuntimeError(f"error frame: {frame}")
                except ConnectionClosed:
                    pass
                delay = record.lost(ws.close_code, ws.close_reason or "")
        except (OSError, InvalidHandshake, TimeoutError):
            record.refused += 1
            delay = record.backoff()


async def python_client(url: str, record: Record) -> None:
    """The asyncio Python client (client/switchboard_client), which resumes on its own."""
    from switchboard_client.asyncio import connect

    async with connect(url + "/ws", min_delay=0.2, max_delay=2.0, timeout=60) as client:
        async with client.subscribe(CHANNEL, since=0) as subscription:
            async for message in subscription:
                if record.take(message.data):
                    return


SUBSCRIBERS = {"native": native, "graphql": graphql, "python": python_client}


async def _fleet(url: str, kinds: list[str], pipe, timeout: float) -> None:
    records = [Record(kind) for kind in kinds]

    async def run(record: Record) -> None:
        try:
            await SUBSCRIBERS[record.kind](url, record)
        except Exception as exc:  # reported with the records: the run goes on for the others
            record.error = repr(exc)

    tasks = []
    for start in range(0, len(records), 200):  # not every handshake in the same instant
        tasks += [asyncio.create_task(run(record)) for record in records[start : start + 200]]
        await asyncio.sleep(0.05)
    while not all(record.ready or record.error for record in records):
        await asyncio.sleep(0.05)
    pipe.send("ready")
    await asyncio.wait(tasks, timeout=timeout)
    pipe.send([asdict(record) for record in records])


def fleet_process(url: str, kinds: list[str], pipe, timeout: float) -> None:
    """One process of subscribers: says "ready" once all are subscribed, then their records."""
    asyncio.run(_fleet(url, kinds, pipe, timeout))


class Fleet:
    """Subscribers of the given kinds in `procs` processes, connected to `url` (ws://host:port)."""

    def __init__(self, url: str, kinds: list[str], procs: int = 1, timeout: float = 300.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes, self._processes = [], []
        for index in range(procs):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=fleet_process, args=(url, kinds[index::procs], theirs, timeout), daemon=True
            )
            process.start()
            self._pipes.append(mine)
            self._processes.append(process)

    def wait_ready(self, poke, timeout: float = 120.0) -> None:
        """Call `poke` (publish READY) until every process says its subscribers all have it."""
        waiting = list(self._pipes)
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError("the subscribers did not all subscribe")
            poke()
            waiting = [pipe for pipe in waiting if not (pipe.poll(0.2) and pipe.recv() == "ready")]

    def records(self, timeout: float = 300.0) -> list[Record]:
        found = []
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            if not pipe.poll(timeout):
                raise TimeoutError("a subscriber process sent no records")
            found += [Record(**values) for values in pipe.recv()]
            process.join(10)
        return found


def tally(records: list[Record], published: int) -> dict[str, int]:
    """Messages lost and duplicated over all subscribers, against the numbers 1..published."""
    lost = duplicated = out_of_order = 0
    expected = set(range(1, published + 1))
    for record in records:
        counts = Counter(record.values)
        lost += len(expected - counts.keys())
        duplicated += sum(count - 1 for count in counts.values() if count > 1)
        out_of_order += int(record.values != sorted(record.values))
    return {"lost": lost, "duplicated": duplicated, "out_of_order": out_of_order}


# -- the publisher ------------------------------------------------------------------------------


class Publisher:
    """Publishes 1, 2, 3, ... to CHANNEL every `interval` seconds through `url`, each with its
    number as the idempotency key, retrying a failed publish until it lands (so none is skipped)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish(self, data: int, key: str) -> None:
        body = json.dumps({"channel": CHANNEL, "data": data, "idempotency_key": key}).encode()
        while True:
            request = urllib.request.Request(self.url + "/api/publish", data=body, method="POST")
            request.add_header("Authorization", f"Bearer {API_KEY}")
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=10):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish(self.sent + 1, f"n{self.sent + 1}")
            self.sent += 1

    def finish(self) -> int:
        """Stop, send END, and return how many numbered messages went out."""
        self._stop.set()
        self._thread.join()
        self.publish(END, "end")
        return self.sent


# -- what the servers logged --------------------------------------------------------------------


def log_events(text: str) -> list[dict]:
    """The JSON log lines of a Switchboard instance (Gunicorn's own lines are skipped)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def accepted_while_draining(events: list[dict]) -> int:
    """Connections an instance opened after it logged "draining" (the drain refuses them all)."""
    draining = False
    accepted = 0
    for event in events:
        if event.get("message") == "draining":
            draining = True
        elif draining and event.get("message") == "connect":
            accepted += 1
    return accepted


def handshake_peak(events: list[dict], start: float, end: float, bucket: float = 0.1) -> int:
    """The most connections an instance opened in one `bucket` of time between start and end."""
    times = [event_time(e) for e in events if e.get("message") == "connect" and start <= event_time(e) <= end]
    counts = Counter(int((t - start) / bucket) for t in times)
    return max(counts.values(), default=0)


# -- the servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


class Instance:
    """`gunicorn -c gunicorn.conf.py wsgi:app` on `port`, one worker, its log in a file of its own."""

    def __init__(self, directory: Path, port: int, env: dict[str, str], name: str) -> None:
        self.port = port
        self.log_path = directory / f"{name}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        environment.update({"PORT": str(port), "SWITCHBOARD_WORKERS": "1", "SWITCHBOARD_API_KEY": API_KEY, **env})
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=environment, stdout=log, stderr=log
            )
        wait_for(lambda: health(port)[0] == 200, 30, f"instance on {port} did not start")

    def events(self) -> list[dict]:
        return log_events(self.log_path.read_text(errors="replace"))


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    from bench.peers import switchboard_redis

    port = free_port()
    binary = switchboard_redis.redis_server_binary()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: _answers(port), 10, "redis-server did not start")
    return process, f"redis://127.0.0.1:{port}/0"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_nginx(directory: Path, upstreams: tuple[int, int]) -> tuple[subprocess.Popen, int]:
    """deploy/nginx.conf with only its ports changed."""
    port = free_port()
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    for shipped, upstream in zip((8001, 8002), upstreams, strict=True):
        config = config.replace(f"127.0.0.1:{shipped}", f"127.0.0.1:{upstream}")
    config = config.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "nginx.conf").write_text(config)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g", "daemon off;"])
    wait_for(lambda: health(port)[0] == 200, 10, "nginx did not start")
    return process, port


# -- one run ------------------------------------------------------------------------------------


def roll(directory: Path, instances: list[Instance], env: dict[str, str]) -> list[dict]:
    """Restart each instance in turn (SIGTERM, wait for its exit, start it again on its port);
    returns, per restart, the SIGTERM time, what the instance logged, and whether its /healthz
    said 503 while it drained."""
    restarts = []
    for index, instance in enumerate(list(instances)):
        survivor = instances[1 - index]
        stopped_at = time.time()
        instance.process.send_signal(signal.SIGTERM)
        said_draining = False
        while instance.process.poll() is None:
            status, body = health(instance.port)
            said_draining |= status == 503 and body.get("status") == "draining"
            time.sleep(0.05)
        exited_at = time.time()
        events = instance.events()
        instances[index] = Instance(directory, instance.port, env, f"{instance.log_path.stem}-next")
        restarts.append(
            {
                "stopped_at": stopped_at,
                "exited_at": exited_at,
                "events": events,
                "survivor": survivor,
                "said_draining": said_draining,
            }
        )
    return restarts


def run(subscribers: int, window: float, batch: int, procs: int, interval: float, drain: bool) -> dict:
    """One rolling restart; the figures of the report."""
    directory = Path(tempfile.mkdtemp(prefix="switchboard-rolling-"))
    redis, redis_url = start_redis(directory)
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_DRAIN_WINDOW": str(window if drain else 0),
        "SWITCHBOARD_DRAIN_BATCH": str(batch),
        "SWITCHBOARD_HISTORY_SIZE": "100000",
        "SWITCHBOARD_MAX_CONNECTIONS": str(subscribers * 2 + 100),
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    instances = [Instance(directory, free_port(), env, name) for name in ("a", "b")]
    nginx, port = start_nginx(directory, (instances[0].port, instances[1].port))
    url = f"http://127.0.0.1:{port}"
    try:
        fleet = Fleet(f"ws://127.0.0.1:{port}", ["native"] * subscribers, procs)
        publisher = Publisher(url, interval)
        fleet.wait_ready(lambda: publisher.publish(READY, f"ready{time.monotonic_ns()}"), timeout=300)
        publisher.start()
        time.sleep(1.0)
        restarts = roll(directory, instances, env)
        time.sleep(1.0)
        published = publisher.finish()
        records = fleet.records()
    finally:
        for instance in instances:
            instance.process.send_signal(signal.SIGTERM)
        for instance in instances:
            instance.process.wait(30)
        nginx.terminate()
        redis.terminate()
    return report(records, published, restarts)


def report(records: list[Record], published: int, restarts: list[dict]) -> dict:
    figures: dict[str, Any] = {"subscribers": len(records), "published": published, **tally(records, published)}
    figures["errors"] = sum(1 for record in records if record.error)
    figures["failed_handshakes"] = sum(record.refused for record in records)
    for number, restart in enumerate(restarts, 1):
        stopped = restart["stopped_at"]
        # The clients this restart closed: a close after its SIGTERM, before it exited (a moment
        # later, as the client reads it) and before the next restart began.
        until = min([restart["exited_at"] + 1] + [later["stopped_at"] for later in restarts[number:]])
        backs = [
            next((t for t in record.back_at if t >= lost), None)
            for record in records
            for lost in record.lost_at
            if stopped <= lost <= until
        ]
        survivor_events = restart["survivor"].events()
        figures[f"restart{number}"] = {
            "clients_closed": len(backs),
            "not_back": sum(1 for t in backs if t is None),
            "all_back_s": round(max((t for t in backs if t is not None), default=stopped) - stopped, 2),
            "survivor_peak_per_100ms": handshake_peak(survivor_events, stopped, max(restart["exited_at"], stopped) + 5),
            "accepted_while_draining": accepted_while_draining(restart["events"]),
            "healthz_said_draining": restart["said_draining"],
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 subscribers: a smoke run")
    parser.add_argument("--subscribers", type=int, default=None, help="default 10,000 (300 with --quick)")
    parser.add_argument("--window", type=float, default=5.0, help="SWITCHBOARD_DRAIN_WINDOW (default 5 s)")
    parser.add_argument("--batch", type=int, default=100, help="SWITCHBOARD_DRAIN_BATCH (default 100)")
    parser.add_argument("--procs", type=int, default=None, help="subscriber processes (default 1 per 2,500)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between published messages")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    subscribers = args.subscribers or (300 if args.quick else 10_000)
    procs = args.procs or max(1, -(-subscribers // 2500))
    results = {}
    for mode, drain in (("drain", True), ("all_at_once", False)):
        print(f"rolling restart, {mode}: {subscribers} subscribers...", flush=True)
        results[mode] = run(subscribers, args.window, args.batch, procs, args.interval, drain)
        print(json.dumps(results[mode], indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    clean = all(r["lost"] == 0 and r["duplicated"] == 0 for r in results.values())
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
