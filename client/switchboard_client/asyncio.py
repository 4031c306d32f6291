"""The asyncio client: `await connect(url, token)`, on `websockets.asyncio.client`.

One task per client reads the socket, feeds each frame to the `Session` and wakes whoever waits
for it: a command's future, a subscription's iterator. When the socket ends it waits out the
backoff and connects again; the Session re-subscribes and re-sends. Same semantics as the sync
client (switchboard_client.sync), whose docstrings say more.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from switchboard_client.errors import (
    TOKEN_FAILURES_RETRIED,
    ClientClosed,
    CommandTimeout,
    ConnectionFailed,
    NotSubscribedError,
    RecoveryError,
    SwitchboardError,
)
from switchboard_client.handshake import check_url, classify, connection_url
from switchboard_client.protocol import (
    LIVE,
    PENDING,
    Backoff,
    Channel,
    Command,
    Delivered,
    Join,
    Leave,
    Member,
    Message,
    Reconnect,
    Refused,
    Session,
    Settled,
    TokenExpiring,
    Welcome,
)

log = logging.getLogger("switchboard_client")

Token = str | Callable[[], str | Awaitable[str]] | None


class connect:  # noqa: N801 (used like a function, as websockets' own connect)
    """`client = await connect(url, token)`, or `async with connect(url, token) as client:`.

    `token` is a string, or a function returning one or an awaitable of one; what it raises is
    retried or raised to every waiting and later call, as in the sync client.
    Options as for the sync `connect`: `timeout`, `open_timeout`, `min_delay`, `max_delay`.
    """

    def __init__(self, url: str, token: Token = None, **options: Any) -> None:
        self._client = Client(url, token, **options)

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def _open(self) -> Client:
        try:
            await self._client.start()
        except BaseException:
            await self._client.close()
            raise
        return self._client

    async def __aenter__(self) -> Client:
        return await self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()


class Client:
    """One logical connection to Switchboard, kept alive across sockets, for one event loop."""

    def __init__(
        self,
        url: str,
        token: Token = None,
        *,
        timeout: float = 30.0,
        open_timeout: float = 10.0,
        min_delay: float = 0.5,
        max_delay: float = 15.0,
    ) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self.open_timeout = open_timeout
        self._token = token
        self._session = Session()
        self._backoff = Backoff(min_delay, max_delay)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task | None = None
        self._welcomed = asyncio.Event()  # set while connected, and once closed (to wake waiters)
        self._retry_in = 0.0
        self._closed = False
        self._fatal: Exception | None = None
        self._last_failure: SwitchboardError | None = None

    @property
    def user(self) -> str | None:
        return self._session.user

    @property
    def connected(self) -> bool:
        return self._session.connected

    # -- the API ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection task and wait for the first welcome (see `wait_connected`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"switchboard {self.url}")
        await self.wait_connected()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while not self._session.connected:
                    self._check_open()
                    await self._welcomed.wait()
        except TimeoutError:
            raise self._last_failure or ConnectionFailed(f"no welcome from {self.url}") from None

    def subscribe(
        self,
        channel: str,
        since: int | None = None,
        *,
        presence: bool = False,
        token: str | None = None,
        on_unrecovered: Callable[[RecoveryError], object] | None = None,
        timeout: float | None = None,
    ) -> _Subscribing:
        """`await` it for a Subscription once the server confirmed it, or `async with` it to
        unsubscribe at the end. Arguments as for the sync client's `subscribe`."""
        return _Subscribing(self, channel, since, presence, token, on_unrecovered, timeout)

    async def unsubscribe(self, channel: str, timeout: float | None = None) -> None:
        self._check_open()
        state = self._session.channels.get(channel)
        command = self._session.unsubscribe(channel)
        if state is not None:
            _wake(state)
        if command is not None:
            await self._result(command, timeout, f"unsubscribe from {channel!r}")

    async def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> int:
        self._check_open()
        command = self._session.publish(channel, data, idempotency_key)
        return (await self._result(command, timeout, f"publish to {channel!r}"))["offset"]

    async def presence(self, channel: str, timeout: float | None = None) -> list[Member]:
        self._check_open()
        command = self._session.presence(channel)
        members = (await self._result(command, timeout, f"presence of {channel!r}"))["members"]
        return [Member(member["user"], member.get("info")) for member in members]

    async def rpc(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """As the sync client's `rpc`: the method's result, or its error raised."""
        self._check_open()
        return (await self._result(self._session.rpc(method, params), timeout, f"rpc {method!r}"))["data"]

    async def ping(self, timeout: float | None = None) -> None:
        self._check_open()
        await self._result(self._session.ping(), timeout, "ping")

    async def close(self) -> None:
        """Close for good: waiting calls raise ClientClosed, subscriptions stop iterating."""
        self._shut(ClientClosed("the client was closed"))
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    async def _subscribe(
        self, name: str, since: int | None, presence: bool, token: str | None, on_unrecovered, timeout: float | None
    ) -> Subscription:
        self._check_open()
        state = self._session.subscribe(name, since, presence, token)
        await self._flush()
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while state.state == PENDING:
                    await _channel_changed(state)
        except TimeoutError:
            if self._session.channels.get(name) is state:
                self._session.unsubscribe(name)
                await self._flush()
            raise CommandTimeout(f"subscribe to {name!r}: no reply after the timeout") from None
        if state.state != LIVE:
            raise state.error
        return Subscription(self, state, on_unrecovered)

    async def _result(self, command: Command, timeout: float | None, what: str) -> Any:
        waiter = command.waiter = asyncio.get_running_loop().create_future()
        await self._flush()
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                return await waiter
        except TimeoutError:
            self._session.abandon(command)
            raise CommandTimeout(f"{what}: no reply after the timeout", command.key) from None

    async def _run(self) -> None:
        try:
            await self._connect_and_read()
        except Exception as exc:  # a bug here must not leave every caller waiting for nothing
            log.exception("the connection task failed")
            self._shut(ClientClosed(f"the connection task failed: {exc!r}"))

    async def _connect_and_read(self) -> None:
        """Connect, read until the socket ends, back off, again; until closed."""
        while not self._closed:
            if self._retry_in > 0:
                await asyncio.sleep(self._retry_in)
            try:
                token = self._token() if callable(self._token) else self._token
                if inspect.isawaitable(token):
                    token = await token
            except TOKEN_FAILURES_RETRIED as exc:
                self._failed(ConnectionFailed(f"the token callable failed: {exc!r}"), retry=True)
                continue
            except Exception as exc:
                # The application's own code failed, not the network: every waiting call raises it.
                self._shut(exc)
                return
            try:
                ws = await ws_connect(
                    connection_url(self.url, token),
                    open_timeout=self.open_timeout,
                    close_timeout=2,
                    compression=None,  # the server never accepts it
                )
            except Exception as exc:
                self._failed(*classify(exc))
                continue
            if self._closed:
                await ws.close()
                return
            self._ws = ws
            receive, data_to_send = self._session.receive, self._session.data_to_send
            try:
                async for text in ws:
                    event = receive(text)
                    frames = data_to_send()
                    if frames:
                        await self._send(ws, frames)
                    if type(event) is Delivered:  # the hot path: a message for a subscription
                        _wake(event.channel)
                    elif event is not None:
                        await self._act(event, ws)
            except ConnectionClosed:
                pass
            self._lost(ws)

    async def _act(self, event, ws: ClientConnection) -> None:
        kind = type(event)
        if kind is Settled:
            _settle(event.command)
        elif kind is Welcome:
            self._backoff.reset()
            self._welcomed.set()
            log.info("connected to %s as %s", self.url, event.user)
        elif kind is TokenExpiring:
            await self._renew(event)
        elif kind is Refused:
            if not (event.expired and callable(self._token)):
                self._shut(event.error)
                await ws.close()
        elif kind is Reconnect:
            log.info("reconnecting: %s", event.reason)
            self._backoff.revert()
            await ws.close()

    async def _renew(self, event: TokenExpiring) -> None:
        if not callable(self._token):
            log.warning("the token expires at %s and cannot be renewed: pass a callable token", event.expires)
            return
        try:
            token = self._token()
            if inspect.isawaitable(token):
                token = await token
        except Exception:
            log.warning("the token callable failed; the server closes at expiry, then we reconnect", exc_info=True)
            return
        self._session.refresh(token)
        await self._flush()

    def _failed(self, error: SwitchboardError, retry: bool) -> None:
        if not retry:
            self._shut(error)
            return
        self._last_failure = error
        self._retry_in = self._backoff.next_delay()
        log.info("connection attempt to %s failed (%s); next in %.2f s", self.url, error, self._retry_in)

    def _lost(self, ws: ClientConnection) -> None:
        if ws is not self._ws:
            return
        self._ws = None
        self._welcomed.clear()
        for command in self._session.connection_lost(ws.close_code):
            _settle(command)
        self._retry_in = self._backoff.after_close(ws.close_code, ws.close_reason or "")
        log.info("connection to %s lost (%s); reconnecting in %.2f s", self.url, ws.close_code, self._retry_in)

    async def _flush(self) -> None:
        frames = self._session.data_to_send()
        if frames and self._ws is not None:
            await self._send(self._ws, frames)

    @staticmethod
    async def _send(ws: ClientConnection, frames: list[str]) -> None:
        try:
            for frame in frames:
                await ws.send(frame)
        except ConnectionClosed:
            pass  # the reading task finds out, and the session sends them again

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("the client was closed")

    def _shut(self, error: Exception) -> None:
        """Close for good; waiting and later calls raise `error` (unless the caller closed)."""
        if self._closed:
            return
        self._closed = True
        if not isinstance(error, ClientClosed):
            self._fatal = error
            log.error("giving up on %s: %s", self.url, error)
        for item in self._session.close(error):
            if isinstance(item, Channel):
                _wake(item)
            else:
                _settle(item)
        self._welcomed.set()


def _settle(command: Command) -> None:
    waiter = command.waiter
    if waiter is not None and not waiter.done():
        if command.error is not None:
            waiter.set_exception(command.error)
        else:
            waiter.set_result(command.result)


def _wake(channel: Channel) -> None:
    waiter = channel.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _channel_changed(channel: Channel) -> None:
    channel.waiter = asyncio.get_running_loop().create_future()
    try:
        await channel.waiter
    finally:
        channel.waiter = None


class _Subscribing:
    """What `Client.subscribe` returns: awaitable, and an async context manager."""

    def __init__(self, client: Client, *args: Any) -> None:
        self._client, self._args = client, args
        self._subscription: Subscription | None = None

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._client._subscribe(*self._args).__await__()

    async def __aenter__(self) -> Subscription:
        self._subscription = await self
        return self._subscription

    async def __aexit__(self, *exc: object) -> None:
        await self._subscription.close()


class Subscription:
    """A channel's messages, in offset order, each once: `async for`, or `await recv(timeout)`.
    The same rules as the sync client's Subscription."""

    def __init__(self, client: Client, state: Channel, on_unrecovered: Callable[[RecoveryError], object] | None):
        self._client = client
        self._state = state
        self._on_unrecovered = on_unrecovered

    @property
    def channel(self) -> str:
        return self._state.name

    @property
    def offset(self) -> int | None:
        return self._state.offset

    @property
    def epoch(self) -> str | None:
        return self._state.epoch

    async def recv(self, timeout: float | None = None) -> Message | Join | Leave:
        """The next item; TimeoutError after `timeout` seconds (None: wait for ever)."""
        async with asyncio.timeout(timeout):
            state = self._state
            while True:
                if state.inbox:
                    item = state.inbox.popleft()
                    if type(item) is RecoveryError:
                        if self._on_unrecovered is None:
                            raise item
                        result = self._on_unrecovered(item)
                        if inspect.isawaitable(result):
                            await result
                        continue
                    return item
                if state.state != LIVE:
                    raise state.error or ClientClosed(f"unsubscribed from {state.name!r}")
                await _channel_changed(state)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message | Join | Leave:
        try:
            return await self.recv()
        except ClientClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        if self._state.state != LIVE:
            return
        try:
            await self._client.unsubscribe(self._state.name)
        except (ClientClosed, NotSubscribedError):
            pass

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
