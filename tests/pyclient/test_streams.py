"""1,000 numbered messages through a server restart and a killed worker: all arrive, in order, once.

With the Redis broker, history, epochs and idempotency keys live in Redis, so they outlast any
Gunicorn process: the subscriber resumes from its last offset, and a publish whose reply died
with the process is sent again and stored once. One client publishes, the other (of the other
flavour) reads; the stream is cut after 200 messages.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.integration.servers import Server
from tests.pyclient.flavours import AsyncioFlavour, SyncFlavour

TOTAL = 1000
CUT_AT = 200
WINDOW = 50

PAIRS = [("sync", "asyncio"), ("asyncio", "sync")]


@pytest.fixture
def flavours(request):
    made = {"sync": SyncFlavour(), "asyncio": AsyncioFlavour()}
    yield made
    for flavour in made.values():
        flavour.close()


@pytest.fixture
def redis_env(redis_server):
    # History long enough to cover the reader's time away, however fast the publisher is.
    return {
        "SWITCHBOARD_REDIS_URL": redis_server.url,
        "SWITCHBOARD_WORKERS": "2",
        "SWITCHBOARD_RATE_MESSAGES": "0",
        "SWITCHBOARD_HISTORY_SIZE": str(TOTAL * 2),
    }


def stream(publisher, reader, cut) -> tuple[list, list[int]]:
    """Publish TOTAL numbered messages from one client while the other reads them; call `cut()`
    once CUT_AT have arrived. The publisher keeps at most WINDOW messages ahead of the reader, so
    the cut always falls mid-stream for both. Returns what was read and the offsets published."""
    subscription = reader.subscribe("numbers")
    offsets: list[int] = []
    failure: list[BaseException] = []
    received: list = []
    progress = threading.Condition()

    def publish() -> None:
        try:
            for n in range(TOTAL):
                with progress:
                    progress.wait_for(lambda n=n: len(received) >= n - WINDOW or failure, timeout=60)
                offsets.append(publisher.publish("numbers", n))
        except BaseException as exc:  # reported by the test, not lost in a thread
            failure.append(exc)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        while len(received) < TOTAL and not failure:
            message = subscription.recv(30)
            with progress:
                received.append(message)
                progress.notify()
            if len(received) == CUT_AT:
                assert len(offsets) < TOTAL
                cut()
    except BaseException as exc:
        failure.append(exc)
        raise
    finally:
        with progress:
            progress.notify()
        thread.join(60)
    assert not failure, failure
    return received, offsets


def check(received: list, offsets: list[int]) -> None:
    assert [message.data for message in received] == list(range(TOTAL))
    assert [message.offset for message in received] == offsets  # each publish stored once
    assert offsets == list(range(offsets[0], offsets[0] + TOTAL))
    assert len({message.epoch for message in received}) == 1


@pytest.mark.parametrize(("publisher", "reader"), PAIRS)
def test_a_restarted_server_loses_and_repeats_nothing(start_server, redis_env, flavours, publisher, reader):
    server = start_server(redis_env)
    url = server.ws_url + "/ws"
    with flavours[publisher].connect(url) as sender, flavours[reader].connect(url) as receiver:

        def restart() -> None:
            server.stop()
            start_server(redis_env, port=server.port)

        check(*stream(sender, receiver, restart))


def connections_of(pid: int, port: int) -> int:
    """How many established TCP connections to `port` the process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


def worker_holding_the_only_connection(server: Server) -> int:
    holders = [pid for pid in server.worker_pids() if connections_of(pid, server.port)]
    assert len(holders) == 1, holders
    return holders[0]


@pytest.mark.parametrize(("publisher", "reader"), PAIRS)
def test_a_killed_worker_loses_and_repeats_nothing(start_server, redis_env, flavours, publisher, reader):
    """SIGKILL, no goodbye: the reader's worker dies mid-stream; Gunicorn starts another."""
    server = start_server(redis_env)
    url = server.ws_url + "/ws"
    with flavours[reader].connect(url) as receiver:
        doomed = worker_holding_the_only_connection(server)
        with flavours[publisher].connect(url) as sender:
            received, offsets = stream(sender, receiver, lambda: os.kill(doomed, signal.SIGKILL))
    check(received, offsets)
    assert doomed not in server.worker_pids()
