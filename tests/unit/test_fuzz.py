"""The protocol parser under random input (Hypothesis): never a crash, every answer documented.

Random JSON shapes, invalid UTF-8, huge numbers and deep nesting go through the same path a
client's frame takes: the frame parser, then the hub's command handling, with the replies read
back from a real socket pair.
"""

from __future__ import annotations

import json
import socket

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.config import Config
from switchboard_server.state import SwitchboardState
from switchboard_server.transport.frames import OP_TEXT, FrameError, FrameParser

DOCUMENTED_ERRORS = {
    "bad_json", "bad_command", "invalid_channel", "not_subscribed", "forbidden", "unauthorized",
    "rate_limited", "too_many_subscriptions", "unavailable",
}  # fmt: skip
DOCUMENTED_CLOSE_CODES = {1002, 1007, 1009}
PUSH_TYPES = {"welcome", "reply", "error", "message", "join", "leave", "token_expiring"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
commands = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["subscribe", "unsubscribe", "publish", "presence", "ping", "refresh"])
        | st.text(max_size=10),
        "id": json_values,
        "channel": st.text(max_size=140) | st.sampled_from(["room", "presence-x", "private-y", ""]) | json_values,
        "since": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
        "epoch": json_values,
        "data": json_values,
        "token": json_values,
    },
)


def deep(depth: int) -> bytes:
    return b'{"type":"publish","channel":"room","data":' + b"[" * depth + b"]" * depth + b"}"


class Session:
    """A hub and one connection to it over a socket pair; replies are read off the other end."""

    def __init__(self) -> None:
        state = SwitchboardState(Config(rate_messages=0))
        self.hub, self.native = state.hub, state.native
        server_side, self.client = socket.socketpair()
        self.client.setblocking(False)
        self.conn = self.hub.open(server_side, ANONYMOUS)

    def answers(self, payload: bytes) -> list[dict]:
        self.native.on_message(self.conn, OP_TEXT, payload)
        data = b""
        while True:
            try:
                chunk = self.client.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        frames = []
        while data:
            length, start = data[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(data[2:10], "big"), 10
            frames.append(json.loads(data[start : start + length]))
            data = data[start + length :]
        return frames


def check(answers: list[dict]) -> None:
    assert answers, "every command gets an answer"
    for answer in answers:
        assert answer["type"] in PUSH_TYPES
        if answer["type"] == "error":
            assert answer["code"] in DOCUMENTED_ERRORS and isinstance(answer["message"], str)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
def test_random_commands_get_documented_answers(command):
    try:
        payload = orjson.dumps(command)
    except orjson.JSONEncodeError:
        return  # not representable as JSON (e.g. integers beyond 64 bits are below)
    check(Session().answers(payload))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_get_an_error_or_a_documented_close(payload):
    try:
        check(Session().answers(payload))
    except FrameError as error:  # invalid UTF-8 in a text frame
        assert error.code in DOCUMENTED_CLOSE_CODES


def test_huge_numbers_and_deep_nesting():
    session = Session()
    for payload in (
        b'{"type":"subscribe","channel":"room","since":' + b"9" * 400 + b"}",
        b'{"type":"ping","id":' + b"9" * 30 + b"}",
        deep(200),
        deep(300),
        deep(5000),
    ):
        check(session.answers(payload))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_frame_parser_never_crashes(chunks):
    parser = FrameParser(max_size=1024)
    try:
        for chunk in chunks:
            for opcode, payload in parser.feed(chunk):
                assert opcode in (0x1, 0x2, 0x8, 0x9, 0xA) and isinstance(payload, bytes)
    except FrameError as error:
        assert error.code in DOCUMENTED_CLOSE_CODES
