"""The JSON codec: what is accepted, and the code of every refusal."""

from __future__ import annotations

import json

import pytest

from switchboard_server.core.envelope import message_parts
from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.native.commands import error_frame, parse_command
from switchboard_server.transport.frames import frame_payload


def test_a_full_subscribe():
    command = parse_command(b'{"type":"subscribe","channel":"private-a:b","since":4,"epoch":"e1","id":"x"}')
    assert (command.type, command.channel, command.since, command.epoch, command.id) == (
        "subscribe",
        "private-a:b",
        4,
        "e1",
        "x",
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "bad_json"),
        (b"{", "bad_json"),
        (b"1e999", "bad_json"),
        (b"null", "bad_command"),
        (b'{"type":"publish","channel":"a"}', "bad_command"),
        (b'{"type":"subscribe","channel":"a","since":true}', "bad_command"),
        (b'{"type":"subscribe","channel":"a","epoch":5}', "bad_command"),
        (b'{"type":"subscribe","channel":""}', "invalid_channel"),
        (b'{"type":"subscribe","channel":["a"]}', "invalid_channel"),
        (b'{"type":"subscribe","channel":"caf\xc3\xa9"}', "invalid_channel"),
        (b'{"type":true}', "bad_command"),
    ],
)
def test_refusals(raw, code):
    with pytest.raises(ProtocolError) as error:
        parse_command(raw)
    assert error.value.code == code


def test_message_parts_join_around_the_offset():
    head, tail = message_parts("room", {"text": "<b>hi</b>"}, "alice")
    assert json.loads(head + b"3" + tail) == {
        "type": "message",
        "channel": "room",
        "offset": 3,
        "data": {"text": "<b>hi</b>"},
        "from": "alice",
    }
    assert json.loads(frame_payload(error_frame(7, "bad_json", "nope")))["id"] == 7
