"""Which slot each Redis Cluster partition is in, and the keys and bus it names: plain values."""

from __future__ import annotations

from collections import Counter

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from switchboard_server.brokers.redis_cluster import partition_tags
from switchboard_server.brokers.redis_scripts import KeySpace


def test_each_partition_lies_in_its_share_of_the_slots():
    for count in (1, 3, 16, 128):
        for partition, tag in enumerate(partition_tags(count)):
            slot = key_slot(tag.encode())
            assert (
                partition * REDIS_CLUSTER_HASH_SLOTS // count
                <= slot
                < (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // count
            )


def test_partitions_spread_evenly_over_masters_with_equal_slot_ranges():
    share = REDIS_CLUSTER_HASH_SLOTS / 3
    masters = Counter(int(key_slot(tag.encode()) // share) for tag in partition_tags(128))
    assert sorted(masters.values()) == [42, 43, 43]


def test_a_partition_names_every_key_and_its_bus_in_its_slot():
    tag = partition_tags(16)[5]
    keys = KeySpace(prefix=f"sb:{{{tag}}}:", buses=1, publish="SPUBLISH")
    names = [keys.key("caf\u00e9 {room}", part) for part in ("m", "s", "u", "i", "o", "k:key")]
    names += [keys.bus("any"), keys.workers, keys.held("w1"), keys.counts("w1")]
    assert {key_slot(name.encode()) for name in names} == {key_slot(tag.encode())}
    assert KeySpace().key("room", "m") == "sb:{room}:m"  # a Redis of its own keeps its names
