"""The client side of the Switchboard protocol, without I/O: what to send, and what arrivals mean.

A `Session` is everything a client must remember across connections: each subscription's offset
and epoch and the messages waiting to be read, the commands waiting for a reply, and the frames to
send next. The sync and asyncio clients feed it every text frame they receive (`receive`) and
write out what it hands them (`data_to_send`); they tell it when a connection ends
(`connection_lost`). It never touches a socket, a thread, a clock or an event loop, so it is
tested with plain values (tests/unit/test_client_protocol.py), the way `websockets` tests its own
protocol.

What it guarantees, whatever the connections do: a subscription never yields an offset twice or
out of order within an epoch, and whenever it cannot prove that nothing is missing (the server
says `recovered: false`, or offsets jump) it queues a `RecoveryError` before the next message.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from switchboard_client.errors import ConnectionFailed, RecoveryError, SwitchboardError, TooLargeError, error_for

# Close code for a message over the server's size limit (docs/protocol.md).
CLOSE_TOO_BIG = 1009
# A draining server closes with 1012 and says within how long to come back (docs/protocol.md).
CLOSE_SERVICE_RESTART = 1012
_RESTART_WITHIN = re.compile(r"reconnect within (\d+) ms")


def _encode(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# json.loads' own C scanner without its whitespace checks: twice as fast on a small frame, and the
# server's frames are compact JSON objects. Decoding is most of a message's cost in this client.
_decode = json.JSONDecoder().raw_decode


# -- what a subscription yields ------------------------------------------------------------------


# Not frozen: a frozen dataclass costs five times as much to build, and one is built per message.
@dataclass(slots=True)
class Message:
    """One message of a channel. `sender` is the publishing user (the protocol's `from`), None
    for messages published over HTTP; `epoch` is the channel's life the offset belongs to."""

    channel: str
    offset: int
    epoch: str | None
    data: Any
    sender: str | None


@dataclass(frozen=True, slots=True)
class Member:
    """Someone subscribed to a channel: a user (all their connections are one member) and the
    `info` their token carries."""

    user: str
    info: Any


@dataclass(frozen=True, slots=True)
class Join:
    """A user's first connection subscribed to a `presence-` channel."""

    channel: str
    user: str
    info: Any


@dataclass(frozen=True, slots=True)
class Leave:
    """A user's last connection left a `presence-` channel."""

    channel: str
    user: str
    info: Any


# -- state ---------------------------------------------------------------------------------------


class Command:
    """A command waiting for its reply. `waiter` belongs to the I/O layer (a future, say)."""

    __slots__ = ("id", "type", "frame", "sent", "done", "result", "error", "key", "channel", "waiter")

    def __init__(self, command_id: int, type: str, frame: str, key: str | None = None, channel: Channel | None = None):
        self.id = command_id
        self.type = type
        self.frame = frame
        self.sent = False
        self.done = False
        self.result: Any = None
        self.error: Exception | None = None
        self.key = key
        self.channel = channel
        self.waiter: Any = None

    def settle(self, result: Any = None, error: Exception | None = None) -> None:
        self.done, self.result, self.error = True, result, error


# Channel states: waiting for the first reply; subscribed; refused by the server; unsubscribed.
PENDING, LIVE, FAILED, CLOSED = "pending", "live", "failed", "closed"


class Channel:
    """One subscription: where it is in the channel, and what arrived that nobody has read yet.

    `offset` is the last offset delivered (or the reply's, for a fresh subscription); None means
    the next message sets it, after a recovery failure whose held messages are on their way.
    `inbox` holds Message, Join, Leave and RecoveryError items in arrival order.
    """

    __slots__ = (
        "name", "offset", "epoch", "presence", "token", "state", "error", "inbox", "command", "waiter", "delivered",
        "offsets_skip",
    )  # fmt: skip

    def __init__(self, name: str, since: int | None, presence: bool, token: str | None = None) -> None:
        self.name = name
        self.offset = since
        self.epoch: str | None = None
        self.presence = presence
        self.token = token  # a subscription token, sent with every subscribe
        # The server said offsets may skip here (a latest-value or conflated channel): no gap is an error.
        self.offsets_skip = False
        self.state = PENDING
        self.error: Exception | None = None
        self.inbox: deque[Message | Join | Leave | RecoveryError] = deque()
        # The subscribe command on the current connection, until its reply.
        self.command: Command | None = None
        self.waiter: Any = None
        # The event for "something arrived", built once: messages are the hot path.
        self.delivered = Delivered(self)


# -- events: what a received frame means to the I/O layer -----------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """A connection is ready; re-subscriptions and waiting commands are in `data_to_send()`."""

    user: str
    client: str


@dataclass(frozen=True, slots=True)
class Settled:
    """A command got its reply or error."""

    command: Command


@dataclass(frozen=True, slots=True)
class Delivered:
    """A channel changed: something in its inbox, or its state (live, failed)."""

    channel: Channel


@dataclass(frozen=True, slots=True)
class TokenExpiring:
    """The connection token expires at `expires` (Unix time): send `refresh` with a new one."""

    expires: float


@dataclass(frozen=True, slots=True)
class Refused:
    """An error outside any command: the server closes next. `expired`: the token of a welcomed
    connection ran out, which a fresh token on the next connection can fix; anything else (a
    token refused at connect) would only be refused again."""

    error: SwitchboardError
    expired: bool


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The server cannot serve a subscription right now (its broker is down): drop this connection
    and reconnect after a backoff, which re-subscribes everything."""

    reason: str


Event = Welcome | Settled | Delivered | TokenExpiring | Refused | Reconnect


class Session:
    """The protocol state of one client, across all its connections."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        # Every command without its reply, in call order; and those sent on this connection, in
        # the order sent (the server answers one connection's commands in that order).
        self.pending: dict[int, Command] = {}
        self._in_flight: deque[Command] = deque()
        self._outbox: list[str] = []
        self._next_id = 1
        self.connected = False
        self.user: str | None = None
        self.client_id: str | None = None

    # -- what the application asks for -----------------------------------------------------------

    def subscribe(
        self, name: str, since: int | None = None, presence: bool = False, token: str | None = None
    ) -> Channel:
        """Start a subscription; `since` asks for the held messages after that offset too, `token`
        is a subscription token for a protected channel."""
        if name in self.channels:
            raise ValueError(f"already subscribed to {name!r}: one subscription per channel and client")
        channel = self.channels[name] = Channel(name, since, presence, token)
        if self.connected:
            self._subscribe_on_server(channel)
        return channel

    def unsubscribe(self, name: str) -> Command | None:
        """End a subscription. Returns the command to wait for, or None when the server never had it.

        A channel this session does not know is asked about anyway, so the server can answer
        `not_subscribed`.
        """
        channel = self.channels.pop(name, None)
        if channel is not None:
            # A subscribe still on its way is answered before the unsubscribe; that answer is ignored.
            channel.state, channel.command = CLOSED, None
            if not self.connected:
                return None  # the server forgot it with the last connection
        return self._command("unsubscribe", {"type": "unsubscribe", "channel": name})

    def publish(self, name: str, data: Any, key: str | None = None) -> Command:
        """Publish `data`; `key` (default: a fresh random one) makes a re-sent publish land once."""
        key = key if key is not None else uuid.uuid4().hex
        return self._command(
            "publish", {"type": "publish", "channel": name, "data": data, "idempotency_key": key}, key=key
        )

    def presence(self, name: str) -> Command:
        return self._command("presence", {"type": "presence", "channel": name})

    def ping(self) -> Command:
        return self._command("ping", {"type": "ping"})

    def rpc(self, method: str, params: Any = None) -> Command:
        """Call the server's RPC method `method` with `params` (any JSON)."""
        return self._command("rpc", {"type": "rpc", "method": method, "params": params})

    def refresh(self, token: str) -> Command:
        return self._command("refresh", {"type": "refresh", "token": token})

    def abandon(self, command: Command) -> None:
        """Stop waiting for a command (it timed out): never send it, ignore its reply."""
        self._forget(command)

    def data_to_send(self) -> list[str]:
        """The frames to write to the current connection, in order."""
        frames = self._outbox
        if frames:
            self._outbox = []
        return frames

    # -- what the connection does ----------------------------------------------------------------

    def receive(self, text: str) -> Event | None:
        """One frame from the server; returns what the I/O layer must act on, if anything.
        Raises ValueError for a frame that is not one JSON object (a broken server)."""
        frame, end = _decode(text)
        if end != len(text) or type(frame) is not dict:
            raise ValueError(f"not a JSON object: {text[:100]!r}")
        kind = frame.get("type")
        if kind == "message":
            return self._message(frame)
        if kind == "reply" or kind == "error":
            return self._answer(frame)
        if kind == "join" or kind == "leave":
            return self._member(kind, frame)
        if kind == "welcome":
            return self._welcome(frame)
        if kind == "token_expiring":
            return TokenExpiring(frame["expires"])
        return None  # a push type from a newer server

    def connection_lost(self, code: int | None = None) -> list[Command]:
        """The connection ended (close `code`, None without a close frame). Commands that were
        on the wire are sent again on the next connection, except what the loss itself answered
        (an unsubscribe, a refresh) and, on 1009, the one too big to send; returns those settled.
        """
        self.connected = False
        self._outbox = []
        settled = []
        if code == CLOSE_TOO_BIG and self._in_flight:
            # The server read our frames in order and closed on the header of the big one:
            # everything before it was answered already.
            command = self._in_flight[0]
            self._forget(command)
            command.settle(error=TooLargeError("the server closed the connection (1009): message too big"))
            settled.append(command)
        self._in_flight.clear()
        for channel in self.channels.values():
            if channel.command is not None:
                self.pending.pop(channel.command.id, None)
                channel.command = None
        for command in tuple(self.pending.values()):
            if command.type in ("unsubscribe", "refresh"):
                # The server forgets a closed connection's subscriptions; a new connection
                # starts with a fresh token anyway.
                del self.pending[command.id]
                command.settle({})
                settled.append(command)
            elif command.type == "rpc" and command.sent:
                # An RPC may have run: sending it again could run it twice. The caller decides.
                del self.pending[command.id]
                command.settle(
                    error=ConnectionFailed("the connection ended before the RPC was answered: it may have run")
                )
                settled.append(command)
            else:
                command.sent = False
        return settled

    def close(self, error: Exception) -> list[Command | Channel]:
        """The client is done: fail every command and end every subscription with `error`."""
        self.connected = False
        self._outbox = []
        self._in_flight.clear()
        ended: list[Command | Channel] = []
        for command in self.pending.values():
            command.settle(error=error)
            ended.append(command)
        self.pending.clear()
        for channel in self.channels.values():
            channel.state, channel.error = FAILED, error
            ended.append(channel)
        self.channels.clear()
        return ended

    # -- internals -------------------------------------------------------------------------------

    def _command(self, type: str, body: dict, key: str | None = None, channel: Channel | None = None) -> Command:
        command_id = self._next_id
        self._next_id += 1
        body["id"] = command_id
        command = self.pending[command_id] = Command(command_id, type, _encode(body), key, channel)
        if self.connected:
            self._send(command)
        return command

    def _send(self, command: Command) -> None:
        command.sent = True
        self._in_flight.append(command)
        self._outbox.append(command.frame)

    def _forget(self, command: Command) -> None:
        self.pending.pop(command.id, None)
        if command.sent:
            try:
                self._in_flight.remove(command)
            except ValueError:
                pass  # sent on a connection that has ended since

    def _subscribe_on_server(self, channel: Channel) -> None:
        body: dict[str, Any] = {"type": "subscribe", "channel": channel.name}
        if channel.offset is not None:
            body["since"] = channel.offset
        if channel.epoch is not None:
            body["epoch"] = channel.epoch
        if channel.token is not None:
            body["token"] = channel.token
        channel.command = self._command("subscribe", body, channel=channel)

    def _welcome(self, frame: dict) -> Welcome:
        self.connected = True
        self.user, self.client_id = frame.get("user"), frame.get("client")
        # Subscriptions first, so waiting publishes to those channels come back to us as well.
        for channel in self.channels.values():
            self._subscribe_on_server(channel)
        for command in self.pending.values():
            if not command.sent:
                self._send(command)
        return Welcome(self.user, self.client_id)

    def _answer(self, frame: dict) -> Event | None:
        command_id = frame.get("id")
        if command_id is None:
            if frame.get("code") == "unrecoverable" and "channel" in frame:
                return self._messages_lost(frame)
            if frame.get("code") == "rate_limited" and self._in_flight:
                # Dropped before it was read, so without its id: the oldest command unanswered.
                command = self._in_flight[0]
            else:
                error = error_for(frame.get("code", "error"), frame.get("message", ""))
                return Refused(error, expired=self.connected and error.code == "unauthorized")
        else:
            command = self.pending.get(command_id)
            if command is None:
                return None  # abandoned (timed out), or a reply from before a reconnect
        self._forget(command)
        if frame["type"] == "error":
            error = error_for(frame.get("code", "error"), frame.get("message", ""))
            if command.type == "subscribe":
                return self._subscribe_failed(command, error)
            command.settle(error=error)
        elif command.type == "subscribe":
            return self._subscribed(command, frame["result"])
        else:
            command.settle(frame.get("result"))
        return Settled(command)

    def _subscribed(self, command: Command, result: dict) -> Delivered | None:
        channel = command.channel
        if channel.command is not command:
            return None  # unsubscribed meanwhile
        channel.command = None
        since, previous_epoch = channel.offset, channel.epoch
        epoch, offset = result["epoch"], result["offset"]
        if since is None:
            channel.offset = offset  # live from here
        elif not result.get("recovered", True):
            if previous_epoch is not None and epoch != previous_epoch:
                reason, held = "the channel's epoch changed: its history was lost (a server restart)", False
            elif offset < since:
                reason, held = "the channel's offsets started again: its history was forgotten", False
            else:
                reason, held = "history no longer reaches back that far", True
            channel.inbox.append(RecoveryError(channel.name, reason, since, previous_epoch, epoch, offset))
            # Held messages (if any) follow this reply; without them, live ones follow `offset`.
            channel.offset = None if held else offset
        channel.epoch = epoch
        channel.offsets_skip = result.get("offsets_skip", False)
        channel.state = LIVE
        return channel.delivered

    def _messages_lost(self, frame: dict) -> None:
        """The server lost messages of a channel on their way to it, and ended the subscription:
        subscribe again from the last offset delivered, so that the reply's `recovered` decides,
        as after a reconnect (held messages replayed, a RecoveryError for what is not)."""
        channel = self.channels.get(frame["channel"])
        if channel is None or channel.state != LIVE or channel.command is not None:
            return None  # unsubscribed, or already subscribing again
        if channel.offset is None:
            # Waiting for held messages after a failed recovery: no position to resume from.
            channel.inbox.append(
                RecoveryError(
                    channel.name, "messages were lost on their way to the server", None, channel.epoch,
                    frame.get("epoch") or channel.epoch or "", frame.get("offset") or 0,
                )
            )  # fmt: skip
        self._subscribe_on_server(channel)
        return None

    def _subscribe_failed(self, command: Command, error: SwitchboardError) -> Event | None:
        channel = command.channel
        if channel.command is not command:
            return None
        channel.command = None
        if error.code == "unavailable":
            return Reconnect(f"subscribing to {channel.name!r}: {error.message}")
        del self.channels[channel.name]
        channel.state, channel.error = FAILED, error
        return channel.delivered

    def _message(self, frame: dict) -> Delivered | None:
        channel = self.channels.get(frame["channel"])
        if channel is None or channel.state != LIVE:
            return None  # unsubscribed while it was on its way
        offset = frame["offset"]
        last = channel.offset
        if last is not None:
            if offset <= last:
                return None  # already delivered: replayed after a reconnect
            if offset != last + 1 and not channel.offsets_skip:
                channel.inbox.append(
                    RecoveryError(
                        channel.name,
                        f"offsets {last + 1} to {offset - 1} never arrived",
                        last,
                        channel.epoch,
                        channel.epoch,
                        offset,
                    )
                )
        channel.offset = offset
        channel.inbox.append(Message(channel.name, offset, channel.epoch, frame.get("data"), frame.get("from")))
        return channel.delivered

    def _member(self, kind: str, frame: dict) -> Delivered | None:
        channel = self.channels.get(frame["channel"])
        if channel is None or not channel.presence:
            return None
        member = frame.get("member") or {}
        event = (Join if kind == "join" else Leave)(channel.name, member.get("user"), member.get("info"))
        channel.inbox.append(event)
        return channel.delivered


class Backoff:
    """Delays between connection attempts, like the browser client's: after the n-th failure in a
    row, a random time between half and all of min(max_delay, min_delay * 2**(n-1)), so the
    clients one restart disconnected do not all come back in the same instant."""

    def __init__(self, min_delay: float = 0.5, max_delay: float = 15.0, rand=random.random) -> None:
        if not 0 < min_delay <= max_delay:
            raise ValueError("need 0 < min_delay <= max_delay")
        self.min_delay, self.max_delay = min_delay, max_delay
        self.failures = 0
        self._held = 0
        self._rand = rand

    def next_delay(self) -> float:
        ceiling = min(self.max_delay, self.min_delay * 2**self.failures)
        self.failures += 1
        return ceiling * (0.5 + self._rand() / 2)

    def after_close(self, code: int | None, reason: str = "") -> float:
        """The wait before reconnecting after a close: a random moment within the window a
        draining server asked for (full jitter, so the clients it closed together come back at
        an even pace, and a fresh count of failures), or else the next backoff delay."""
        within = restart_window(code, reason)
        if within is None:
            return self.next_delay()
        self.failures = 0
        return within * self._rand()

    def reset(self) -> None:
        """A connection worked: start again from the shortest delay."""
        self._held, self.failures = self.failures, 0

    def revert(self) -> None:
        """The connection that reset the count failed after all (its broker was down): keep counting."""
        self.failures = self._held


def restart_window(code: int | None, reason: str) -> float | None:
    """The seconds a draining server asked to spread the reconnect over (close 1012, reason
    "server restarting: reconnect within N ms"), or None for any other close."""
    if code != CLOSE_SERVICE_RESTART:
        return None
    match = _RESTART_WITHIN.search(reason or "")
    return int(match.group(1)) / 1000 if match else None
