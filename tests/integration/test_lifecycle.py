"""Slow consumers, shutdown, worker count, and the article's echo."""

from __future__ import annotations

import json
import signal
import threading

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.servers import RawSocket, Server, flood


def test_a_client_that_never_reads_is_cut_and_delays_nobody(start_server):
    server = start_server({"SWITCHBOARD_SEND_QUEUE_BYTES": "262144", "SWITCHBOARD_RATE_MESSAGES": "0"})
    stalled = RawSocket(server.port, rcvbuf=4096)
    stalled.send_frame(b'{"type":"subscribe","channel":"firehose","id":1}')
    healthy = server.client()
    healthy.command("subscribe", channel="firehose")
    publisher = server.client()

    received: list[int] = []

    def read_until_the_end_marker() -> None:
        while True:
            frame = healthy.recv(timeout=30)
            if frame["type"] == "message":
                if frame["data"]["n"] < 0:
                    return
                received.append(frame["data"]["n"])

    reader = threading.Thread(target=read_until_the_end_marker, daemon=True)
    reader.start()
    sent = flood(
        publisher, "firehose", lambda: server.api("GET", "/api/stats")[1]["counters"].get("slow_consumers_closed")
    )

    # The healthy client got every message, in order, while the other one was stuck.
    publisher.command("publish", channel="firehose", data={"n": -1})
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert received == list(range(sent))
    # The stalled client sees its backlog end with close 1008, or a cut if it never drained.
    assert stalled.close_code(timeout=30) in (1008, None)
    stats = server.api("GET", "/api/stats")[1]
    assert stats["counters"]["slow_consumers_closed"] == 1
    assert "slow consumer" in server.log()
    healthy.close()
    publisher.close()
    stalled.close()


def test_sigterm_tells_every_client_to_reconnect_later_with_1012(start_server):
    """The drain (docs/deployment.md): 1012 and the window; tests/integration/test_drain.py has the rest."""
    server = start_server()
    clients = [server.client() for _ in range(3)]
    echo = server.client("/ws/echo")
    for client in clients:
        client.command("subscribe", channel="room")
    assert server.stop(signal.SIGTERM) == 0
    for connection in [client.ws for client in clients] + [echo.ws]:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                connection.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


def test_more_workers_without_a_broker_refuse_to_start(tmp_path):
    server = Server(tmp_path, {"SWITCHBOARD_WORKERS": "2"})
    assert server.process.wait(timeout=20) != 0
    assert "in-process hub" in server.log()
    server = Server(tmp_path, args=("--workers", "3"))
    assert server.process.wait(timeout=20) != 0
    assert "3 workers" in server.log()


def test_echo_route_returns_text_and_binary(server):
    with server.client("/ws/echo") as echo:
        echo.send("ping")
        assert echo.ws.recv(timeout=5) == "ping"
        echo.send(b"\x00\xffbinary")
        assert echo.ws.recv(timeout=5) == b"\x00\xffbinary"
        text = json.dumps({"big": "y" * 60000})
        echo.send(text)
        assert echo.ws.recv(timeout=5) == text


def test_fragmented_messages_are_reassembled(server):
    raw = RawSocket(server.port, path="/ws/echo")
    raw.send_frame(b"hel", opcode=0x1, fin=False)
    raw.send_frame(b"", opcode=0x9)  # a ping may come between fragments
    raw.send_frame(b"lo", opcode=0x0, fin=True)
    frames = raw.frames()
    assert next(frames) == (0xA, b"")
    assert next(frames) == (0x1, b"hello")
    raw.close()


def test_silent_clients_are_pinged_then_cut(start_server):
    server = start_server({"SWITCHBOARD_PING_INTERVAL": "1"})
    with server.client(token=server.token("watcher")) as watcher:
        watcher.command("subscribe", channel="presence-lobby")
        silent = RawSocket(server.port, path=f"/ws?token={server.token('ghost')}")
        silent.send_frame(b'{"type":"subscribe","channel":"presence-lobby","id":1}')
        assert watcher.next_push("join")["member"]["user"] == "ghost"
        # The silent client is pinged, never answers, and is cut; its presence ends with it.
        opcodes = [opcode for opcode, _ in silent.frames(timeout=15)]
        assert 0x9 in opcodes
        assert watcher.next_push("leave", timeout=15)["member"]["user"] == "ghost"
        # The watcher's library answered every ping, so it is still here.
        assert watcher.command("ping")["result"] == {"pong": True}
        silent.close()
