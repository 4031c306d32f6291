"""The client for threads (and gevent): `connect(url, token)`, on `websockets.sync.client`.

It starts no thread of its own. Whichever thread is waiting (for a reply, or for a subscription's
next message) reads the socket on behalf of all of them, feeds the frame to the `Session`, and
wakes the others; when the socket is gone, that thread waits out the backoff and opens the next
one. So a thread iterating a subscription gets each message with no hand-off between threads, and
in a gevent-patched process, where threads are greenlets, the same code needs nothing special.
While nobody waits, `websockets`' own thread keeps the connection alive (it answers pings) and
holds what arrives; the next call catches up, reconnecting first if the server went away.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

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
    TokenExpiring,
    Welcome,
)

log = logging.getLogger("switchboard_client")

Token = str | Callable[[], str] | None


def connect(url: str, token: Token = None, **options: Any) -> Client:
    """Connect to `url` (ws://host:port/ws) and return once the server has welcomed the client.

    `token` is a string, or a callable returning one, called before every connection attempt and
    when the server says the token is about to expire. Before a connection attempt, a network
    failure in the callable (OSError, or this package's ConnectionFailed or UnavailableError) is
    retried like a failed connection; any other exception is a bug: it closes the client and is
    raised from the call waiting for it (and from every later one). Options: `timeout` (30 s: for each command,
    and for this first connection), `open_timeout` (10 s per handshake), `min_delay` and
    `max_delay` (0.5 and 15 s: the reconnect backoff). A connection the server refuses for good
    (a bad token, a 403) raises its error; one that keeps failing for `timeout` raises the last
    failure.
    """
    client = Client(url, token, **options)
    try:
        client.wait_connected()
    except BaseException:
        client.close()
        raise
    return client


class Client:
    """One logical connection to Switchboard, kept alive across sockets. Thread-safe."""

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
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._reading = False  # a thread is doing the I/O (see the module docstring)
        self._waiting = 0  # threads waiting on _changed
        self._ws: ClientConnection | None = None
        self._retry_at = 0.0  # no connection attempt before this (time.monotonic)
        self._interrupt = threading.Event()  # cuts a backoff wait short, on close
        self._closed = False
        self._fatal: Exception | None = None
        self._last_failure: SwitchboardError | None = None

    @property
    def user(self) -> str | None:
        """The user the server's welcome named (the token's `sub`, or the client id if anonymous)."""
        return self._session.user

    @property
    def connected(self) -> bool:
        return self._session.connected

    # -- the API ---------------------------------------------------------------------------------

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until a connection is welcomed; on timeout raise the last reason it was not."""
        try:
            self._wait(lambda: self._session.connected, self._deadline(timeout), "connect")
        except CommandTimeout:
            raise self._last_failure or ConnectionFailed(f"no welcome from {self.url}") from None

    def subscribe(
        self,
        channel: str,
        since: int | None = None,
        *,
        presence: bool = False,
        token: str | None = None,
        on_unrecovered: Callable[[RecoveryError], None] | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Subscribe to `channel` and return once the server has confirmed it.

        `since` asks for the messages after that offset that the channel still holds (0: all of
        them). `presence=True` also yields Join and Leave (on `presence-` channels); `token` is a
        subscription token for a protected channel (docs/security.md). When a
        resumption cannot be proven complete, iterating raises RecoveryError, or, given
        `on_unrecovered`, calls it instead.
        """
        with self._lock:
            self._check_open()
            state = self._session.subscribe(channel, since, presence, token)
            self._flush()
        try:
            self._wait(lambda: state.state != PENDING, self._deadline(timeout), f"subscribe to {channel!r}")
        except BaseException:
            self._forget(channel)
            raise
        if state.state != LIVE:
            raise state.error
        return Subscription(self, state, on_unrecovered)

    def unsubscribe(self, channel: str, timeout: float | None = None) -> None:
        """End a subscription; its iterator stops. Raises NotSubscribedError for an unknown one."""
        with self._lock:
            self._check_open()
            command = self._session.unsubscribe(channel)
            self._flush()
            self._changed.notify_all()
        if command is not None:
            self._result(command, timeout, f"unsubscribe from {channel!r}")

    def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> int:
        """Publish `data` (any JSON) and return its offset once the server has stored it.

        The command carries an idempotency key (a fresh one unless given), so when a reconnect
        cuts it off and it is sent again, it still lands exactly once.
        """
        with self._lock:
            self._check_open()
            command = self._session.publish(channel, data, idempotency_key)
            self._flush()
        return self._result(command, timeout, f"publish to {channel!r}")["offset"]

    def presence(self, channel: str, timeout: float | None = None) -> list[Member]:
        """Who is subscribed to `channel`, on every worker."""
        with self._lock:
            self._check_open()
            command = self._session.presence(channel)
            self._flush()
        members = self._result(command, timeout, f"presence of {channel!r}")["members"]
        return [Member(member["user"], member.get("info")) for member in members]

    def rpc(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        """Call the server's RPC method `method` with `params` (any JSON) and return its result.

        Its errors raise as the server words them (`ForbiddenError` for a refusal, `InternalError`
        when the method failed); a connection lost before the answer raises `ConnectionFailed`,
        since the method may have run.
        """
        with self._lock:
            self._check_open()
            command = self._session.rpc(method, params)
            self._flush()
        return self._result(command, timeout, f"rpc {method!r}")["data"]

    def ping(self, timeout: float | None = None) -> None:
        """One round trip through the server."""
        with self._lock:
            self._check_open()
            command = self._session.ping()
            self._flush()
        self._result(command, timeout, "ping")

    def close(self) -> None:
        """Close for good: waiting calls raise ClientClosed, subscriptions stop iterating."""
        self._shut(ClientClosed("the client was closed"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting, and doing the I/O for everyone while waiting -----------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _wait(self, ready: Callable[[], object], deadline: float, what: str) -> None:
        """Return once `ready()` holds, doing the I/O whenever no other thread is doing it."""
        lock = self._lock
        with lock:
            while not ready():
                self._check_open()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(f"{what}: nothing after the timeout")
                if self._reading:
                    self._waiting += 1
                    try:
                        self._changed.wait(None if remaining == math.inf else remaining)
                    finally:
                        self._waiting -= 1
                    continue
                self._reading = True
                lock.release()
                try:
                    ws, texts = self._read(deadline)
                finally:
                    lock.acquire()
                    self._reading = False
                acts = self._receive(ws, texts) if texts else None
                if self._waiting:
                    self._changed.notify_all()
                if acts:
                    lock.release()
                    try:
                        for event in acts:
                            self._act(event, ws)
                    finally:
                        lock.acquire()

    def _read(self, deadline: float) -> tuple[ClientConnection | None, list[str]]:
        """Frames from the socket: one, waiting up to the deadline, and then the ones already
        there (up to 64), so that one pass through the locks serves a whole batch. With no
        socket, make (or wait for) the next connection attempt instead."""
        ws = self._ws
        if ws is None:
            self._attempt(deadline)
            return None, []
        remaining = deadline - time.monotonic()
        texts: list[str] = []
        try:
            texts.append(ws.recv(None if remaining == math.inf else max(remaining, 0.0)))
            while len(texts) < 64:
                texts.append(ws.recv(0))
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            if not texts:  # else the next read raises it again, after these are handled
                self._lost(ws, exc.rcvd, str(exc))
        return ws, texts

    def _receive(self, ws: ClientConnection, texts: list[str]) -> list | None:
        """Feed frames to the session (holding the lock); returns the events to act on."""
        if ws is not self._ws:
            return None  # closed meanwhile
        receive = self._session.receive
        acts = None
        for text in texts:
            event = receive(text)
            if event is not None and type(event) is not Delivered and type(event) in _ACT_ON:
                if acts is None:
                    acts = []
                acts.append(event)
        self._flush()
        return acts

    def _result(self, command: Command, timeout: float | None, what: str) -> Any:
        try:
            self._wait(lambda: command.done, self._deadline(timeout), what)
        except CommandTimeout as exc:
            with self._lock:
                self._session.abandon(command)
            raise CommandTimeout(exc.message, command.key) from None
        if command.error is not None:
            raise command.error
        return command.result

    def _attempt(self, deadline: float) -> None:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            self._interrupt.wait(min(wait, deadline - time.monotonic()))
            return
        try:
            token = self._token() if callable(self._token) else self._token
        except TOKEN_FAILURES_RETRIED as exc:
            self._failed(ConnectionFailed(f"the token callable failed: {exc!r}"), retry=True)
            return
        except Exception as exc:
            # The application's own code failed, not the network: retrying would hide the bug.
            self._shut(exc)
            raise
        try:
            ws = ws_connect(
                connection_url(self.url, token),
                open_timeout=self.open_timeout,
                close_timeout=2,
                compression=None,  # the server never accepts it
                legacy=True,  # a connection this client closes itself, not a `with` block
            )
        except Exception as exc:
            self._failed(*classify(exc))
            return
        with self._lock:
            if not self._closed:
                self._ws = ws
                return
        ws.close()

    def _failed(self, error: SwitchboardError, retry: bool) -> None:
        if not retry:
            self._shut(error)
            return
        with self._lock:
            self._last_failure = error
            delay = self._backoff.next_delay()
            self._retry_at = time.monotonic() + delay
        log.info("connection attempt to %s failed (%s); next in %.2f s", self.url, error, delay)

    def _lost(self, ws: ClientConnection, close: Close | None, reason: str) -> None:
        """The socket ended (`close`: the server's close frame, if one came)."""
        code = close.code if close is not None else None
        with self._lock:
            if ws is not self._ws:
                return
            self._ws = None
            self._session.connection_lost(code)
            delay = self._backoff.after_close(code, close.reason if close is not None else "")
            self._retry_at = time.monotonic() + delay
        log.info("connection to %s lost (%s); reconnecting in %.2f s", self.url, reason, delay)

    def _act(self, event: Welcome | TokenExpiring | Refused | Reconnect, ws: ClientConnection) -> None:
        if type(event) is Welcome:
            self._backoff.reset()
            log.info("connected to %s as %s", self.url, event.user)
        elif type(event) is TokenExpiring:
            if not callable(self._token):
                log.warning("the token expires at %s and cannot be renewed: pass a callable token", event.expires)
                return
            try:
                token = self._token()
            except Exception:
                log.warning("the token callable failed; the server closes at expiry, then we reconnect", exc_info=True)
                return
            with self._lock:
                if ws is self._ws:
                    self._session.refresh(token)
                    self._flush()
        elif type(event) is Refused:
            if not (event.expired and callable(self._token)):
                self._shut(event.error)
            # else: the server closes now, and the next attempt calls the token callable
        else:
            log.info("reconnecting: %s", event.reason)
            self._backoff.revert()
            ws.close()

    # -- state -----------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the session has queued (call holding the lock, so frames go out in order)."""
        frames = self._session.data_to_send()
        if frames and self._ws is not None:
            try:
                for frame in frames:
                    self._ws.send(frame)
            except ConnectionClosed:
                pass  # whoever reads next finds out, and the session sends them again

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("the client was closed")

    def _forget(self, channel: str) -> None:
        """Drop a subscription whose subscribe() was interrupted (a timeout, say)."""
        with self._lock:
            if self._session.channels.get(channel) is not None and not self._closed:
                self._session.unsubscribe(channel)
                self._flush()

    def _shut(self, error: Exception) -> None:
        """Close for good; waiting and later calls raise `error` (unless the caller closed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not isinstance(error, ClientClosed):
                self._fatal = error
                log.error("giving up on %s: %s", self.url, error)
            self._session.close(error)
            ws, self._ws = self._ws, None
            self._interrupt.set()
            self._changed.notify_all()
        if ws is not None:
            ws.close()


_ACT_ON = (Welcome, TokenExpiring, Refused, Reconnect)


class Subscription:
    """A channel's messages, in offset order, each once: iterate, or call `recv(timeout)`.

    Yields Message (and Join/Leave with `presence=True`). Iteration stops when the subscription
    or the client is closed; it raises RecoveryError (unless `on_unrecovered` was given) when a
    resumption could not be proven complete, and can go on afterwards; it raises the error that
    ended the subscription otherwise (the server refusing a re-subscription, say).
    """

    def __init__(self, client: Client, state: Channel, on_unrecovered: Callable[[RecoveryError], None] | None):
        self._client = client
        self._state = state
        self._on_unrecovered = on_unrecovered
        inbox = state.inbox
        self._ready = lambda: inbox or state.state != LIVE

    @property
    def channel(self) -> str:
        return self._state.name

    @property
    def offset(self) -> int | None:
        """The last offset delivered into this subscription."""
        return self._state.offset

    @property
    def epoch(self) -> str | None:
        return self._state.epoch

    def recv(self, timeout: float | None = None) -> Message | Join | Leave:
        """The next item; TimeoutError after `timeout` seconds (None: wait for ever).
        ClientClosed once the subscription or the client is closed."""
        inbox = self._state.inbox
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            if inbox:
                item = inbox.popleft()
                if type(item) is RecoveryError:
                    if self._on_unrecovered is None:
                        raise item
                    self._on_unrecovered(item)
                    continue
                return item
            if self._state.state != LIVE:
                raise self._state.error or ClientClosed(f"unsubscribed from {self._state.name!r}")
            self._client._wait(self._ready, deadline, f"next message on {self._state.name!r}")

    def __iter__(self) -> Iterator[Message | Join | Leave]:
        return self

    def __next__(self) -> Message | Join | Leave:
        inbox = self._state.inbox
        if inbox and type(inbox[0]) is Message:  # the hot path: something is already here
            return inbox.popleft()
        try:
            return self.recv()
        except ClientClosed:
            raise StopIteration from None

    def close(self) -> None:
        """Unsubscribe (the iterator stops); harmless when it has ended already."""
        if self._state.state != LIVE:
            return
        try:
            self._client.unsubscribe(self._state.name)
        except (ClientClosed, NotSubscribedError):
            pass  # closed meanwhile, or refused by the server on the last reconnect

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
