"""The HTTP API client (`/api/*`), for services that publish without holding a socket, on httpx.

Every call has a timeout and is retried, with backoff and jitter, on what a restart or a proxy
answers: a refused or broken connection, a timeout, HTTP 502, 503 (`unavailable`: Redis is down)
and 504. A publish is safe to retry: it carries an idempotency key (a fresh one unless given), so
one whose response was lost lands once. Errors are the classes the WebSocket clients raise, read
from the `{"code", "message"}` body. Each API call is described once (`_Call`) and run by a sync
and an async client.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from switchboard_client.errors import ConnectionFailed, SwitchboardError, status_error
from switchboard_client.protocol import Backoff, Member, Message

log = logging.getLogger("switchboard_client")

RETRY_STATUSES = frozenset((502, 503, 504))


@dataclass(frozen=True, slots=True)
class History:
    """A channel's held messages after some offset: `offset` is its last, `epoch` its life."""

    channel: str
    epoch: str
    offset: int
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    parse: Callable[[Any], Any]
    body: dict | None = None
    params: dict | None = None


def _path(channel: str, what: str) -> str:
    return f"/api/channels/{quote(channel, safe='')}/{what}"


def _publish(channel: str, data: Any, key: str | None) -> _Call:
    body = {"channel": channel, "data": data, "idempotency_key": key or uuid.uuid4().hex}
    return _Call("POST", "/api/publish", lambda reply: reply["offset"], body)


def _presence(channel: str) -> _Call:
    return _Call(
        "GET", _path(channel, "presence"), lambda reply: [Member(m["user"], m.get("info")) for m in reply["members"]]
    )


def _history(channel: str, since: int, limit: int | None) -> _Call:
    def parse(reply: dict) -> History:
        epoch = reply["epoch"]
        messages = [Message(m["channel"], m["offset"], epoch, m.get("data"), m.get("from")) for m in reply["messages"]]
        return History(reply["channel"], epoch, reply["offset"], messages)

    params = {"since": since} if limit is None else {"since": since, "limit": limit}
    return _Call("GET", _path(channel, "history"), parse, params=params)


def _channels() -> _Call:
    return _Call("GET", "/api/channels", lambda reply: {c["name"]: c["subscribers"] for c in reply["channels"]})


def _token(user: str, info: Any, ttl: float, channels: list[str] | None, publish: list[str] | bool | None) -> _Call:
    body: dict[str, Any] = {"user": user, "info": info, "ttl": ttl}
    if channels is not None:
        body["channels"] = channels
    if publish is not None:
        body["publish"] = publish
    return _Call("POST", "/api/tokens", lambda reply: reply["token"], body)


def _subscription_token(user: str, channel: str, publish: bool, ttl: float) -> _Call:
    body = {"user": user, "channel": channel, "publish": publish, "ttl": ttl}
    return _Call("POST", "/api/tokens", lambda reply: reply["token"], body)


