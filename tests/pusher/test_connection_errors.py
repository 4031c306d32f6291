"""What a Pusher client is told when it may not connect or stay: Pusher's error codes, each as a
`pusher:error` and then the close code that tells pusher-js whether and when to come back."""

from __future__ import annotations

import json
import signal
import threading

import pytest

from tests.integration.servers import RawSocket
from tests.pusher.backend import KEY
from tests.pusher.deployments import WireClient


def refusal(client: RawSocket) -> tuple[dict, int | None]:
    """The pusher:error a refused connection gets, and the close code that follows it."""
    error, code = None, None
    for opcode, payload in client.frames():
        if opcode == 0x1 and error is None:
            error = json.loads(payload)
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big")
            break
    return error, code


@pytest.mark.parametrize(
    "path, code, words",
    [
        ("/app/unknown?protocol=7", 4001, "does not exist"),
        (f"/app/{KEY}", 4008, "No protocol version"),
        (f"/app/{KEY}?protocol=5", 4007, "Unsupported protocol version"),
    ],
)
def test_refused_connections_get_pusher_s_code_as_error_and_close(start_deployment, path, code, words):
    deployment = start_deployment()
    client = RawSocket(deployment.server.port, path)
    error, closed_with = refusal(client)
    assert client.status == 101 and closed_with == code
    assert error["event"] == "pusher:error" and error["data"]["code"] == code and words in error["data"]["message"]


def test_over_capacity_is_4100_so_clients_back_off_and_retry(start_deployment):
    deployment = start_deployment({"SWITCHBOARD_MAX_CONNECTIONS": "1"})
    with WireClient(deployment.server) as first:
        error, closed_with = refusal(RawSocket(deployment.server.port, f"/app/{KEY}?protocol=7"))
        assert (error["data"]["code"], closed_with) == (4100, 4100)
        first.send("pusher:ping")
        assert first.next("pusher:pong")["event"] == "pusher:pong"


def test_shutdown_says_4200_reconnect_now(start_deployment):
    deployment = start_deployment()
    client = WireClient(deployment.server)
    client.subscribe("staying")
    stopper = threading.Thread(target=deployment.server.stop, args=(signal.SIGTERM,))
    stopper.start()
    error = client.next("pusher:error")
    assert error["data"]["code"] == 4200
    with pytest.raises(Exception) as closed:
        client.recv()
    assert closed.value.rcvd.code == 4200
    stopper.join(20)


def test_a_peer_that_answers_no_ping_is_pinged_then_closed_4201(start_deployment):
    deployment = start_deployment({"SWITCHBOARD_PING_INTERVAL": "1"})
    client = RawSocket(deployment.server.port, f"/app/{KEY}?protocol=7")  # answers nothing, not even pings
    seen, closed_with = [], None
    for opcode, payload in client.frames(timeout=15):
        if opcode == 0x1:
            seen.append(json.loads(payload))
        elif opcode == 0x8:
            closed_with = int.from_bytes(payload[:2], "big")
            break
    events = [message["event"] for message in seen]
    assert events[0] == "pusher:connection_established" and json.loads(seen[0]["data"])["activity_timeout"] == 1
    assert "pusher:ping" in events and seen[-1]["data"]["code"] == 4201 and closed_with == 4201
