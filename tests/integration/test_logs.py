"""Structured logs: one line per connect, error, slow close, refusal and disconnect; no secret, ever."""

from __future__ import annotations

import json
import urllib.request

from tests.integration.servers import API_KEY, TOKEN_SECRET, RawSocket, Server


def events(server: Server) -> list[dict]:
    """Switchboard's JSON lines from the server's output (Gunicorn's own lines are plain text)."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def wait_for_event(server: Server, message: str, **fields) -> dict:
    found: list[dict] = []

    def logged() -> bool:
        found[:] = [e for e in events(server) if e["message"] == message and fields.items() <= e.items()]
        return bool(found)

    server.wait_until(logged)
    assert len(found) == 1, found
    return found[0]


def test_a_session_is_logged_as_json_lines_without_secrets(start_server):
    # Not a terminal, so "auto" writes JSON; debug shows the errors clients earn.
    server = start_server(
        {"SWITCHBOARD_LOG_LEVEL": "debug", "SWITCHBOARD_SEND_QUEUE_BYTES": "262144", "SWITCHBOARD_RATE_MESSAGES": "0"}
    )
    ann_token, sam_token = server.token("ann"), server.token("sam")
    forged = ann_token[:-3] + ("AAA" if not ann_token.endswith("AAA") else "BBB")

    ann = server.client(token=ann_token)
    ann.send("not json")
    assert ann.recv()["code"] == "bad_json"

    # Sam subscribes and never reads: cut as a slow consumer while Ann floods the channel.
    sam = RawSocket(server.port, path=f"/ws?token={sam_token}", rcvbuf=4096)
    sam.send_frame(b'{"type":"subscribe","channel":"firehose","id":1}')
    sent = 0
    while not server.api("GET", "/api/stats")[1]["counters"].get("slow_consumers_closed"):
        assert sent < 5000, "the stalled client was never closed"
        for _ in range(50):
            ann.send({"type": "publish", "channel": "firehose", "data": {"n": sent, "pad": "x" * 4000}})
            sent += 1
        for _ in range(50):
            assert ann.recv()["type"] == "reply"
    assert sam.close_code(timeout=30) in (1008, None)
    sam.close()
    ann.close()

    # A forged token is refused after the upgrade; its client still learns why.
    refused = RawSocket(server.port, path=f"/ws?token={forged}")
    assert refused.close_code() == 1008
    refused.close()

    # HTTP requests carry an id: the caller's, or a new one.
    request = urllib.request.Request(server.url + "/api/stats", headers={"X-Request-ID": "trace-42"})
    request.add_header("Authorization", f"Bearer {API_KEY}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["X-Request-ID"] == "trace-42"
    assert server.api("GET", "/api/channels", key="wrong")[0] == 401

    ann_id = ann.welcome["client"]
    connect = wait_for_event(server, "connect", user="ann")
    assert connect["client"] == ann_id and connect["address"] == "127.0.0.1" and connect["level"] == "info"
    error = wait_for_event(server, "command error", client=ann_id)
    assert error["code"] == "bad_json" and error["user"] == "ann" and error["level"] == "debug"
    slow = wait_for_event(server, "slow consumer closed", user="sam")
    assert slow["level"] == "warning" and slow["channels"] == 1 and slow["address"] == "127.0.0.1"
    gone = wait_for_event(server, "disconnect", client=ann_id)
    assert gone["code"] == 1000 and gone["user"] == "ann" and gone["duration"] > 0
    assert (gone["messages_in"], gone["messages_out"]) == (1 + sent, 2 + sent)  # welcome, error, replies
    cut = wait_for_event(server, "disconnect", user="sam")
    assert cut["code"] == 1008 and cut["reason"] == "slow consumer: send queue limit exceeded"
    refusal = wait_for_event(server, "handshake refused", code="unauthorized")
    assert refusal["address"] == "127.0.0.1" and refusal["reason"].startswith("invalid token")
    traced = wait_for_event(server, "request", request_id="trace-42")
    assert (traced["method"], traced["path"], traced["status"]) == ("GET", "/api/stats", 200)
    unauthorized = wait_for_event(server, "request", path="/api/channels")
    assert unauthorized["status"] == 401 and len(unauthorized["request_id"]) == 16

    log = server.log()
    for secret in (ann_token, sam_token, forged, API_KEY, TOKEN_SECRET, "Bearer"):
        assert secret not in log
    for token in (ann_token, sam_token, forged):  # nor the part of a JWT that only its holder has
        assert token.rsplit(".", 1)[1] not in log


def test_text_logs_for_a_person(start_server):
    server = start_server({"SWITCHBOARD_LOG_FORMAT": "text"})
    with server.client(token=server.token("ann")) as ann:
        client = ann.welcome["client"]
    server.wait_until(lambda: " disconnect " in server.log())
    lines = server.log().splitlines()
    assert any(
        line.endswith(f"INFO switchboard.hub: connect client={client} user=ann address=127.0.0.1") for line in lines
    )
    assert any(f"disconnect client={client} user=ann" in line and 'code=1000 reason=""' in line for line in lines)
