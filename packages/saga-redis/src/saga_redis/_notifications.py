"""Work notifications over Redis pub/sub: the scripts that make a saga due publish to the key
prefix's work channel, and :func:`work_notifications` listens to it for a worker.

Why plain ``PUBLISH``/``SUBSCRIBE`` on one channel per prefix, not sharded pub/sub
(``SPUBLISH``/``SSUBSCRIBE``): it works on every deployment this package supports (one server,
Sentinel, Cluster) and every Redis version, and a listener needs one connection to any node.
On a cluster a ``PUBLISH`` is broadcast to every node over the cluster bus, which costs each
node a little per message; messages are sent only when work becomes due from outside its
runner (a detached start, a signal a saga waits for, a cancel), never by a checkpoint, so
that traffic stays small. Sharded pub/sub would keep each message on its slot's node, but a
listener would then hold one connection per primary, follow each slot as it migrates, and
need Redis 7.

A notification is a hint (see :class:`saga_core.storage.WorkNotifications`): the listener
reconnects by itself after a lost connection (Redis restarted, a Sentinel or Cluster failover)
and, once subscribed again, yields once, since what was published meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import anyio
from anyio.abc import TaskStatus

from saga_core import SagaError, StorageUnavailableError

from ._lua import Transport
from ._replies import transport_error
from ._request import RequestPath

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on there
    from exceptiongroup import BaseExceptionGroup

#: Seconds a listener keeps trying to subscribe again after losing its connection before it
#: gives up (its iterator then raises StorageUnavailableError; a worker listens again later
#: and polls meanwhile). Longer than a Sentinel failover or a cluster node's replacement.
RECONNECT_SECONDS = 30.0
# Pauses between attempts to subscribe again: growing from the first to the last.
_FIRST_PAUSE = 0.05
_LAST_PAUSE = 1.0


class Notifications:
    """The iterator a listener yields: once per notification (those that arrive together
    are yielded once), until the listener gives up reconnecting.

    Raises (from ``__anext__``): :class:`~saga_core.StorageUnavailableError` once the listener
    could not subscribe again for :data:`RECONNECT_SECONDS`.
    """

    __slots__ = ("_receive", "error")

    def __init__(self, receive: anyio.abc.ObjectReceiveStream[None]) -> None:
        self._receive = receive
        #: Why the listener gave up, once it has.
        self.error: SagaError | None = None

    def __aiter__(self) -> Notifications:
        return self

    async def __anext__(self) -> None:
        try:
            await self._receive.receive()
        except anyio.EndOfStream:
            assert self.error is not None, "the listener stops only when it gives up"
            raise self.error from self.error.__cause__
        return None


class _Listener:
    """Keeps one subscription to the work channel alive and hands its messages over."""

    def __init__(self, transport: Transport, channel: str, key_prefix: str) -> None:
        self._transport = transport
        self._channel = channel
        self._key_prefix = key_prefix
        # Room for one: a notification already waiting says all a listener needs to know.
        self._send, receive = anyio.create_memory_object_stream[None](1)
        self.notifications = Notifications(receive)

    def _notify(self) -> None:
        with contextlib.suppress(anyio.WouldBlock):
            self._send.send_nowait(None)

    async def run(self, *, task_status: TaskStatus[SagaError | None]) -> None:
        """Subscribe, then listen until cancelled; after a lost connection subscribe again,
        with growing pauses, for up to :data:`RECONNECT_SECONDS`. Starts with ``None`` once
        subscribed, or with the error when the first subscription fails (then returns)."""
        started = False
        failing_since: float | None = None
        pause = _FIRST_PAUSE

        def subscribed() -> None:
            nonlocal started, failing_since, pause
            failing_since, pause = None, _FIRST_PAUSE
            if started:
                self._notify()  # back after a gap: what was published meanwhile is lost
            else:
                started = True
                task_status.started(None)

        with self._send:
            while True:
                try:
                    await self._transport.listen(self._channel, subscribed, self._notify)
                except Exception as exc:  # the connection's failure, whatever the client
                    error = self._error(exc)
                else:  # pragma: no cover - a transport's listen only returns by raising
                    error = StorageUnavailableError("the Redis subscription ended")
                if not started:
                    task_status.started(error)
                    return
                now = anyio.current_time()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since >= RECONNECT_SECONDS:
                    self.notifications.error = error
                    return
                await anyio.sleep(pause)
                pause = min(pause * 2, _LAST_PAUSE)

    def _error(self, exc: Exception) -> SagaError:
        """The core's error for a failed subscription, its cause chained."""
        leaf = _single(exc)
        if isinstance(leaf, SagaError):
            return leaf
        assert isinstance(leaf, Exception), "only exceptions reach here"
        error = transport_error(leaf, self._key_prefix, self._transport.where)
        error.__cause__ = leaf
        return error


@contextlib.asynccontextmanager
async def work_notifications(
    path: RequestPath, channel: str, key_prefix: str
) -> AsyncIterator[Notifications]:
    """Listen to ``channel`` on a connection of its own for the block (see the module).

    Raises (on entering): StorageUnavailableError when the storage is closed or Redis cannot
    be reached; SagaUsageError for a storage from a URL used outside its ``async with``
    block, or a ``redis.asyncio`` client outside asyncio.
    """
    path.check_open()
    listener = _Listener(path.transport, channel, key_prefix)
    error: SagaError | None = None
    try:
        async with anyio.create_task_group() as task_group:
            error = await task_group.start(listener.run)
            if error is None:
                try:
                    yield listener.notifications
                finally:
                    task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The block's own exception, as it was raised, not wrapped by the task group.
        leaf = _single(group)
        if leaf is group or not isinstance(leaf, Exception):
            raise
        raise leaf from leaf.__cause__
    if error is not None:
        raise error from error.__cause__


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested exception groups of one member each, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
