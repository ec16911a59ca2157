"""How commands reach Redis: the package's own connection pool (storages opened from a URL), a
redis-py asyncio client awaited directly, or a synchronous redis-py client in worker threads
(``anyio.to_thread``), so that a storage given a client also runs on trio.

A transport only sends; :func:`saga_redis._lua.run_script` decides what to send, and the
storage's request path (:mod:`._request`) what an exception means for a saga.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
import redis
import redis.asyncio

from saga_core import SagaUsageError

from ._resp import RespPool, ServerReplyError, asyncio_is_running, pack, pack_command

AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster
T = TypeVar("T")
# Encoded command heads the RESP transport keeps (about 300 bytes each).
_HEADS_KEPT = 1024


class RespTransport:
    """The package's own anyio connection pool (:mod:`._resp`): native on asyncio and trio,
    and the fastest path on both."""

    __slots__ = ("_heads", "_pool")

    def __init__(self, pool: RespPool) -> None:
        self._pool = pool
        # "EVALSHA <sha1> <key count> <keys...>" encoded, by script and keys: a saga's writes
        # pass the same keys again and again. Bounded: the sagas in flight.
        self._heads: dict[tuple[str, tuple[str, ...]], bytes] = {}

    async def evalsha(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        head = self._heads.get((sha, keys))
        if head is None:
            head = pack(("EVALSHA", sha, str(len(keys)), *keys)).split(b"\r\n", 1)[1]
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[sha, keys] = head
        reply = await self._pool.execute(pack_command(head, 3 + len(keys), argv))
        if isinstance(reply, ServerReplyError):
            raise reply
        return reply

    async def script_load(self, source: str) -> None:
        reply = await self._pool.execute(pack(("SCRIPT", "LOAD", source)))
        if isinstance(reply, ServerReplyError):
            raise reply

    async def aclose(self) -> None:
        await self._pool.aclose()


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
