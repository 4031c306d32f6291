"""The same user story over any Redis layout (shards, a Cluster): two instances, two users, and
every feature on each channel, whichever Redis holds it."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.servers import Client, Endpoint


def every_feature_across_two_instances(
    a: Endpoint, b: Endpoint, ann: Client, channels: list[str], placed: Callable[[int, str], None]
) -> Client:
    """Ann on `a`, Ben on `b`, on each `presence-` channel of `channels`: join, presence through
    both APIs, a message from each, subscriber counts, then Ben away and back recovering what he
    missed. `placed(index, channel)` checks, after the channel's messages, where its keys live.
    Returns Ben's connection, open, with nothing left unread."""
    ben = b.client(token=b.token("ben"))
    epochs = {}
    for channel in channels:
        ann.command("subscribe", channel=channel)
        epochs[channel] = ben.command("subscribe", channel=channel)["result"]["epoch"]
        assert ann.next_push("join")["member"]["user"] == "ben"
    for index, channel in enumerate(channels):
        for server in (a, b):
            members = server.api("GET", f"/api/channels/{channel}/presence")[1]["members"]
            assert sorted(member["user"] for member in members) == ["ann", "ben"]
        ann.command("publish", channel=channel, data=f"A on {index}")
        ben.command("publish", channel=channel, data=f"B on {index}")
        for client in (ann, ben):
            assert [message["data"] for message in client.messages(2)] == [f"A on {index}", f"B on {index}"]
        placed(index, channel)
    counts = {entry["name"]: entry["subscribers"] for entry in a.api("GET", "/api/channels")[1]["channels"]}
    assert {name: counts.get(name) for name in channels} == {channel: 2 for channel in channels}

    # Ben leaves; what is published meanwhile is recovered when he comes back, on every channel.
    ben.close()
    for channel in channels:
        assert ann.next_push("leave")["member"]["user"] == "ben"
        ann.command("publish", channel=channel, data="while away")
    ben = b.client(token=b.token("ben"))
    for index, channel in enumerate(channels):
        reply = ben.command("subscribe", channel=channel, since=2, epoch=epochs[channel])["result"]
        assert reply["recovered"] and reply["offset"] == 3
        assert [(m["offset"], m["data"]) for m in ben.messages(1)] == [(3, "while away")]
        history = b.api("GET", f"/api/channels/{channel}/history")[1]
        assert [m["data"] for m in history["messages"]] == [f"A on {index}", f"B on {index}", "while away"]
    return ben
