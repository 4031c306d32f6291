"""The Python client's sans-I/O core, with plain values: frames in, frames and events out."""

from __future__ import annotations

import json

import pytest
from switchboard_client.errors import (
    ConnectionFailed,
    ForbiddenError,
    InvalidChannelError,
    RateLimitedError,
    RecoveryError,
    SwitchboardError,
    TooLargeError,
    UnauthorizedError,
    error_for,
    status_error,
)
from switchboard_client.handshake import connection_url
from switchboard_client.protocol import (
    FAILED,
    LIVE,
    PENDING,
    Backoff,
    Delivered,
    Join,
    Leave,
    Message,
    Reconnect,
    Refused,
    Session,
    Settled,
    TokenExpiring,
    Welcome,
)


def sent(session: Session) -> list[dict]:
    return [json.loads(frame) for frame in session.data_to_send()]


def welcome(session: Session, user: str = "ann") -> Welcome:
    return session.receive(json.dumps({"type": "welcome", "client": "c1", "user": user, "info": None}))


def reply(session: Session, command_id: int, **result) -> object:
    return session.receive(json.dumps({"type": "reply", "id": command_id, "result": result}))


def error(session: Session, command_id: int | None, code: str, message: str = "no") -> object:
    return session.receive(json.dumps({"type": "error", "id": command_id, "code": code, "message": message}))


def message(session: Session, offset: int, data: object = None, channel: str = "room") -> object:
    frame = {"type": "message", "channel": channel, "offset": offset, "data": data, "from": "ann"}
    return session.receive(json.dumps(frame))


def live(session: Session, channel: str = "room", epoch: str = "e1", offset: int = 0, since=None):
    """A session subscribed to `channel`, the subscribe answered."""
    state = session.subscribe(channel, since)
    if not session.connected:
        welcome(session)
    (subscribe,) = sent(session)
    reply(session, subscribe["id"], channel=channel, epoch=epoch, offset=offset, recovered=True)
    return state


def offsets(state) -> list:
    items = list(state.inbox)
    state.inbox.clear()
    return [item.offset if isinstance(item, Message) else type(item).__name__ for item in items]


def test_nothing_is_sent_before_the_welcome_then_subscriptions_go_first():
    session = Session()
    publish = session.publish("room", {"text": "hi"}, key="k1")
    session.subscribe("room")
    assert session.data_to_send() == []
    assert isinstance(welcome(session), Welcome) and session.user == "ann"
    frames = sent(session)
    assert [frame["type"] for frame in frames] == ["subscribe", "publish"]
    assert frames[1] == {"type": "publish", "channel": "room", "data": {"text": "hi"}, "idempotency_key": "k1", "id": 1}
    assert frames[0] == {"type": "subscribe", "channel": "room", "id": 2}
    event = reply(session, 1, channel="room", offset=7)
    assert isinstance(event, Settled) and event.command is publish
    assert publish.done and publish.result == {"channel": "room", "offset": 7}


def test_every_publish_gets_its_own_idempotency_key_unless_given():
    session = Session()
    welcome(session)
    first, second = session.publish("room", 1), session.publish("room", 2)
    keys = [frame["idempotency_key"] for frame in sent(session)]
    assert keys == [first.key, second.key] and len(set(keys)) == 2 and all(keys)


def test_messages_are_delivered_once_in_order_across_a_reconnect():
    session = Session()
    state = live(session, offset=4)
    for offset in (5, 6):
        assert isinstance(message(session, offset, data=offset), Delivered)
    assert [(m.offset, m.data, m.epoch, m.sender) for m in state.inbox] == [(5, 5, "e1", "ann"), (6, 6, "e1", "ann")]
    state.inbox.clear()

    session.connection_lost(1001)
    welcome(session)
    (resubscribe,) = sent(session)
    assert resubscribe == {"type": "subscribe", "channel": "room", "since": 6, "epoch": "e1", "id": resubscribe["id"]}
    reply(session, resubscribe["id"], channel="room", epoch="e1", offset=9, recovered=True)
    for offset in (5, 6, 7, 8, 7, 9, 10):  # replayed twice over: each shown once, in order
        message(session, offset)
    assert offsets(state) == [7, 8, 9, 10]


