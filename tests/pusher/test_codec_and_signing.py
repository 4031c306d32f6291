"""The Pusher pieces with no I/O: app configuration and namespaces, signatures, frames, webhooks.

Signatures are checked against the `pusher` server library's own, so "valid" means what Pusher
users' code produces.
"""

from __future__ import annotations

import json
import time

import pusher
import pytest
from pusher.pusher_client import PusherClient

from switchboard_server.core.codecs import Announcement, Publication
from switchboard_server.core.envelope import member_payload, message_parts
from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.pusher import events
from switchboard_server.protocols.pusher.apps import parse_apps
from switchboard_server.protocols.pusher.codec import PusherCodec
from switchboard_server.protocols.pusher.signing import channel_auth_text, channel_auth_valid, sign, verify_request
from switchboard_server.protocols.pusher.webhooks import body, headers, retry_delay
from switchboard_server.transport.frames import frame_payload

APPS = parse_apps("1:key1:secret1,42:key42:secret42")
FIRST, SECOND = APPS.all
LIBRARY = pusher.Pusher(app_id="1", key="key1", secret="secret1", host="127.0.0.1", port=1, ssl=False)


def publication(channel: str, data, event=None, sender=None) -> Publication:
    head, tail = message_parts(channel, data, sender, event)
    return Publication(channel, 7, head + b"7" + tail)


def decoded(frame: bytes) -> dict:
    return json.loads(frame_payload(frame))


# -- apps -------------------------------------------------------------------------------------


def test_the_first_app_shares_the_native_namespace_and_others_are_isolated_and_protected():
    assert FIRST.hub_channel("presence-room") == "presence-room"
    assert SECOND.hub_channel("room") == "private-42:room"
    assert APPS.for_hub_channel("presence-room") == (FIRST, "presence-room")
    assert APPS.for_hub_channel("private-42:presence-room") == (SECOND, "presence-room")
    # Names no Pusher client can use belong to no app: native-only channels, unknown apps.
    assert APPS.for_hub_channel("native:only") is None
    assert APPS.for_hub_channel("private-7:room") is None
    assert FIRST.max_channel == 128 and SECOND.max_channel == 128 - len("private-42:")
    assert not FIRST.valid_channel("has:colon") and not FIRST.valid_channel("x" * 129)


def test_apps_come_as_id_key_secret_or_json_with_their_own_webhooks():
    apps = parse_apps(
        '[{"id":"1","key":"a","secret":"s"},{"id":"2","key":"b","secret":"t","webhook_url":"http://h/2"}]',
        webhook_url="http://h/all",
    )
    assert [(app.id, app.webhook_url) for app in apps.all] == [("1", "http://h/all"), ("2", "http://h/2")]


@pytest.mark.parametrize(
    "raw",
    ["1:key", "abc:key:secret", "1:a:s,1:b:t", "1:a:s,2:a:t", "[{", '[{"id":"1","key":"","secret":"s"}]'],
)
def test_a_bad_app_configuration_fails_loudly(raw):
    with pytest.raises(ValueError):
        parse_apps(raw)


# -- signatures -------------------------------------------------------------------------------


def test_channel_auth_from_the_pusher_library_is_valid_and_anything_else_is_not():
    private = LIBRARY.authenticate("private-doc", "123.456")
    assert channel_auth_valid(FIRST, channel_auth_text("123.456", "private-doc", None), private["auth"])
    presence = LIBRARY.authenticate("presence-room", "123.456", {"user_id": "ann", "user_info": {"name": "Ann"}})
    text = channel_auth_text("123.456", "presence-room", presence["channel_data"])
    assert channel_auth_valid(FIRST, text, presence["auth"])
    assert not channel_auth_valid(FIRST, channel_auth_text("999.456", "private-doc", None), private["auth"])
    assert not channel_auth_valid(SECOND, channel_auth_text("123.456", "private-doc", None), private["auth"])
    assert not channel_auth_valid(FIRST, text + "x", presence["auth"])
    assert not channel_auth_valid(FIRST, text, None)


# The library's own request builder (what `trigger` and `channels_info` send), without sending.
REQUESTS = PusherClient(app_id="1", key="key1", secret="secret1", host="127.0.0.1", port=1, ssl=False)


def trigger_request() -> tuple[dict, bytes]:
    request = REQUESTS.trigger.make_request(["c"], "e", {"n": 1})
    return dict(request.query_params), request.body


