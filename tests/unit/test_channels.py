"""Local presence counting, as plain data."""

from __future__ import annotations

from switchboard_server.core.channels import Channel
from switchboard_server.core.namespaces import Namespace


def test_presence_counts_connections_per_user():
    channel = Channel("c", Namespace())
    assert channel.add_member("alice", {"n": 1}) is True
    assert channel.add_member("alice", {"n": 1}) is False
    assert channel.remove_member("alice") is None
    assert channel.member_list() == [{"user": "alice", "info": {"n": 1}}]
    assert channel.remove_member("alice") == {"user": "alice", "info": {"n": 1}}
    assert channel.member_list() == [] and channel.remove_member("alice") is None
