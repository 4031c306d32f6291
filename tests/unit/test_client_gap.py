"""The Python client's sans-I/O core when the server lost messages of a channel on their way to it
(docs/protocol.md): it subscribes again from where it is, and the reply decides what it reports."""

from __future__ import annotations

import json

from switchboard_client.errors import RecoveryError
from switchboard_client.protocol import Message, Session

from tests.unit.test_client_protocol import live, message, reply, sent


def lost(session: Session, channel: str = "room", epoch: str = "e1", offset: int = 3) -> object:
    notice = {"type": "error", "id": None, "code": "unrecoverable", "channel": channel, "epoch": epoch}
    return session.receive(json.dumps({**notice, "offset": offset, "message": "lost on their way"}))


def test_the_notice_resubscribes_from_the_last_offset_and_epoch():
    session = Session()
    channel = live(session, epoch="e1", offset=0)
    message(session, 1)
    message(session, 2)
    assert lost(session) is None
    assert sent(session) == [{"type": "subscribe", "channel": "room", "since": 2, "epoch": "e1", "id": 2}]
    assert session.connected and channel.state == "live"


def test_held_messages_after_the_gap_come_after_a_recovery_error():
    session = Session()
    channel = live(session, epoch="e1", offset=0)
    message(session, 1)
    lost(session, offset=1)
    reply(session, 2, channel="room", epoch="e1", offset=120, recovered=False)
    message(session, 21)
    items = list(channel.inbox)
    assert [type(item) for item in items] == [Message, RecoveryError, Message]
    assert items[1].reason == "history no longer reaches back that far" and items[2].offset == 21


def test_a_new_epoch_is_taken_and_its_messages_are_not_dropped_as_seen():
    session = Session()
    channel = live(session, epoch="e1", offset=0)
    for offset in range(1, 51):
        message(session, offset)
    lost(session, offset=50)
    reply(session, 2, channel="room", epoch="e2", offset=7, recovered=False)
    message(session, 8, data="new")
    error, last = list(channel.inbox)[-2:]
    assert isinstance(error, RecoveryError) and (error.previous_epoch, error.epoch) == ("e1", "e2")
    assert (last.epoch, last.offset, last.data) == ("e2", 8, "new")


def test_a_notice_for_a_channel_not_subscribed_is_ignored():
    session = Session()
    live(session)
    assert lost(session, channel="other") is None
    assert sent(session) == []
