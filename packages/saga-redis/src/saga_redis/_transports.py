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
import coredis.exceptions
import redis
import redis.asyncio
from coredis.retry import ExponentialBackoffRetryPolicy, NoRetryPolicy

from saga_core import SagaUsageError

#: Seconds a subscription waits for the server to confirm it.
SUBSCRIBE_TIMEOUT = 5.0
#: Seconds a synchronous client's listening thread waits for a message before it lets a
#: cancel through (the longest a listener on such a client takes to stop).
THREAD_LISTEN_SECONDS = 0.25

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

    With ``failover_seconds`` (Sentinel and Cluster deployments), a script that meets a
    failover — the connection lost, the old primary refusing writes (``READONLY``,
    ``NOREPLICAS``), the cluster down or resharding — is sent again, with growing pauses, for
    that long; after a refusal the client's connections are dropped, so that the next ones
    go to the primary the sentinels (or the cluster) name now. Sending a write again is safe:
    it carries its write token. When the time is up the last error is raised.

    With ``replica_ack`` (Sentinel), a script's reply counts only once a replica has its
    effect too (``WAIT 1``, pipelined after the script on the same connection): replication is
    asynchronous, and a write only the old primary had is lost when a replica is promoted.
    Without that acknowledgement the script is sent again (its token makes it apply once).

    ``where`` names the deployment in error messages (a URL's parts without credentials).
    """

    __slots__ = ("_client", "_contexts", "_replica_ack", "_retry", "_stack", "where")

    def __init__(
        self,
        client: CoredisClient,
        contexts: Sequence[Any] = (),
        *,
        failover_seconds: float | None = None,
        replica_ack: bool = False,
        where: str | None = None,
    ) -> None:
        self._client = client
        self.where = where
        self._replica_ack = replica_ack
        self._contexts = tuple(contexts)
        self._stack: AsyncExitStack | None = None
        self._retry: ExponentialBackoffRetryPolicy | None = (
            None
            if failover_seconds is None
            else ExponentialBackoffRetryPolicy(
                _FAILOVER_ERRORS,
                retries=None,
                deadline=failover_seconds,
                base_delay=0.05,
                max_delay=1.0,
            )
        )

    async def open(self) -> None:
        """Open an owned client (its connections live until :meth:`aclose`); nothing to do
        for a client the storage was given."""
        if not self._contexts or self._stack is not None:
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
        if self._contexts and self._stack is None:
            raise SagaUsageError(
                "a Redis storage opened from a URL is used inside 'async with': write "
                "'async with open_storage(url) as storage:' (its connections live in that "
                "block, which also closes them)"
            )

    async def evalsha(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        self._check_opened()
        if self._retry is None:
            return await self._client.evalsha(sha, keys, argv)
        return await self._retry.call_with_retries(
            partial(self._evalsha_once, sha, keys, argv), failure_hook=self._after_failure
        )

    async def _evalsha_once(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        try:
            if not self._replica_ack:
                return await self._client.evalsha(sha, keys, argv)
            # Errors stay with their command (raised when its reply is awaited), as the
            # server sent them.
            async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
                reply = pipe.evalsha(sha, keys, argv)
                acknowledged = pipe.wait(1, REPLICA_ACK_MS)
            result = await reply
            if await acknowledged < 1:
                raise NotReplicatedError(
                    f"no replica acknowledged the write within {REPLICA_ACK_MS} ms"
                )
            return result
        except coredis.exceptions.ResponseError as exc:
            if str(exc).startswith("NOREPLICAS"):
                raise NoReplicasError(str(exc)) from exc
            raise

    def _after_failure(self, exc: BaseException) -> None:
        if isinstance(exc, (coredis.exceptions.ReadOnlyError, NoReplicasError, NotReplicatedError)):
            # This node is no longer (or not yet) the primary: the next connections ask.
            self._client.connection_pool.disconnect()

    async def script_load(self, source: str) -> None:
        self._check_opened()
        await self._client.script_load(source)

    async def listen(
        self, channel: str, on_subscribed: Callable[[], None], on_message: Callable[[], None]
    ) -> None:
        self._check_opened()
        # A connection of its own, from the client's pool: on a cluster any node (PUBLISH
        # reaches them all), behind Sentinel the current primary. No retry policy: a lost
        # connection ends the subscription, and the caller reconnects and says so (coredis's
        # own reconnection would resubscribe silently, hiding what was published meanwhile).
        async with self._client.pubsub(
            channels=[channel],
            ignore_subscribe_messages=True,
            retry_policy=NoRetryPolicy(),
            subscription_timeout=SUBSCRIBE_TIMEOUT,
        ) as pubsub:
            on_subscribed()
            async for _ in pubsub:
                on_message()
        raise coredis.exceptions.ConnectionError(f"the subscription to {channel} ended")

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


class NoReplicasError(coredis.exceptions.ResponseError):
    """A primary refused a write for want of the replicas ``min-replicas-to-write`` asks for
    (coredis has no class of its own for this reply)."""


class NotReplicatedError(coredis.exceptions.ConnectionError):
    """No replica acknowledged a write in time: it may be lost if a replica is promoted now
    (a kind of lost connection to the replicas: retried, then unavailable)."""


#: How long a write on a Sentinel deployment waits for a replica's acknowledgement.
REPLICA_ACK_MS = 1000

# What a failover or a slot migration looks like to a client, while it lasts. A cluster
# client follows MOVED, ASK and TRYAGAIN itself, but only for a fraction of a second: then it
# gives up with ClusterError, while the slot it wants may be mid-migration for much longer
# (every script of a shard is refused with TRYAGAIN until its slot has moved).
_FAILOVER_ERRORS: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ReadOnlyError,
    coredis.exceptions.ClusterDownError,
    coredis.exceptions.TryAgainError,
    coredis.exceptions.ClusterError,
    coredis.exceptions.PrimaryNotFoundError,
    NoReplicasError,
    NotReplicatedError,
)


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
    #: The client's own errors name the address it tried.
    where: str | None = None

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

    async def listen(
        self, channel: str, on_subscribed: Callable[[], None], on_message: Callable[[], None]
    ) -> None:
        if not asyncio_is_running():
            raise _asyncio_client_on_other_loop()
        pubsub = self._client.pubsub()
        try:
            with anyio.fail_after(SUBSCRIBE_TIMEOUT):
                await pubsub.subscribe(channel)
                while not _confirms(await pubsub.get_message(timeout=None)):
                    pass
            on_subscribed()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None:
                    on_message()
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py

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
    #: The client's own errors name the address it tried.
    where: str | None = None

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

    async def listen(
        self, channel: str, on_subscribed: Callable[[], None], on_message: Callable[[], None]
    ) -> None:
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]  # untyped in redis-py
        try:
            await anyio.to_thread.run_sync(pubsub.subscribe, channel)
            with anyio.fail_after(SUBSCRIBE_TIMEOUT):
                while not _confirms(
                    await anyio.to_thread.run_sync(pubsub.get_message, False, THREAD_LISTEN_SECONDS)
                ):
                    pass
            on_subscribed()
            while True:
                # A bounded wait per thread call, so that a cancel gets through soon.
                message = await anyio.to_thread.run_sync(
                    pubsub.get_message, True, THREAD_LISTEN_SECONDS
                )
                if message is not None:
                    on_message()
        finally:
            pubsub.close()  # no thread uses it any more: a thread call is never abandoned

    async def aclose(self) -> None:
        if self._owned:
            self._client.close()


def _confirms(message: Any) -> bool:
    """Whether a redis-py pub/sub message is the server's confirmation of a subscription."""
    return isinstance(message, dict) and message.get("type") in ("subscribe", b"subscribe")


def _twice(call: Callable[[], T]) -> T:
    """``call()``, once more if the first try lost its connection."""
    try:
        return call()
    except redis.ConnectionError:
        return call()