def test_a_new_epoch_is_reported_before_the_messages_of_the_new_life():
    session = Session()
    state = live(session, offset=0)
    message(session, 1)
    message(session, 2)
    state.inbox.clear()
    session.connection_lost(None)
    welcome(session)
    (resubscribe,) = sent(session)
    reply(session, resubscribe["id"], channel="room", epoch="e2", offset=3, recovered=False)
    message(session, 4)
    (gap, fresh) = state.inbox
    assert isinstance(gap, RecoveryError) and gap.code == "unrecovered"
    assert (gap.channel, gap.since, gap.previous_epoch, gap.epoch, gap.offset) == ("room", 2, "e1", "e2", 3)
    assert "epoch" in gap.reason
    # Offsets of the new life are not mistaken for ones seen before: 4 follows the reply's 3.
    assert (fresh.offset, fresh.epoch) == (4, "e2")


def test_history_that_no_longer_reaches_back_is_reported_and_the_held_messages_follow():
    session = Session()
    state = live(session, offset=0)
    message(session, 1)
    state.inbox.clear()
    session.connection_lost(None)
    welcome(session)
    (resubscribe,) = sent(session)
    reply(session, resubscribe["id"], channel="room", epoch="e1", offset=300, recovered=False)
    for offset in (201, 202):
        message(session, offset)
    assert offsets(state) == ["RecoveryError", 201, 202]


def test_a_channel_whose_offsets_started_again_does_not_swallow_its_new_messages():
    """Same epoch, but the channel forgot its history (its TTL) and counts from 1 again."""
    session = Session()
    state = live(session, offset=0)
    for offset in range(1, 6):
        message(session, offset)
    state.inbox.clear()
    session.connection_lost(None)
    welcome(session)
    (resubscribe,) = sent(session)
    reply(session, resubscribe["id"], channel="room", epoch="e1", offset=0, recovered=False)
    message(session, 1)
    assert offsets(state) == ["RecoveryError", 1]


def test_a_jump_in_offsets_is_reported_not_swallowed():
    session = Session()
    state = live(session, offset=0)
    message(session, 1)
    message(session, 4)
    (first, gap, fourth) = state.inbox
    assert (first.offset, fourth.offset) == (1, 4)
    assert isinstance(gap, RecoveryError) and "2 to 3" in gap.reason and gap.since == 1


def test_since_replays_from_that_offset_and_a_too_old_since_says_so():
    session = Session()
    state = live(session, offset=10, since=5)
    assert (state.state, state.offset, state.epoch) == (LIVE, 5, "e1")
    for offset in range(6, 12):
        message(session, offset)
    assert offsets(state) == [6, 7, 8, 9, 10, 11]

    other = session.subscribe("old", since=0)
    (subscribe,) = sent(session)
    assert subscribe["since"] == 0 and "epoch" not in subscribe
    reply(session, subscribe["id"], channel="old", epoch="e1", offset=250, recovered=False)
    message(session, 151, channel="old")
    assert offsets(other) == ["RecoveryError", 151]


def test_commands_on_the_wire_are_sent_again_after_a_reconnect_with_the_same_key():
    session = Session()
    welcome(session)
    publish = session.publish("room", "x")
    presence = session.presence("room")
    first = sent(session)
    session.connection_lost(1006)
    assert not publish.done and session.data_to_send() == []
    welcome(session)
    assert sent(session) == first  # same ids, same idempotency key: the server delivers it once
    reply(session, publish.id, channel="room", offset=1)
    assert publish.result["offset"] == 1 and not presence.done


