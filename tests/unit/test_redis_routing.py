"""Which Redis a channel lives on, how the URL setting is read, and how an envelope is split:
plain values, no Redis."""

from __future__ import annotations

import zlib
from collections import Counter

from switchboard_server.brokers.redis import jump_hash, redis_urls, shard_index
from switchboard_server.brokers.redis_scripts import bus_of, envelope_records

CHANNELS = [f"room-{number}" for number in range(3000)]


def test_urls_are_comma_separated_and_sentinel_hosts_stay_together():
    setting = "redis://a:6379/0, redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0,redis://b:6379/1"
    assert redis_urls(setting) == [
        "redis://a:6379/0",
        "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0",
        "redis://b:6379/1",
    ]
    assert redis_urls("redis://localhost:6379/0") == ["redis://localhost:6379/0"]


def test_channels_spread_evenly_and_stably():
    counts = Counter(shard_index(channel, 3) for channel in CHANNELS)
    assert set(counts) == {0, 1, 2}
    assert all(count > 800 for count in counts.values())
    # The same name always lands on the same instance (CRC32, never Python's salted hash()).
    assert [shard_index(channel, 3) for channel in CHANNELS[:50]] == [
        jump_hash(zlib.crc32(channel.encode()), 3) for channel in CHANNELS[:50]
    ]


def test_adding_an_instance_moves_only_channels_to_it():
    moved = [channel for channel in CHANNELS if shard_index(channel, 3) != shard_index(channel, 4)]
    assert all(shard_index(channel, 4) == 3 for channel in moved)
    assert 500 < len(moved) < 1000  # about a quarter


def test_an_envelope_splits_into_its_records():
    records = [("room", b"m1 e1  {}"), ("caf\u00e9 1:2", b"p ")]
    data = b"".join(b"%d:%s%d:%s" % (len(name.encode()), name.encode(), len(body), body) for name, body in records)
    assert envelope_records(data) == records


def test_a_channel_has_one_bus():
    assert bus_of("room", 16) == bus_of("room", 16)
    assert len({bus_of(channel, 16) for channel in CHANNELS}) == 16
