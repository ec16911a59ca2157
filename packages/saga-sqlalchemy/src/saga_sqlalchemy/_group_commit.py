"""Group commit: concurrent writes of many sagas share one transaction (one commit).

Leader/follower, no background task. A writer that finds a free *lane* leads: it collects the
writes queued at that moment (up to ``max_batch``; optionally lingering ``max_wait`` seconds
for more), runs them in one transaction and wakes each writer with its own outcome. A writer
that finds every lane busy queues and waits; when a leader is done, it hands its lane to the
oldest waiting writer, whose batch is everything that queued meanwhile. Batches therefore grow
by themselves with the load, and a lone writer pays no wait at all.

Each writer returns only after the commit that holds its write. A refused write (version
conflict, finished saga, id taken) is that writer's own error and does not touch the others,
and so is a write the database refuses for its own data (the storage's batch function finds
it by splitting the batch, see ``_split``); a transaction that
failed as a whole (connection lost, server gone) is every writer's error. Two writes of one
saga never share a batch: the later one waits for the next, so each sees the other's effect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import anyio
import anyio.lowlevel

from saga_core import SagaError, SagaStorageError, StorageUnavailableError

from ._outcomes import Outcome, Write

ExecuteBatch = Callable[[Sequence[Write]], Awaitable[list[Outcome]]]
ExecuteOne = Callable[[Write], Awaitable[Outcome]]


class _Pending:
    __slots__ = ("error", "finished", "promoted", "saga_id", "taken", "waiter", "write")

    def __init__(self, write: Write) -> None:
        self.write = write
        self.saga_id: UUID = write.saga_id
        # What a queued writer sleeps on (see _sleep); a writer that leads at once has none.
        self.waiter: asyncio.Future[None] | anyio.Event | None = None
        self.error: BaseException | None = None
        self.promoted = False  # handed a lane: this writer leads the next batch
        self.taken = False  # in a batch that is running
        self.finished = False

    def wake(self) -> None:
        """Wake the writer (it was promoted, or its batch is done); idempotent."""
        waiter = self.waiter
        if waiter is None:
            return
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None)
        else:
            waiter.set()


class GroupCommitter:
    """Coalesces concurrent :meth:`submit` calls into shared transactions."""

    def __init__(
        self,
        execute: ExecuteBatch,
        *,
        max_batch: int,
        max_wait: float,
        lanes: int,
        execute_one: ExecuteOne | None = None,
    ) -> None:
        """``execute`` writes a batch in one transaction and returns each write's refusal;
        ``execute_one``, if given, writes a write that runs alone (see :meth:`submit`) without
        the batch's lists, else ``execute`` is called with it."""
        self._execute = execute
        self._execute_one = execute_one
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._lanes = lanes
        self._leaders = 0
        self._queue: deque[_Pending] = deque()
        # The last batch held one write and nobody queued behind it: writes come one at a
        # time, so the next lone writer runs alone (see submit).
        self._lone = False
        # Writes in the batches that are running now.
        self._in_flight = 0
        self.batches = 0
        self.writes = 0
        # Whether the writers run on asyncio (found on the first wait; see _sleep).
        self._asyncio: bool | None = None

    async def submit(self, write: Write) -> None:
        """Write ``write`` in the next shared transaction; return once it is committed.

        Raises the write's own refusal (``SagaConcurrencyError``/``SagaNotFoundError``), or the
        storage error that failed its transaction.
        """
        if self._lone and not self._leaders and not self._queue:
            # Alone: writes come one at a time, no batch is in flight and none is queued. The
            # write is a batch of one that no other writer waits on, so it needs no queue
            # entry, no yield and no shield (cancellation interrupts it like a write without
            # group commit); writers that come meanwhile queue, and the first leads after it.
            self._leaders = 1
            self.batches += 1
            self.writes += 1
            try:
                if self._execute_one is not None:
                    outcome = await self._execute_one(write)
                else:
                    (outcome,) = await self._execute((write,))
            finally:
                self._hand_over()
            if outcome is not None:
                raise outcome
            return
        item = _Pending(write)
        self._queue.append(item)
        if self._leaders < self._lanes:
            self._leaders += 1
            item.promoted = True
        else:
            try:
                await self._sleep(item)
            except BaseException:
                self._abandon(item)
                raise
        if not item.finished:
            await self._lead(item)
        if item.error is not None:
            raise item.error

    async def _sleep(self, item: _Pending) -> None:
        """Wait until ``item`` is woken. On asyncio a bare future is awaited (an anyio Event
        per queued write cost a visible share of a write's Python time: it wraps an asyncio
        Event, which wraps futures); elsewhere an anyio Event. Either way a cancelled task
        stops waiting with the backend's cancellation exception."""
        if self._asyncio is None:
            self._asyncio = _on_asyncio()
        if self._asyncio:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            item.waiter = future
            await future
        else:
            event = anyio.Event()
            item.waiter = event
            await event.wait()

    def _abandon(self, item: _Pending) -> None:
        """A waiting writer was cancelled: drop its write if no batch took it yet, and pass
        its lane on if it had been handed one."""
        if item.taken:
            return  # its batch runs to the end; the outcome is simply not awaited
        self._queue.remove(item)
        if item.promoted:
            self._hand_over()

    async def _lead(self, me: _Pending) -> None:
        # Shielded: the writers in the batch wait for this leader, so it must finish and wake
        # them even if its own caller is cancelled meanwhile (cancellation is delivered after).
        with anyio.CancelScope(shield=True):
            try:
                if self._max_wait > 0 and len(self._queue) < self._max_batch:
                    await anyio.sleep(self._max_wait)
                else:
                    # Let writers that were just woken queue their next write first.
                    await anyio.lowlevel.checkpoint()
                batch = self._take_batch(me)
                await self._run(batch, me)
            finally:
                self._hand_over()
        await anyio.lowlevel.checkpoint_if_cancelled()

    def _take_batch(self, me: _Pending) -> list[_Pending]:
        limit = self._share()
        self._queue.remove(me)
        batch = [me]
        seen = {me.saga_id}
        kept: deque[_Pending] = deque()
        queue = self._queue
        while queue and len(batch) < limit:
            item = queue.popleft()
            if item.saga_id in seen or item.promoted:
                kept.append(item)
                continue
            seen.add(item.saga_id)
            batch.append(item)
        kept.extend(queue)
        self._queue = kept
        self._lone = len(batch) == 1 and not kept
        for item in batch:
            item.taken = True
        return batch

    def _share(self) -> int:
        """How many writes the next batch may take: its lane's share of the writes waiting
        for a commit (queued, or in the running batches), at most ``max_batch``. Taking them
        all would leave the other lanes idle while one large batch runs; with a share each,
        the lanes' batches overlap (one executes while another commits). Measured on
        PostgreSQL, 4 lanes, 3-step sagas: a third more sagas/s at 100 at a time than
        taking all, and no fewer at 1000."""
        waiting = len(self._queue) + self._in_flight
        return min(self._max_batch, -(-waiting // self._lanes))

    async def _run(self, batch: list[_Pending], me: _Pending) -> None:
        self.batches += 1
        self.writes += len(batch)
        self._in_flight += len(batch)
        try:
            outcomes = await self._execute([item.write for item in batch])
        except Exception as exc:
            for item in batch:
                item.error = exc if item is me else shared_failure(exc)
        else:
            for item, outcome in zip(batch, outcomes, strict=True):
                item.error = outcome
        finally:
            self._in_flight -= len(batch)
        for item in batch:
            item.finished = True
            if item is not me:
                item.wake()

    def _hand_over(self) -> None:
        if self._queue:
            self._lone = False
        for item in self._queue:
            if not item.promoted:
                item.promoted = True
                item.wake()
                return
        self._leaders -= 1


def _on_asyncio() -> bool:
    """Whether the calling task runs on asyncio (as anyio itself tells: through sniffio,
    which trio requires; without sniffio anyio runs on asyncio only)."""
    try:
        import sniffio
    except ImportError:
        return True
    return bool(sniffio.current_async_library() == "asyncio")


def shared_failure(exc: Exception) -> SagaError:
    """The error a follower raises when the transaction holding its write failed: its own
    instance (one exception object must not be raised by many tasks), same class."""
    if isinstance(exc, SagaStorageError):
        copy: SagaError = type(exc)(str(exc))
    else:
        copy = StorageUnavailableError(f"the shared transaction holding this write failed: {exc}")
    copy.__cause__ = exc.__cause__ or exc
    return copy