def test_the_loss_answers_unsubscribe_and_refresh():
    session = Session()
    live(session)
    unsubscribe = session.unsubscribe("room")
    refresh = session.refresh("new-token")
    assert [frame["type"] for frame in sent(session)] == ["unsubscribe", "refresh"]
    settled = session.connection_lost(1001)
    assert set(settled) == {unsubscribe, refresh} and unsubscribe.done and unsubscribe.error is None
    welcome(session)
    assert session.data_to_send() == []  # neither goes again, and "room" is no longer subscribed


def test_unsubscribing_while_disconnected_sends_nothing_and_messages_after_it_are_dropped():
    session = Session()
    state = live(session)
    session.connection_lost(None)
    assert session.unsubscribe("room") is None
    welcome(session)
    assert session.data_to_send() == []
    assert message(session, 1) is None and not state.inbox


def test_unsubscribing_an_unknown_channel_asks_the_server_which_says_not_subscribed():
    session = Session()
    welcome(session)
    command = session.unsubscribe("never")
    (frame,) = sent(session)
    assert frame["type"] == "unsubscribe"
    error(session, frame["id"], "not_subscribed")
    assert command.error.code == "not_subscribed"


def test_a_refused_subscription_fails_with_its_error_class():
    session = Session()
    welcome(session)
    state = session.subscribe("private-x")
    (frame,) = sent(session)
    assert isinstance(error(session, frame["id"], "forbidden", "needs a grant"), Delivered)
    assert state.state == FAILED and isinstance(state.error, ForbiddenError)
    assert state.error.message == "needs a grant" and "private-x" not in session.channels
    session.subscribe("private-x")  # may be tried again


def test_an_unavailable_broker_asks_for_a_reconnect_and_keeps_the_subscription():
    session = Session()
    welcome(session)
    state = session.subscribe("room")
    (frame,) = sent(session)
    event = error(session, frame["id"], "unavailable", "redis down")
    assert isinstance(event, Reconnect) and "redis down" in event.reason
    assert state.state == PENDING
    session.connection_lost(1000)
    welcome(session)
    assert [f["type"] for f in sent(session)] == ["subscribe"]


def test_a_rate_limited_error_without_id_answers_the_oldest_command():
    session = Session()
    welcome(session)
    first, second = session.publish("room", 1), session.publish("room", 2)
    session.data_to_send()
    assert isinstance(error(session, None, "rate_limited", "slow down"), Settled)
    assert isinstance(first.error, RateLimitedError) and not second.done
    reply(session, second.id, channel="room", offset=1)
    assert second.result["offset"] == 1


def test_errors_outside_commands_say_whether_a_new_token_could_help():
    session = Session()
    refused = error(session, None, "unauthorized", "bad token")
    assert isinstance(refused, Refused) and not refused.expired
    assert isinstance(refused.error, UnauthorizedError)
    welcome(session)
    expired = error(session, None, "unauthorized", "token expired")
    assert expired.expired
    assert session.receive('{"type":"token_expiring","expires":123.5}') == TokenExpiring(123.5)


def test_close_1009_fails_the_command_the_server_could_not_read_and_only_that():
    session = Session()
    welcome(session)
    small, big, after = session.publish("room", 1), session.publish("room", "x" * 100), session.publish("room", 2)
    session.data_to_send()
    reply(session, small.id, channel="room", offset=1)
    settled = session.connection_lost(1009)
    assert settled == [big] and isinstance(big.error, TooLargeError)
    welcome(session)
    assert [json.loads(frame)["id"] for frame in session.data_to_send()] == [after.id]


def test_join_and_leave_reach_only_subscriptions_that_asked_for_them():
    session = Session()
    welcome(session)
    watching = session.subscribe("presence-a", presence=True)
    plain = session.subscribe("presence-b")
    for frame in sent(session):
        reply(session, frame["id"], channel=frame["channel"], epoch="e", offset=0, recovered=True)
    for channel in ("presence-a", "presence-b"):
        session.receive(json.dumps({"type": "join", "channel": channel, "member": {"user": "bo", "info": {"x": 1}}}))
        session.receive(json.dumps({"type": "leave", "channel": channel, "member": {"user": "bo", "info": None}}))
    assert list(watching.inbox) == [Join("presence-a", "bo", {"x": 1}), Leave("presence-a", "bo", None)]
    assert not plain.inbox


