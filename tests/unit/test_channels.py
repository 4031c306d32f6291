"""History offsets, recovery windows and presence counting, as plain data."""

from __future__ import annotations

from hub.channels import Channel


def fill(channel: Channel, count: int) -> None:
    for _ in range(count):
        channel.append(lambda offset: f"frame-{offset}".encode())


def test_since_returns_what_is_held_and_whether_it_is_complete():
    channel = Channel("c", history_size=3)
    assert channel.since(0) == ([], True)
    fill(channel, 5)
    assert channel.last_offset == 5
    assert channel.since(2) == ([b"frame-3", b"frame-4", b"frame-5"], True)
    assert channel.since(1) == ([b"frame-3", b"frame-4", b"frame-5"], False)
    assert channel.since(5) == ([], True)
    assert channel.since(9) == ([], False)  # from the future: a different epoch in disguise


def test_no_history_still_counts_offsets():
    channel = Channel("c", history_size=0)
    fill(channel, 2)
    assert channel.last_offset == 2 and channel.since(1) == ([], False)


def test_a_failed_encoding_takes_no_offset():
    channel = Channel("c", history_size=3)

    def broken(offset: int) -> bytes:
        raise ValueError("cannot encode")

    try:
        channel.append(broken)
    except ValueError:
        pass
    assert channel.last_offset == 0


def test_presence_counts_connections_per_user():
    channel = Channel("c", history_size=1)
    assert channel.add_member("alice", {"n": 1}) is True
    assert channel.add_member("alice", {"n": 1}) is False
    assert channel.remove_member("alice") is None
    assert channel.member_list() == [{"user": "alice", "info": {"n": 1}}]
    assert channel.remove_member("alice") == {"user": "alice", "info": {"n": 1}}
    assert channel.member_list() == [] and channel.remove_member("alice") is None