class _Base:
    def __init__(self, url: str, api_key: str | None, retries: int, min_delay: float, max_delay: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP URL (http://host:port): {url!r}")
        self.url = url.rstrip("/")
        self.retries = retries
        self._delays = (min_delay, max_delay)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _result(self, call: _Call, response: httpx.Response) -> Any:
        """The call's result, or its error raised (wrapped in _Retry when another try may pass)."""
        if response.status_code < 400:
            return call.parse(response.json())
        error = status_error(response.status_code, response.content)
        raise _Retry(error) if response.status_code in RETRY_STATUSES else error

    def _transport_failed(self, call: _Call, exc: Exception) -> _Retry:
        return _Retry(ConnectionFailed(f"{call.method} {self.url}{call.path}: {exc!r}"))


class _Retry(Exception):
    def __init__(self, error: SwitchboardError) -> None:
        self.error = error


def _give_up(error: SwitchboardError, attempts: int) -> SwitchboardError:
    if attempts > 1:
        error.message += f" (after {attempts} attempts)"
    return error


class HTTPClient(_Base):
    """`HTTPClient("http://127.0.0.1:8000", api_key)`: the HTTP API, with timeouts and retries.

    `timeout` (10 s) bounds each attempt; `retries` (3) more attempts follow a retryable failure,
    `min_delay`..`max_delay` (0.2..2 s) apart with jitter.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        min_delay: float = 0.2,
        max_delay: float = 2.0,
    ) -> None:
        super().__init__(url, api_key, retries, min_delay, max_delay)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> int:
        """Publish `data` to `channel`; returns its offset. Retries land once (idempotency key)."""
        return self._run(_publish(channel, data, idempotency_key))

    def presence(self, channel: str) -> list[Member]:
        return self._run(_presence(channel))

    def history(self, channel: str, since: int = 0, limit: int | None = None) -> History:
        """The held messages after offset `since` (oldest first), at most `limit` of them."""
        return self._run(_history(channel, since, limit))

    def channels(self) -> dict[str, int]:
        """Channels with subscribers, across every worker: name -> subscriber count."""
        return self._run(_channels())

    def token(
        self,
        user: str,
        *,
        info: Any = None,
        ttl: float = 3600,
        channels: list[str] | None = None,
        publish: list[str] | bool | None = None,
    ) -> str:
        """A connection token for `user`; `channels`/`publish` are the grants (docs/security.md)."""
        return self._run(_token(user, info, ttl, channels, publish))

    def subscription_token(self, user: str, channel: str, *, publish: bool = False, ttl: float = 3600) -> str:
        """A token that lets `user` subscribe to one protected channel."""
        return self._run(_subscription_token(user, channel, publish, ttl))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call) -> Any:
        backoff = Backoff(*self._delays)
        for attempt in range(1, self.retries + 2):
            try:
                try:
                    response = self._http.request(call.method, call.path, json=call.body, params=call.params)
                except httpx.TransportError as exc:
                    raise self._transport_failed(call, exc) from exc
                return self._result(call, response)
            except _Retry as failed:
                if attempt > self.retries:
                    raise _give_up(failed.error, attempt) from None
                delay = backoff.next_delay()
                log.info("%s %s failed (%s); retrying in %.2f s", call.method, call.path, failed.error, delay)
                time.sleep(delay)


class AsyncHTTPClient(_Base):
    """The same API for asyncio: every method is a coroutine. Options as for HTTPClient."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        min_delay: float = 0.2,
        max_delay: float = 2.0,
    ) -> None:
        super().__init__(url, api_key, retries, min_delay, max_delay)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout)

    async def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> int:
        return await self._run(_publish(channel, data, idempotency_key))

    async def presence(self, channel: str) -> list[Member]:
        return await self._run(_presence(channel))

    async def history(self, channel: str, since: int = 0, limit: int | None = None) -> History:
        return await self._run(_history(channel, since, limit))

    async def channels(self) -> dict[str, int]:
        return await self._run(_channels())

    async def token(
        self,
        user: str,
        *,
        info: Any = None,
        ttl: float = 3600,
        channels: list[str] | None = None,
        publish: list[str] | bool | None = None,
    ) -> str:
        return await self._run(_token(user, info, ttl, channels, publish))

    async def subscription_token(self, user: str, channel: str, *, publish: bool = False, ttl: float = 3600) -> str:
        return await self._run(_subscription_token(user, channel, publish, ttl))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: _Call) -> Any:
        backoff = Backoff(*self._delays)
        for attempt in range(1, self.retries + 2):
            try:
                try:
                    response = await self._http.request(call.method, call.path, json=call.body, params=call.params)
                except httpx.TransportError as exc:
                    raise self._transport_failed(call, exc) from exc
                return self._result(call, response)
            except _Retry as failed:
                if attempt > self.retries:
                    raise _give_up(failed.error, attempt) from None
                delay = backoff.next_delay()
                log.info("%s %s failed (%s); retrying in %.2f s", call.method, call.path, failed.error, delay)
                await asyncio.sleep(delay)
