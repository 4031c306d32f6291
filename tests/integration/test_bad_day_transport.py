"""A bad day at the transport: one client pipelining, chunking or flooding must cost only itself.

A pipelining HTTP client shares the worker with every WebSocket; a chunked body over the limit
is refused whole (413), never parsed as its first 64 KiB; a close the server sends is read by the
client even while it is still writing; a bug in a protocol callback is logged and closes 1011;
and the metrics directory an operator names is made if it is missing.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from gevent.event import Event
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from switchboard_server.transport.connection import Connection, Flusher
from switchboard_server.transport.frames import FrameParser
from tests.integration.servers import API_KEY, RawSocket, Server, masked_frame
from tests.pusher.backend import APP_ID, APPS, KEY

LIMIT = 65536  # SWITCHBOARD_MAX_MESSAGE_SIZE's default
WRONG_KEYS = 3000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker, with a Pusher app, so every protocol's endpoint answers."""
    instance = Server(tmp_path_factory.mktemp("server"), {"SWITCHBOARD_PUSHER_APPS": APPS}).wait_ready()
    yield instance
    instance.stop()


# -- pipelining --------------------------------------------------------------------------------


def publish_request(key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def read_statuses(sock: socket.socket, count: int, first: threading.Event) -> list[int]:
    """The statuses of `count` pipelined responses, in order; `first` is set at the first one."""
    statuses: list[int] = []
    reader = sock.makefile("rb")
    while len(statuses) < count:
        status_line = reader.readline()
        if not status_line:
            break
        statuses.append(int(status_line.split()[1]))
        first.set()
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        reader.read(length)
    return statuses


def test_a_pipelining_client_does_not_hold_the_worker(server):
    """Thousands of wrong-key requests pipelined on one connection, then one right one, which
    publishes "pipeline done": a bystander's stream, published from another client while the
    pipeline is being answered, reaches it before "pipeline done" does."""
    with server.client() as bystander, server.client() as publisher:
        bystander.command("subscribe", channel="pipeline")
        wrong = publish_request("wrong-key", {"channel": "pipeline", "data": "never"})
        last = publish_request(API_KEY, {"channel": "pipeline", "data": "pipeline done"})
        pipeline = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        first_answer, statuses = threading.Event(), []
        reader = threading.Thread(target=lambda: statuses.extend(read_statuses(pipeline, WRONG_KEYS + 1, first_answer)))
        reader.start()
        writer = threading.Thread(target=pipeline.sendall, args=(wrong * WRONG_KEYS + last,))
        writer.start()
        assert first_answer.wait(30)
        for n in range(3):
            publisher.send({"type": "publish", "channel": "pipeline", "data": f"bystander {n}"})
        seen = []
        while "pipeline done" not in seen:
            seen.append(bystander.next_push("message", timeout=30)["data"])
        writer.join()
        reader.join()
        pipeline.close()
    assert seen[0] == "bystander 0", seen
    assert statuses == [401] * WRONG_KEYS + [200]


# -- chunked bodies ----------------------------------------------------------------------------


def post_chunked(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST `body` with Transfer-Encoding: chunked, 16 KiB a chunk; the status and the reply."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    chunks = (body[start : start + 16384] for start in range(0, len(body), 16384))
    conn.request("POST", path, body=chunks, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    reply = response.read()
    conn.close()
    return response.status, reply


def padded(value: dict, size: int) -> bytes:
    """`value` as JSON followed by spaces up to `size` bytes: valid JSON whatever prefix is read."""
    data = json.dumps(value).encode()
    return data + b" " * (size - len(data))


BEARER = {"Authorization": f"Bearer {API_KEY}"}
MUTATION = 'mutation { publish(channel: "chunked", data: "from graphql") { offset } }'


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/publish", {"channel": "chunked", "data": "from the api"}, BEARER),
        ("/graphql", {"query": MUTATION}, BEARER),
        (f"/apps/{APP_ID}/events", {"name": "e", "channel": "chunked", "data": "from pusher"}, {}),
    ],
)
def test_a_chunked_body_over_the_limit_is_refused_whole(server, path, body, headers):
    with server.client() as subscriber:
        subscriber.command("subscribe", channel="chunked")
        status, reply = post_chunked(server.port, path, padded(body, 1 << 20), headers)
        # The reply's shape is the protocol's (Pusher's is plain text); its words are the same.
        assert status == 413 and b"body larger than 65536 bytes" in reply, reply
        # Nothing was published: the next message the subscriber gets is the marker.
        assert server.api("POST", "/api/publish", {"channel": "chunked", "data": "marker"})[0] == 200
        assert subscriber.next_push("message")["data"] == "marker"
        assert server.health()[0] == 200


def test_a_chunked_body_within_the_limit_is_read_whole(server):
    with server.client() as subscriber:
        subscriber.command("subscribe", channel="chunked-small")
        body = padded({"channel": "chunked-small", "data": "whole"}, LIMIT)
        status, reply = post_chunked(server.port, "/api/publish", body, BEARER)
        assert status == 200, reply
        assert subscriber.next_push("message")["data"] == "whole"


# -- a close the client can read ---------------------------------------------------------------


def open_socket(server: Server, protocol: str):
    """A `websockets` client that may send any size, past what its protocol sends first."""
    options = {"max_size": None, "open_timeout": 10, "close_timeout": 10, "legacy": True}
    if protocol == "native":
        ws = connect(server.ws_url + "/ws", **options)
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
    elif protocol == "echo":
        ws = connect(server.ws_url + "/ws/echo", **options)
    elif protocol == "graphql":
        ws = connect(server.ws_url + "/graphql", subprotocols=["graphql-transport-ws"], **options)
    else:
        ws = connect(f"{server.ws_url}/app/{KEY}?protocol=7&client=test&version=1", **options)
        assert json.loads(ws.recv(timeout=10))["event"] == "pusher:connection_established"
    return ws


@pytest.mark.parametrize("protocol", ["native", "echo", "graphql", "pusher"])
def test_a_client_writing_20_mib_at_once_reads_its_close_1009(server, protocol):
    """The `websockets` sync client reads only once its write is done; every try sees 1009."""
    message = b"x" * (20 << 20)
    for _try in range(5):
        ws = open_socket(server, protocol)
        with pytest.raises(ConnectionClosed) as closed:
            ws.send(message)
            ws.recv(timeout=10)
        ws.close()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_a_client_that_keeps_sending_garbage_still_gets_the_close_frame(server):
    raw = RawSocket(server.port, "/ws/echo")
    raw.send_frame(b"", opcode=0x2, length=10 * LIMIT)

    def garbage() -> None:
        try:
            for _ in range(256):  # 16 MiB at most
                raw.sock.sendall(b"\x00" * LIMIT)
        except OSError:
            return  # the server closed: what it sent before is what this test reads

    sender = threading.Thread(target=garbage)
    sender.start()
    try:
        assert raw.close_code() == 1009
    finally:
        sender.join()
        raw.close()


# -- a bug in a protocol callback --------------------------------------------------------------


def test_an_oserror_in_a_callback_is_logged_and_closes_1011(caplog):
    """A callback's OSError is a bug like any other, not a network blip."""
    ours, theirs = socket.socketpair()
    conn = Connection(ours, Flusher(), client_id="c1", user="ann")
    closed, finished = Event(), Event()

    def on_messages(conn: Connection, messages: list) -> None:
        raise OSError("the team's hook failed")

    def run(conn: Connection) -> None:
        conn.serve(FrameParser(LIMIT), on_messages, lambda conn: closed.set())
        finished.set()

    theirs.sendall(masked_frame(b"hello"))
    with caplog.at_level(logging.ERROR, logger="switchboard.connection"):
        conn.start(run)
        assert closed.wait(10)
    theirs.settimeout(10)
    frame = theirs.recv(256)
    assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1011
    theirs.close()  # the server stops lingering at the EOF
    assert finished.wait(10)
    [record] = [r for r in caplog.records if r.name == "switchboard.connection"]
    assert record.getMessage() == "connection c1 failed"
    assert isinstance(record.exc_info[1], OSError)


# -- the metrics directory ---------------------------------------------------------------------


def test_a_metrics_directory_not_made_yet_is_made(tmp_path, start_server):
    directory = tmp_path / "not" / "yet"
    server = start_server({"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    with server.client():
        status, body = fetch_metrics(server)
    assert status == 200 and b"switchboard_connections_opened_total" in body
    assert any(directory.glob("*.db"))


def test_a_metrics_directory_that_cannot_be_made_refuses_the_start(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    server = Server(tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "a-file" / "metrics")})
    try:
        assert server.process.wait(30) != 0
        assert "PROMETHEUS_MULTIPROC_DIR" in server.log() and "cannot be used for metrics" in server.log()
    finally:
        server.stop()


def fetch_metrics(server: Server) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    response = conn.getresponse()
    result = response.status, response.read()
    conn.close()
    return result
