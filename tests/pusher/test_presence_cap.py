"""Pusher presence channels refuse new members past the push limit, as Pusher refuses the 101st.

Pusher clients keep their member list from member_added/member_removed, which the server stops
pushing past SWITCHBOARD_PRESENCE_PUSH_LIMIT (docs/pusher.md, "Presence cap").
"""

from __future__ import annotations

import pytest

from tests.integration.servers import RedisServer
from tests.pusher.deployments import WireClient


@pytest.mark.parametrize("broker", ["local", "redis"])
def test_a_full_presence_channel_refuses_new_members_but_not_more_tabs(start_deployment, tmp_path, broker) -> None:
    redis = RedisServer(tmp_path) if broker == "redis" else None
    deployment = start_deployment({"SWITCHBOARD_PRESENCE_PUSH_LIMIT": "2"}, redis)
    server, backend = deployment.server, deployment.backend
    channel = "presence-cap"
    with WireClient(server) as ann, WireClient(server) as bob, WireClient(server) as cy, WireClient(server) as tab:
        ann.subscribe(channel, backend, user="ann")
        answer = bob.subscribe(channel, backend, user="bob")
        assert answer["data"]["presence"]["count"] == 2
        assert ann.next("pusher_internal:member_added", channel)["data"]["user_id"] == "bob"

        cy.send(
            "pusher:subscribe",
            {"channel": channel, **backend.pusher.authenticate(channel, cy.socket_id, {"user_id": "cy"})},
        )
        refused = cy.next("pusher:subscription_error", channel)["data"]
        assert (refused["type"], refused["status"]) == ("LimitReached", 403)

        # A member already present may open another tab; the channel still has its two members.
        again = tab.subscribe(channel, backend, user="ann")
        assert sorted(again["data"]["presence"]["ids"]) == ["ann", "bob"]