def test_abandoned_commands_are_never_sent_and_their_late_replies_ignored():
    session = Session()
    command = session.publish("room", 1)
    session.abandon(command)
    welcome(session)
    assert session.data_to_send() == []
    assert reply(session, command.id, channel="room", offset=1) is None


def test_close_fails_everything_with_the_reason():
    session = Session()
    welcome(session)
    state = session.subscribe("room")
    command = session.ping()
    reason = UnauthorizedError("token refused")
    ended = session.close(reason)
    assert state in ended and command in ended
    assert command.error is reason and state.error is reason and state.state == FAILED
    assert session.channels == {}


def test_a_subscription_is_one_per_channel():
    session = Session()
    session.subscribe("room")
    with pytest.raises(ValueError, match="already subscribed"):
        session.subscribe("room")


def test_unknown_push_types_are_ignored():
    session = Session()
    assert session.receive('{"type":"something_new","x":1}') is None


def test_backoff_doubles_with_jitter_up_to_the_ceiling_and_resets():
    backoff = Backoff(0.5, 4.0, rand=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    low = Backoff(0.5, 4.0, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    backoff.reset()
    backoff.revert()  # that connection did not work after all: keep counting from before
    assert backoff.next_delay() == 1.0
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_a_drain_close_waits_a_random_moment_within_the_servers_window_with_a_fresh_count():
    backoff = Backoff(0.5, 4.0, rand=lambda: 0.25)
    for _ in range(4):
        backoff.next_delay()
    assert backoff.after_close(1012, "server restarting: reconnect within 2000 ms") == 0.5  # 0.25 x 2 s
    assert backoff.next_delay() == 0.5 * 0.625  # the count started again
    # Any other close, or a 1012 without the window, is an ordinary failure.
    assert backoff.after_close(1012, "restarting") == 1.0 * 0.625
    assert backoff.after_close(1001, "reconnect within 2000 ms") == 2.0 * 0.625
    assert backoff.after_close(None) == 4.0 * 0.625


def test_error_classes_by_code_and_from_http_bodies():
    assert isinstance(error_for("invalid_channel", "bad name"), InvalidChannelError)
    unknown = error_for("brand_new", "later")
    assert type(unknown) is SwitchboardError and unknown.code == "brand_new" and str(unknown) == "brand_new: later"
    assert isinstance(status_error(403, b'{"code":"forbidden","message":"no"}'), ForbiddenError)
    proxy = status_error(502, b"<html>Bad Gateway</html>")
    assert proxy.code == "http_502" and "Bad Gateway" in proxy.message


def test_the_token_goes_into_the_query():
    assert connection_url("ws://h/ws", None) == "ws://h/ws"
    assert connection_url("ws://h/ws", "a.b+c") == "ws://h/ws?token=a.b%2Bc"
    assert connection_url("ws://h/ws?x=1", "t") == "ws://h/ws?x=1&token=t"


def test_an_rpc_cut_off_by_a_lost_connection_fails_and_is_never_sent_again():
    session = Session()
    welcome(session)
    sent_rpc = session.rpc("charge", {"cents": 100})
    publish = session.publish("room", "x")
    frames = sent(session)
    assert frames[0] == {"type": "rpc", "method": "charge", "params": {"cents": 100}, "id": sent_rpc.id}
    settled = session.connection_lost(None)
    assert sent_rpc in settled and isinstance(sent_rpc.error, ConnectionFailed)
    queued_rpc = session.rpc("charge", {"cents": 5})  # not on the wire yet: it goes out on the next
    welcome(session)
    assert [frame["type"] for frame in sent(session)] == ["publish", "rpc"]  # the publish again, once
    assert publish not in settled and queued_rpc.error is None
