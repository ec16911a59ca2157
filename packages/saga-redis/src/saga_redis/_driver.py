"""How scripts reach Redis: the package's own connection pool (storages opened from a URL), a
redis-py asyncio client awaited directly, or a synchronous redis-py client in worker threads
(``anyio.to_thread``), so that a storage given a client also runs on trio.

A driver only runs scripts; it does not translate errors (the storage does, so that one place
decides what a driver exception means for a saga).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import anyio.to_thread
import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script

from saga_core import SagaUsageError

from ._resp import RespPool, ServerReplyError, asyncio_is_running, pack, pack_command
from ._scripts import CHECKPOINT, CLAIM, CREATE, LIST, PARK, READ, RENEW, SCAN, UNPARK

#: The scripts every driver registers, in the order of the indexes below.
_SOURCES = (CREATE, CHECKPOINT, CLAIM, SCAN, READ, RENEW, PARK, UNPARK, LIST)
(
    CREATE_SCRIPT,
    CHECKPOINT_SCRIPT,
    CLAIM_SCRIPT,
    SCAN_SCRIPT,
    READ_SCRIPT,
    RENEW_SCRIPT,
    PARK_SCRIPT,
    UNPARK_SCRIPT,
    LIST_SCRIPT,
) = range(len(_SOURCES))

# Framed keys and leading arguments kept: those of the sagas in flight.
_FRAMED_KEPT = 1024
AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster
Arg = str | int


class Driver(Protocol):
    """Runs the storage's scripts on some Redis client."""

    async def run(
        self, script: int, keys: Sequence[str], args: Sequence[Arg], lead: Sequence[str] = ()
    ) -> Any:
        """Run script number ``script`` (see the module's constants) with ``keys`` and the
        arguments ``lead`` followed by ``args``, and return its reply.

        ``lead`` is for arguments a caller passes again and again with the same ``keys`` (a
        saga's own, in its writes): a driver may keep them encoded."""
        ...

    async def aclose(self) -> None:
        """Release what the driver opened itself. Idempotent."""
        ...


def _asyncio_client_on_other_loop() -> SagaUsageError:
    return SagaUsageError(
        "RedisSagaStorage was given a redis.asyncio client, which only runs on asyncio, but "
        "it is used outside an asyncio event loop (on trio?). On trio, pass a synchronous "
        "redis.Redis client (the storage drives it through worker threads), or open the "
        "storage with open_storage('redis://...'), which picks the right client itself"
    )


class AsyncioDriver:
    """Awaits a ``redis.asyncio`` client; refuses to run outside asyncio instead of hanging."""

    __slots__ = ("_client", "_owned", "_scripts")

    def __init__(self, client: AsyncClient, *, owned: bool) -> None:
        self._client = client
        self._owned = owned
        self._scripts: tuple[AsyncScript, ...] = tuple(
            client.register_script(source) for source in _SOURCES
        )

    async def run(
        self, script: int, keys: Sequence[str], args: Sequence[Arg], lead: Sequence[str] = ()
    ) -> Any:
        if not asyncio_is_running():
            raise _asyncio_client_on_other_loop()
        if lead:
            args = (*lead, *args)
        # The client's script object runs EVALSHA and loads the script on NOSCRIPT (after a
        # server restart or SCRIPT FLUSH), then runs it again.
        call = self._scripts[script]
        try:
            return await call(keys, args)
        except redis.ConnectionError:
            # A pooled connection the server dropped (restart, idle timeout): one more try on
            # a fresh one. Writes carry a token, so a write that did land is not applied twice.
            return await call(keys, args)

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


class ThreadDriver:
    """Runs a synchronous client in anyio's worker threads, on asyncio or trio.

    The client's connection pool is thread-safe; each concurrent call borrows a connection.
    A cancelled call waits for its thread, so a write is never left half-known to the caller
    because of cancellation alone.
    """

    __slots__ = ("_client", "_owned", "_scripts")

    def __init__(self, client: SyncClient, *, owned: bool) -> None:
        self._client = client
        self._owned = owned
        self._scripts: tuple[Script, ...] = tuple(
            client.register_script(source) for source in _SOURCES
        )

    async def run(
        self, script: int, keys: Sequence[str], args: Sequence[Arg], lead: Sequence[str] = ()
    ) -> Any:
        if lead:
            args = (*lead, *args)
        return await anyio.to_thread.run_sync(
            partial(self._call, self._scripts[script], keys, args)
        )

    @staticmethod
    def _call(script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return script(keys, args)
        except redis.ConnectionError:
            return script(keys, args)  # once more, as AsyncioDriver.run does

    async def aclose(self) -> None:
        if self._owned:
            self._client.close()


class RespDriver:
    """Runs the scripts over the package's own anyio connection pool (:mod:`._resp`): native
    on asyncio and trio, and the fastest path on both. Scripts are sent by SHA1 and loaded on
    ``NOSCRIPT`` (a restarted or flushed server), then sent again."""

    __slots__ = ("_framed", "_heads", "_loads", "_pool")

    def __init__(self, pool: RespPool) -> None:
        self._pool = pool
        shas = [hashlib.sha1(source.encode()).hexdigest() for source in _SOURCES]
        # "EVALSHA <sha1>" encoded once per script; the keys and arguments follow per call.
        self._heads = tuple(pack(("EVALSHA", sha)).split(b"\r\n", 1)[1] for sha in shas)
        self._loads = tuple(pack(("SCRIPT", "LOAD", source)) for source in _SOURCES)
        # The key count, keys and leading arguments, framed, by id() of the keys: the storage
        # passes the same tuples of a saga's keys and leading arguments to each of its writes.
        # An entry holds both, so no other object can take their id() meanwhile.
        self._framed: dict[int, tuple[Sequence[str], Sequence[str], bytes]] = {}

    async def run(
        self, script: int, keys: Sequence[str], args: Sequence[Arg], lead: Sequence[str] = ()
    ) -> Any:
        framed = self._framed.get(id(keys))
        if framed is None or framed[0] is not keys or framed[1] is not lead:
            framed = self._frame(keys, lead)
        command = pack_command(self._heads[script] + framed[2], 3 + len(keys) + len(lead), args)
        reply = await self._pool.execute(command)
        if isinstance(reply, ServerReplyError) and str(reply).startswith("NOSCRIPT"):
            loaded = await self._pool.execute(self._loads[script])
            if isinstance(loaded, ServerReplyError):
                raise loaded
            reply = await self._pool.execute(command)
        if isinstance(reply, ServerReplyError):
            raise reply
        return reply

    def _frame(
        self, keys: Sequence[str], lead: Sequence[str]
    ) -> tuple[Sequence[str], Sequence[str], bytes]:
        framed = (keys, lead, pack((str(len(keys)), *keys, *lead)).split(b"\r\n", 1)[1])
        if type(keys) is tuple and type(lead) is tuple:  # kept only if they cannot change
            cache = self._framed
            if len(cache) >= _FRAMED_KEPT:
                cache.clear()
            cache[id(keys)] = framed
        return framed

    async def aclose(self) -> None:
        await self._pool.aclose()
