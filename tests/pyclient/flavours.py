"""The two clients under one face, so each test is one user's session run against both.

`sync` is `switchboard_client.connect` itself. `asyncio` is `switchboard_client.asyncio.connect`
running on an event loop of its own (in a thread), every call submitted to it and waited for:
what is tested is the real asyncio client; only the test's side of it blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import switchboard_client
import switchboard_client.asyncio as aio


def run_async(coroutine):
    """`asyncio.run` in a thread of its own: the test process may already run an event loop in
    this one (Playwright's sync API does, for the browser tests)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(120)


class SyncFlavour:
    name = "sync"

    def connect(self, url: str, token: Any = None, **options: Any) -> switchboard_client.Client:
        options.setdefault("min_delay", 0.05)
        return switchboard_client.connect(url, token, **options)

    def close(self) -> None:
        pass


class AsyncioFlavour:
    name = "asyncio"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def connect(self, url: str, token: Any = None, **options: Any) -> BlockingClient:
        options.setdefault("min_delay", 0.05)

        async def start():
            return await aio.connect(url, token, **options)

        return BlockingClient(self, self.run(start()))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class BlockingClient:
    """An asyncio Client, called from a plain thread."""

    def __init__(self, flavour: AsyncioFlavour, client: aio.Client) -> None:
        self._flavour, self.client = flavour, client

    @property
    def user(self) -> str | None:
        return self.client.user

    def subscribe(self, channel: str, since: int | None = None, **options: Any) -> BlockingSubscription:
        async def subscribe():
            return await self.client.subscribe(channel, since, **options)

        return BlockingSubscription(self._flavour, self._flavour.run(subscribe()))

    def __getattr__(self, name: str):
        method = getattr(self.client, name)
        return lambda *args, **kwargs: self._flavour.run(method(*args, **kwargs))

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flavour.run(self.client.close())


class BlockingSubscription:
    def __init__(self, flavour: AsyncioFlavour, subscription: aio.Subscription) -> None:
        self._flavour, self.subscription = flavour, subscription

    @property
    def offset(self) -> int | None:
        return self.subscription.offset

    def recv(self, timeout: float | None = None):
        return self._flavour.run(self.subscription.recv(timeout))

    def __iter__(self) -> BlockingSubscription:
        return self

    def __next__(self):
        try:
            return self._flavour.run(self.subscription.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._flavour.run(self.subscription.close())

    def __enter__(self) -> BlockingSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
