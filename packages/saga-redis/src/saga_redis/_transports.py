"""How commands reach Redis: a coredis client (storages opened from a URL, or a coredis client
given to the storage), a redis-py asyncio client awaited directly, or a synchronous redis-py
client in worker threads (``anyio.to_thread``), so that a storage given one also runs on trio.

A transport only sends; :func:`saga_redis._lua.run_script` decides what to send, and the
storage's request path (:mod:`._request`) what an exception means for a saga.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
import coredis
import redis
import redis.asyncio

from saga_core import SagaUsageError

AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster
CoredisClient = coredis.Redis[bytes] | coredis.RedisCluster[bytes]
T = TypeVar("T")


def asyncio_is_running() -> bool:
    """Whether the calling code runs in an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class CoredisTransport:
    """A coredis client (one server, a cluster, or a Sentinel's primary): native on asyncio
    and trio. coredis routes each script to the node that holds its keys and follows the
    cluster's redirections itself.

    An owned client (built from a URL) is opened by :meth:`open` and closed by
    :meth:`aclose`, both in the task that enters the storage; a client the storage was given
    is the caller's to open and close.
    """

    __slots__ = ("_client", "_contexts", "_owned", "_stack")

    def __init__(self, client: CoredisClient, contexts: Sequence[Any] = ()) -> None:
        self._client = client
        self._owned = bool(contexts)
        self._contexts = tuple(contexts)
        self._stack: AsyncExitStack | None = None

    async def open(self) -> None:
        """Open an owned client (its connections live until :meth:`aclose`); nothing to do
        for a client the storage was given."""
        if not self._owned or self._stack is not None:
            return
        stack = AsyncExitStack()
        try:
            for context in self._contexts:
                await stack.enter_async_context(context)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    def _check_opened(self) -> None:
        if self._owned and self._stack is None:
            raise SagaUsageError(
                "a Redis storage opened from a URL is used inside 'async with': write "
                "'async with open_storage(url) as storage:' (its connections live in that "
                "block, which also closes them)"
            )

    async def evalsha(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        self._check_opened()
        return await self._client.evalsha(sha, keys, argv)

    async def script_load(self, source: str) -> None:
        self._check_opened()
        await self._client.script_load(source)

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


def _asyncio_client_on_other_loop() -> SagaUsageError:
    return SagaUsageError(
        "RedisSagaStorage was given a redis.asyncio client, which only runs on asyncio, but "
        "it is used outside an asyncio event loop (on trio?). On trio, pass a synchronous "
        "redis.Redis client (the storage drives it through worker threads), or open the "
        "storage with open_storage('redis://...'), which picks the right client itself"
    )


class AsyncioTransport:
    """Awaits a ``redis.asyncio`` client; refuses to run outside asyncio instead of hanging.

    A command that fails on a pooled connection the server dropped (restart, idle timeout) is
    sent once more on a fresh one: writes carry a token, so a write that did land is not
    applied twice.
    """

    __slots__ = ("_client", "_owned")

    def __init__(self, client: AsyncClient, *, owned: bool) -> None:
        self._client = client
        self._owned = owned

    async def open(self) -> None:
        """Nothing: the client is the caller's."""

    async def evalsha(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        if not asyncio_is_running():
            raise _asyncio_client_on_other_loop()
        try:
            return await self._client.evalsha(sha, len(keys), *keys, *argv)
        except redis.ConnectionError:
            return await self._client.evalsha(sha, len(keys), *keys, *argv)

    async def script_load(self, source: str) -> None:
        if not asyncio_is_running():
            raise _asyncio_client_on_other_loop()
        try:
            await self._client.script_load(source)
        except redis.ConnectionError:
            await self._client.script_load(source)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


class ThreadTransport:
    """Runs a synchronous client in anyio's worker threads, on asyncio or trio.

    The client's connection pool is thread-safe; each concurrent call borrows a connection.
    A cancelled call waits for its thread, so a write is never left half-known to the caller
    because of cancellation alone. A dropped connection is retried once, as
    :class:`AsyncioTransport` does.
    """

    __slots__ = ("_client", "_owned")

    def __init__(self, client: SyncClient, *, owned: bool) -> None:
        self._client = client
        self._owned = owned

    async def open(self) -> None:
        """Nothing: the client is the caller's."""

    async def evalsha(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        return await anyio.to_thread.run_sync(
            partial(_twice, partial(self._client.evalsha, sha, len(keys), *keys, *argv))
        )

    async def script_load(self, source: str) -> None:
        await anyio.to_thread.run_sync(partial(_twice, partial(self._client.script_load, source)))

    async def aclose(self) -> None:
        if self._owned:
            self._client.close()


def _twice(call: Callable[[], T]) -> T:
    """``call()``, once more if the first try lost its connection."""
    try:
        return call()
    except redis.ConnectionError:
        return call()
