"""Channels spread over three Redis instances: each channel whole on one, every feature working
across two Gunicorn instances, and an instance that stops costing only its own channels."""

from __future__ import annotations

import pytest
import redis

from switchboard_server.brokers.redis import shard_index
from tests.integration.across import every_feature_across_two_instances
from tests.integration.servers import RedisServer
from tests.integration.test_redis_outage import Publisher, RawSubscriber, check_told, wait_for

INSTANCES = 3


@pytest.fixture
def instances(tmp_path) -> list[RedisServer]:
    started = []
    for number in range(INSTANCES):
        folder = tmp_path / f"redis-{number}"
        folder.mkdir()
        started.append(RedisServer(folder))
    yield started
    for instance in started:
        instance.stop()


@pytest.fixture
def pair(start_server, instances):
    """Instances A and B of one worker each (so two workers for sure), over three Redis."""
    env = {
        "SWITCHBOARD_REDIS_URL": ",".join(instance.url for instance in instances),
        "SWITCHBOARD_WORKERS": "1",
        "SWITCHBOARD_RATE_MESSAGES": "0",
    }
    return start_server(env), start_server(env)


def one_per_instance(prefix: str) -> list[str]:
    """A channel name living on each instance, in instance order."""
    names: dict[int, str] = {}
    number = 0
    while len(names) < INSTANCES:
        names.setdefault(shard_index(f"{prefix}{number}", INSTANCES), f"{prefix}{number}")
        number += 1
    return [names[index] for index in range(INSTANCES)]


def holders(instances: list[RedisServer], key: str) -> list[int]:
    """The instances that hold `key`, asked directly."""
    found = []
    for index, instance in enumerate(instances):
        with redis.Redis(port=instance.port) as direct:
            if direct.exists(key):
                found.append(index)
    return found


def test_channels_spread_over_every_instance_and_each_lives_on_exactly_one(pair, instances):
    a, b = pair
    channels = [f"room-{number}" for number in range(30)]
    for channel in channels:
        for server in (a, b):
            assert server.api("POST", "/api/publish", {"channel": channel, "data": server.port})[0] == 200
    used = set()
    for channel in channels:
        on = holders(instances, f"sb:{{{channel}}}:m")
        assert len(on) == 1, (channel, on)
        assert holders(instances, f"sb:{{{channel}}}:s") == on
        with redis.Redis(port=instances[on[0]].port) as direct:
            assert direct.xlen(f"sb:{{{channel}}}:s") == 2
            assert direct.hget(f"sb:{{{channel}}}:m", "offset") == b"2"
        used.add(on[0])
    assert used == set(range(INSTANCES))


def test_publish_subscribe_presence_history_and_recovery_on_every_instance(pair, instances):
    a, b = pair

    def placed(index: int, channel: str) -> None:
        # Presence lives with the channel: its members on its instance only.
        assert holders(instances, f"sb:{{{channel}}}:u") == [index]

    with a.client(token=a.token("ann")) as ann:
        every_feature_across_two_instances(a, b, ann, one_per_instance("presence-hall-"), placed).close()


def test_an_instance_that_stops_costs_only_its_own_channels(pair, instances):
    """Instance 0 stops mid-stream and comes back empty: its channel's subscribers are told
    (a new epoch), while the channels of the other two stream on without a word."""
    a, b = pair
    channels = one_per_instance("stream-")
    subscribers = {channel: [RawSubscriber(a, channel), RawSubscriber(b, channel)] for channel in channels}
    publishers = {channel: Publisher(a if index % 2 else b, channel) for index, channel in enumerate(channels)}
    for channel in channels:
        for subscriber in subscribers[channel]:
            subscriber.start()
        publishers[channel].start()
    try:
        wait_for(lambda: all(publisher.stored >= 20 for publisher in publishers.values()))
        instances[0].stop()
        refused = publishers[channels[0]].refused
        wait_for(lambda: publishers[channels[0]].refused >= refused + 50, what="publishes on instance 0 refused")
        # The other instances' channels go on while instance 0 is down, and both workers stay healthy.
        during = {channel: publishers[channel].stored for channel in channels[1:]}
        wait_for(lambda: all(publishers[channel].stored >= during[channel] + 50 for channel in channels[1:]))
        for channel in channels[1:]:
            wait_for(lambda channel=channel: all((s.last() or 0) >= during[channel] + 50 for s in subscribers[channel]))
        assert a.health()[0] == 200 and b.health()[0] == 200
        instances[0].start()
        # Its channel's subscribers are told, and go on in the new epoch.
        wait_for(
            lambda: all(s.notices and s.events[-1][0] == "message" for s in subscribers[channels[0]]),
            what="instance 0's subscribers told and streaming again",
        )
    finally:
        for publisher in publishers.values():
            publisher.stop.set()
            publisher.join(10)
    for channel in channels:
        last = publishers[channel].stored - 1
        for subscriber in subscribers[channel]:
            wait_for(
                lambda subscriber=subscriber, last=last: subscriber.last() == last, what=f"{channel} to get {last}"
            )
            subscriber.done.set()
            subscriber.join(5)
    for subscriber in subscribers[channels[0]]:
        assert check_told(subscriber.events), subscriber.events
    for channel in channels[1:]:
        for subscriber in subscribers[channel]:
            assert not check_told(subscriber.events)
            numbers = [event[3] for event in subscriber.events]
            assert numbers == list(range(numbers[0], numbers[-1] + 1))