def test_requests_the_pusher_library_signs_are_accepted():
    query, raw = trigger_request()
    verify_request(FIRST, "POST", "/apps/1/events", query, raw, time.time())
    request = REQUESTS.channels_info.make_request("presence-", ["user_count"])
    verify_request(FIRST, "GET", request.path, dict(request.query_params), request.body, time.time())


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda q, b: (q, b + b" "), "body_md5"),
        (lambda q, b: ({**q, "auth_signature": "0" * 64}, b), "Invalid signature"),
        (lambda q, b: ({**q, "auth_key": "key42"}, b), "auth_key"),
        (lambda q, b: ({**q, "extra": "param"}, b), "Invalid signature"),
        (lambda q, b: ({k: v for k, v in q.items() if k != "body_md5"}, b), "body_md5"),
    ],
)
def test_a_forged_or_altered_request_is_refused(tamper, reason):
    query, raw = tamper(*trigger_request())
    with pytest.raises(ProtocolError, match=reason) as refused:
        verify_request(FIRST, "POST", "/apps/1/events", query, raw, time.time())
    assert refused.value.http_status == 401


def test_a_stale_timestamp_is_refused_beyond_600_seconds():
    query, raw = trigger_request()
    stamped = int(query["auth_timestamp"])
    verify_request(FIRST, "POST", "/apps/1/events", query, raw, stamped - 600)
    with pytest.raises(ProtocolError, match="Timestamp expired"):
        verify_request(FIRST, "POST", "/apps/1/events", query, raw, stamped + 601)


# -- frames -----------------------------------------------------------------------------------


def test_pusher_data_that_is_json_is_stored_parsed_and_sent_back_as_a_string():
    assert events.stored_data('{"text": "hi"}') == {"text": "hi"}
    assert events.stored_data("plain words") == "plain words"
    assert events.stored_data({"already": "json"}) == {"already": "json"}
    frame = decoded(PusherCodec(FIRST).message_frame(publication("room", {"text": "hi"}, "greet")))
    assert frame == {"event": "greet", "channel": "room", "data": '{"text":"hi"}'}
    assert decoded(PusherCodec(FIRST).message_frame(publication("room", "plain")))["data"] == "plain"


def test_a_native_message_without_an_event_gets_the_default_name_and_apps_their_own_channel_names():
    frame = decoded(PusherCodec(SECOND).message_frame(publication("private-42:room", 5)))
    assert frame == {"event": events.DEFAULT_EVENT, "channel": "room", "data": "5"}


def test_client_events_on_presence_channels_carry_the_sender_only_there():
    presence = decoded(PusherCodec(FIRST).message_frame(publication("presence-r", {}, "client-typing", "ann")))
    assert presence["user_id"] == "ann"
    private = decoded(PusherCodec(FIRST).message_frame(publication("private-r", {}, "client-typing", "1.2")))
    assert "user_id" not in private
    server = decoded(PusherCodec(FIRST).message_frame(publication("presence-r", {}, "news", "ann")))
    assert "user_id" not in server


def test_members_are_announced_on_presence_channels_only():
    member = {"user": "ann", "info": {"name": "Ann"}}
    join = PusherCodec(FIRST).member_frame(Announcement("presence-r", member_payload("join", "presence-r", member)))
    assert decoded(join) == {
        "event": "pusher_internal:member_added",
        "channel": "presence-r",
        "data": '{"user_id":"ann","user_info":{"name":"Ann"}}',
    }
    leave = PusherCodec(FIRST).member_frame(Announcement("presence-r", member_payload("leave", "presence-r", member)))
    assert json.loads(decoded(leave)["data"]) == {"user_id": "ann"}
    assert PusherCodec(FIRST).member_frame(Announcement("room", member_payload("join", "room", member))) is None


def test_subscription_succeeded_on_presence_carries_ids_hash_and_count():
    members = [{"user": "ann", "info": {"n": 1}}, {"user": "ben", "info": None}]
    data = json.loads(decoded(events.subscription_succeeded("presence-r", members))["data"])
    assert data == {"presence": {"ids": ["ann", "ben"], "hash": {"ann": {"n": 1}, "ben": None}, "count": 2}}


@pytest.mark.parametrize(
    "payload", [b"not json", b"[1]", b'{"data":{}}', b'{"event":""}', b'{"event":"e","channel":1}']
)
def test_malformed_messages_are_pusher_errors(payload):
    with pytest.raises(events.PusherError):
        events.parse(payload)


# -- webhooks ---------------------------------------------------------------------------------


def test_webhooks_are_signed_so_the_pusher_library_accepts_them():
    payload = body([{"name": "channel_occupied", "channel": "room"}], int(time.time() * 1000))
    sent = headers(FIRST, payload)
    verified = LIBRARY.validate_webhook(sent["X-Pusher-Key"], sent["X-Pusher-Signature"], payload.decode())
    assert verified["events"] == [{"name": "channel_occupied", "channel": "room"}]
    assert LIBRARY.validate_webhook(sent["X-Pusher-Key"], sign("wrong", payload), payload.decode()) is None


def test_retries_back_off_with_jitter_up_to_a_cap():
    assert [retry_delay(n, lambda: 0.5) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]
    assert retry_delay(1, lambda: 0.0) == 0.25 and retry_delay(1, lambda: 1.0) == 0.75
