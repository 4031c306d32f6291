"""Each connection's grants are its own: a grant added to one never reaches another."""

from __future__ import annotations

import socket

from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.config import Config
from switchboard_server.state import SwitchboardState


def test_each_anonymous_connection_gets_grants_of_its_own():
    first, second = ANONYMOUS.grants(), ANONYMOUS.grants()
    first.add_channel("private-doc", False)
    assert first.may_subscribe("private-doc") and not second.may_subscribe("private-doc")


def test_the_hub_gives_every_connection_its_own_grants():
    hub = SwitchboardState(Config(rate_messages=0)).hub
    pairs = [socket.socketpair() for _ in range(2)]
    first, second = (hub.open(server_side, ANONYMOUS) for server_side, _client in pairs)
    first.grants.add_channel("private-doc", False)
    assert first.grants is not second.grants
    assert not second.grants.may_subscribe("private-doc")
    for _server_side, client in pairs:
        client.close()
