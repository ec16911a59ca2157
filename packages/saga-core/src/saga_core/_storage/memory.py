"""In-memory saga storage: the storage protocol kept in one process, for tests and embedding.

It keeps every rule of :mod:`saga_core.storage` exactly as a durable storage does (versions,
compare-and-set, terminal immutability, leases, journal order), so a saga behaves the same on it
as on SQL or Redis; it only forgets everything when the process ends.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from heapq import nsmallest
from operator import attrgetter, methodcaller
from types import TracebackType
from typing import Any
from uuid import UUID

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from saga_core._model.errors import (
    SagaAlreadyExistsError,
    SagaCancelledError,
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaNotFoundError,
    SagaParkedError,
    SagaSignalPendingError,
    SagaSignalRefusedError,
    SagaUsageError,
    SagaVersionConflictError,
    StorageUnavailableError,
)
from saga_core._model.status import SagaStatus
from saga_core._model.validators import (
    check_new_saga,
    check_wake_at,
    require_lease_owner_filter,
    require_saga_id,
)

from .protocol import (
    INITIAL_VERSION,
    Checkpoint,
    JournalEntry,
    NewSaga,
    NewSignal,
    PendingSignal,
    SagaRecord,
)

_OPTIONS = frozenset({"retain_finished", "clock"})

# Concurrency: every critical section below is a plain (synchronous) method, and the async
# protocol methods only call it. A coroutine cannot be suspended inside a function that has
# no await, so each operation is atomic on its event loop without a lock, and the structure
# keeps it so: an await added later can only go into the async wrapper, outside the critical
# section. The storage belongs to one event loop; it is not thread-safe.


class _StoredSaga:
    """One saga's state. Timestamps stay clock floats until a read turns them into datetimes,
    so a checkpoint does no datetime work."""

    __slots__ = (
        "applied",
        "attempts",
        "cancel_reason",
        "context",
        "created",
        "cursor",
        "deadline_at",
        "delivered",
        "error",
        "journal",
        "lease_expires",
        "lease_owner",
        "next_step",
        "parent_id",
        "parked",
        "saga_id",
        "saga_name",
        "saga_version",
        "signals",
        "status",
        "updated",
        "version",
        "waiting_for",
        "wake",
    )

    def __init__(self, saga: NewSaga, now: float) -> None:
        self.saga_id = saga.saga_id
        self.saga_name = saga.saga_name
        self.saga_version = saga.saga_version
        self.status = saga.status
        self.version = INITIAL_VERSION
        self.cursor = 0
        self.next_step: str | None = saga.next_step
        self.applied: tuple[str, ...] = ()
        self.context = saga.context
        self.error: str | None = None
        self.created = now
        self.updated = now
        waiting = saga.status is SagaStatus.WAITING
        self.lease_owner: str | None = None if waiting else saga.lease_owner
        self.lease_expires: float | None = (
            None if waiting or saga.lease_seconds is None else now + saga.lease_seconds
        )
        journal = saga.journal
        self.journal: list[JournalEntry] = list(journal) if journal else []
        self.attempts = 0
        self.parked = False
        self.wake: float | None = (
            None if not waiting or saga.wake_at is None else saga.wake_at.timestamp()
        )
        self.waiting_for: str | None = None
        deadline_at = saga.deadline_at
        # Read back in UTC like every other instant, whatever zone the caller gave it in.
        self.deadline_at = None if deadline_at is None else deadline_at.astimezone(timezone.utc)
        self.cancel_reason: str | None = None
        self.parent_id = saga.parent_id
        self.signals: list[PendingSignal] = []
        # Every signal id delivered to the saga, pending or consumed: a retried delivery of a
        # consumed signal is still a duplicate.
        self.delivered: set[str] = set()

    def due_key(self) -> float:
        """When the saga became due for a worker: its wake time if WAITING, else its last
        update."""
        wake = self.wake
        return wake if wake is not None and self.status is SagaStatus.WAITING else self.updated

    def is_due(self, now: float) -> bool:
        """True when a WAITING saga is due (see the rules); any other status always is."""
        if self.status is not SagaStatus.WAITING:
            return True
        wake = self.wake
        return wake is not None and wake <= now

    def to_record(self) -> SagaRecord:
        expires = self.lease_expires
        utc = timezone.utc
        return SagaRecord(
            saga_id=self.saga_id,
            saga_name=self.saga_name,
            status=self.status,
            version=self.version,
            cursor=self.cursor,
            applied=self.applied,
            context=self.context,
            error=self.error,
            created_at=datetime.fromtimestamp(self.created, utc),
            updated_at=datetime.fromtimestamp(self.updated, utc),
            lease_owner=self.lease_owner,
            lease_expires_at=None if expires is None else datetime.fromtimestamp(expires, utc),
            next_step=self.next_step,
            attempts=self.attempts,
            parked=self.parked,
            saga_version=self.saga_version,
            wake_at=None if self.wake is None else datetime.fromtimestamp(self.wake, utc),
            waiting_for=self.waiting_for,
            deadline_at=self.deadline_at,
            cancel_reason=self.cancel_reason,
            signals=tuple(self.signals),
            parent_id=self.parent_id,
        )


_by_update = attrgetter("updated")
_by_due = methodcaller("due_key")


class MemorySagaStorage:
    """Saga storage held in this process's memory; implements :class:`~saga_core.SagaStorage`.

    Contexts are stored as the codec's JSON text, as a durable storage stores them.

    Args:
        retain_finished: keep at most this many finished (COMPLETED or COMPENSATED) sagas,
            dropping the oldest-finished first together with their journals, so a long-running
            process does not grow without bound. A dropped saga is forgotten: loading it raises
            :class:`~saga_core.SagaNotFoundError`, and its id is free again. ``None`` (the
            default) keeps every saga; FAILED and unfinished sagas are always kept.
        clock: seconds since the epoch, used for timestamps and leases (inject a fake clock to
            expire leases in tests without sleeping).

    Raises:
        SagaUsageError: ``retain_finished`` is not ``None`` or an int >= 0, or ``clock`` is
            not callable.

    After :meth:`aclose` every call raises :class:`~saga_core.StorageUnavailableError`.
    """

    def __init__(
        self, *, retain_finished: int | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        if retain_finished is not None and (
            isinstance(retain_finished, bool)
            or not isinstance(retain_finished, int)
            or retain_finished < 0
        ):
            raise SagaUsageError(
                f"MemorySagaStorage(retain_finished=...) must be None or an int >= 0, "
                f"got {retain_finished!r}"
            )
        if not callable(clock):
            raise SagaUsageError(
                f"MemorySagaStorage(clock=...) must be a callable returning seconds since the "
                f"epoch, got {clock!r}"
            )
        self._retain_finished = retain_finished
        self._clock = clock
        # Keyed by the UUID's int: hashing a UUID runs Python code, an int hashes in C, and
        # these dicts are touched on every checkpoint.
        self._sagas: dict[int, _StoredSaga] = {}
        # The non-terminal sagas, so recovery scans never walk the finished ones.
        self._active: dict[int, _StoredSaga] = {}
        self._finished_order: deque[int] = deque()
        self._write_count = 0
        self._closed = False
        # One stream per listener of work_notifications; a full one already has a
        # notification waiting, which is all a listener needs to know.
        self._listeners: list[MemoryObjectSendStream[None]] = []

    @property
    def write_count(self) -> int:
        """Number of successful writes so far: each ``create``, ``checkpoint`` and ``claim``
        counts one, and so does a ``claim_recoverable`` that claimed at least one saga, a
        stored signal, a recorded cancel request, a park and an unpark."""
        return self._write_count

    # --- protocol -------------------------------------------------------------------------

    async def create(self, saga: NewSaga) -> None:
        """Store a new saga at cursor 0 and version 1: RUNNING and leased to
        ``saga.lease_owner``, or WAITING without a lease.

        Raises :class:`~saga_core.SagaAlreadyExistsError` if the id exists (nothing written).
        """
        self._create(saga)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Apply one checkpoint atomically if the stored version is ``expected_version``.

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError`
        (terminal record, checked before the version), :class:`~saga_core.SagaVersionConflictError`,
        or :class:`~saga_core.SagaUsageError` for a lease without an owner; nothing is written.
        """
        self._checkpoint(checkpoint)

    async def load(self, saga_id: UUID) -> SagaRecord:
        """Return the saga's record. Raises :class:`~saga_core.SagaNotFoundError`."""
        return self._get(saga_id).to_record()

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        """Return a copy of the saga's journal in write order. Raises
        :class:`~saga_core.SagaNotFoundError`."""
        return list(self._get(saga_id).journal)

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        """Return up to ``limit`` recoverable sagas, earliest due first, without claiming."""
        return [saga.to_record() for saga in self._recoverable(limit)]

    async def claim(
        self, saga_id: UUID, *, owner: str, lease_seconds: float, force: bool = False
    ) -> SagaRecord:
        """Lease one saga to ``owner`` for recovery and return its record with the new version
        (``force``: whoever holds the lease now).

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError`,
        :class:`~saga_core.SagaParkedError` or :class:`~saga_core.SagaLeaseHeldError` (another
        owner's lease has not expired, without ``force``).
        """
        return self._claim(saga_id, owner, lease_seconds, force)

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        """Claim up to ``limit`` recoverable sagas for ``owner``, earliest due first, and
        return their records with the new versions."""
        return self._claim_recoverable(owner, lease_seconds, limit)

    async def renew_lease(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> None:
        """Extend ``owner``'s lease to ``now + lease_seconds``; nothing else changes.

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError` or
        :class:`~saga_core.SagaLeaseHeldError` (the lease is not ``owner``'s).
        """
        saga = self._owned(saga_id, owner)
        saga.lease_expires = self._clock() + lease_seconds

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_name: str | None = None,
        parked: bool | None = None,
        updated_before: datetime | None = None,
        lease_owner: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Return up to ``limit`` sagas matching every given filter, oldest update first."""
        if self._closed:
            raise _closed_error()
        require_lease_owner_filter(lease_owner)
        if limit < 0:
            raise SagaUsageError(f"limit must be >= 0, got {limit!r}")
        if updated_before is not None and updated_before.utcoffset() is None:
            raise SagaUsageError("list_sagas(updated_before=...) needs an aware datetime")
        before = None if updated_before is None else updated_before.timestamp()
        matching = (
            saga
            for saga in self._sagas.values()
            if (status is None or saga.status is status)
            and (saga_name is None or saga.saga_name == saga_name)
            and (parked is None or saga.parked is parked)
            and (before is None or saga.updated < before)
            and (lease_owner is None or saga.lease_owner == lease_owner)
        )
        return [saga.to_record() for saga in nsmallest(limit, matching, key=_by_update)]

    async def park(self, saga_id: UUID, *, owner: str, reason: str) -> None:
        """Move a saga leased to ``owner`` to the dead-letter state (see the protocol).

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError` or
        :class:`~saga_core.SagaLeaseHeldError` (the lease is not ``owner``'s).
        """
        saga = self._owned(saga_id, owner)
        saga.parked = True
        saga.error = reason
        saga.lease_owner = None
        saga.lease_expires = None
        saga.version += 1
        saga.updated = self._clock()
        self._write_count += 1

    async def deliver_signal(self, signal: NewSignal) -> bool:
        """Store a signal for a saga; False when its ``signal_id`` was delivered before.

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError` or
        :class:`~saga_core.SagaSignalRefusedError` (see the protocol).
        """
        return self._deliver(signal)

    async def request_cancel(self, saga_id: UUID, *, reason: str) -> SagaRecord:
        """Record a cancel request on a RUNNING or WAITING saga (see the protocol) and return
        its record. Raises :class:`~saga_core.SagaNotFoundError` or
        :class:`~saga_core.SagaFinishedError`."""
        saga = self._get(saga_id)
        if saga.status.is_terminal:
            raise _finished(saga)
        if saga.cancel_reason is None and saga.status in _CANCELLABLE:
            saga.cancel_reason = reason
            self._wake_now(saga)
            self._write_count += 1
        return saga.to_record()

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        """Take a saga out of the dead-letter state; it is recoverable at once. Raises
        :class:`~saga_core.SagaNotFoundError`."""
        saga = self._get(saga_id)
        if saga.parked and not saga.status.is_terminal:
            saga.parked = False
            saga.attempts = 0
            saga.updated = self._clock()
            self._write_count += 1
        return saga.to_record()

    @contextlib.asynccontextmanager
    async def work_notifications(self) -> AsyncIterator[AsyncIterator[None]]:
        """Listen for sagas that become due (a :class:`~saga_core.storage.WorkNotifications`
        storage): a WAITING saga created, a signal a waiting saga waits for, a cancel."""
        if self._closed:
            raise _closed_error()
        send, receive = anyio.create_memory_object_stream[None](1)
        self._listeners.append(send)
        try:
            yield receive
        finally:
            self._listeners.remove(send)
            send.close()
            receive.close()

    def _notify(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(anyio.WouldBlock):
                listener.send_nowait(None)

    async def aclose(self) -> None:
        """Close the storage and drop what it holds. Idempotent."""
        self._closed = True
        self._sagas.clear()
        self._active.clear()
        self._finished_order.clear()

    async def __aenter__(self) -> MemorySagaStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- critical sections (synchronous: see the note at the top of the module) -------------

    def _create(self, saga: NewSaga) -> None:
        if self._closed:
            raise _closed_error()
        saga_id = saga.saga_id
        key = _key(saga_id)
        if key in self._sagas:
            raise SagaAlreadyExistsError(
                f"saga {saga_id} already exists; start the saga with a new id, or recover the "
                f"existing one"
            )
        check_new_saga(saga)
        stored = _StoredSaga(saga, self._clock())
        self._sagas[key] = stored
        self._active[key] = stored
        self._write_count += 1
        if stored.status is SagaStatus.WAITING:
            self._notify()

    def _checkpoint(self, checkpoint: Checkpoint) -> None:
        if self._closed:
            raise _closed_error()
        saga = self._sagas.get(_key(checkpoint.saga_id))
        if saga is None:
            raise _not_found(checkpoint.saga_id)
        if saga.status.is_terminal:
            raise _finished(saga)
        if saga.version != checkpoint.expected_version:
            raise SagaVersionConflictError(
                f"saga {saga.saga_id} is at version {saga.version}, not the expected "
                f"{checkpoint.expected_version}: another runner wrote it; stop without writing"
            )
        status = checkpoint.status
        lease_seconds = checkpoint.lease_seconds
        terminal = status.is_terminal
        waiting = status is SagaStatus.WAITING
        if lease_seconds is not None and not terminal and checkpoint.lease_owner is None:
            raise SagaUsageError(
                f"checkpoint of saga {saga.saga_id} sets lease_seconds without a lease_owner; "
                f"pass both, or lease_seconds=None to release the lease"
            )
        if saga.cancel_reason is not None and (
            status is SagaStatus.COMPLETED
            or (waiting and saga.status is not SagaStatus.WAITING)
            or checkpoint.cursor > saga.cursor
        ):
            raise _cancelled(saga)
        if waiting:
            check_wake_at(checkpoint.wake_at)
        consumed: PendingSignal | None = None
        if checkpoint.consume_signal is not None or checkpoint.unless_signal is not None:
            consumed = self._check_signals(saga, checkpoint)
        # Every check is done: from here on nothing raises, so the write is all or nothing.
        now = self._clock()
        if consumed is not None:
            saga.signals.remove(consumed)
        saga.status = status
        saga.version += 1
        saga.cursor = checkpoint.cursor
        saga.next_step = checkpoint.next_step
        applied = checkpoint.applied
        # Stored as a tuple even if a list was passed by mistake.
        saga.applied = tuple(applied)
        saga.context = checkpoint.context
        saga.error = checkpoint.error
        saga.updated = now
        if lease_seconds is None or terminal or waiting:
            saga.lease_owner = None
            saga.lease_expires = None
        else:
            saga.lease_owner = checkpoint.lease_owner
            saga.lease_expires = now + lease_seconds
        if waiting:
            saga.attempts = 0
            wake_at = checkpoint.wake_at
            saga.wake = None if wake_at is None else wake_at.timestamp()
            saga.waiting_for = checkpoint.waiting_for
            if saga.cancel_reason is not None or any(
                signal.name == saga.waiting_for for signal in saga.signals
            ):
                self._wake_now(saga)
        elif saga.wake is not None or saga.waiting_for is not None:
            saga.wake = None
            saga.waiting_for = None
        if checkpoint.journal:
            saga.journal.extend(checkpoint.journal)
        self._write_count += 1
        if terminal:
            del self._active[saga.saga_id.int]
            retain = self._retain_finished
            if retain is not None:
                self._retire(saga.saga_id.int, retain)

    def _retire(self, key: int, retain: int) -> None:
        finished = self._finished_order
        finished.append(key)
        while len(finished) > retain:
            del self._sagas[finished.popleft()]

    def _get(self, saga_id: UUID) -> _StoredSaga:
        if self._closed:
            raise _closed_error()
        saga = self._sagas.get(_key(saga_id))
        if saga is None:
            raise _not_found(saga_id)
        return saga

    def _owned(self, saga_id: UUID, owner: str) -> _StoredSaga:
        saga = self._get(saga_id)
        if saga.status.is_terminal:
            raise _finished(saga)
        if saga.lease_owner != owner:
            raise SagaLeaseHeldError(
                f"saga {saga_id} is not leased to {owner!r} (its lease is "
                f"{saga.lease_owner!r}'s): it was taken over; stop without writing"
            )
        return saga

    def _recoverable(self, limit: int) -> list[_StoredSaga]:
        if self._closed:
            raise _closed_error()
        if limit < 0:
            raise SagaUsageError(f"limit must be >= 0, got {limit!r}")
        now = self._clock()
        candidates = (
            saga
            for saga in self._active.values()
            if not saga.parked
            and (saga.lease_expires is None or saga.lease_expires <= now)
            and saga.is_due(now)
        )
        # nsmallest is stable, so sagas due at the same instant keep creation order.
        return nsmallest(limit, candidates, key=_by_due)

    def _claim(self, saga_id: UUID, owner: str, lease_seconds: float, force: bool) -> SagaRecord:
        saga = self._get(saga_id)
        if saga.status.is_terminal:
            raise _finished(saga)
        if saga.parked:
            raise SagaParkedError(
                f"saga {saga_id} is parked in the dead-letter state ({saga.error}); unpark it "
                "to let recovery try again"
            )
        now = self._clock()
        held_by = saga.lease_owner
        if (
            not force
            and held_by is not None
            and held_by != owner
            and saga.lease_expires is not None
            and saga.lease_expires > now
        ):
            raise SagaLeaseHeldError(
                f"saga {saga_id} is leased to {held_by!r} until "
                f"{datetime.fromtimestamp(saga.lease_expires, timezone.utc).isoformat()}; "
                f"it is not stalled, leave it to its owner"
            )
        self._take_lease(saga, owner, now + lease_seconds, now)
        self._write_count += 1
        return saga.to_record()

    def _claim_recoverable(self, owner: str, lease_seconds: float, limit: int) -> list[SagaRecord]:
        chosen = self._recoverable(limit)
        if not chosen:
            return []
        now = self._clock()
        for saga in chosen:
            self._take_lease(saga, owner, now + lease_seconds, now)
        self._write_count += 1
        return [saga.to_record() for saga in chosen]

    @staticmethod
    def _take_lease(saga: _StoredSaga, owner: str, expires: float, now: float) -> None:
        saga.version += 1
        saga.attempts += 1
        saga.lease_owner = owner
        saga.lease_expires = expires
        saga.updated = now

    def _check_signals(self, saga: _StoredSaga, checkpoint: Checkpoint) -> PendingSignal | None:
        """The pending signal ``checkpoint`` consumes (None if none), after checking its
        signal conditions; raises what the protocol says when they do not hold."""
        unless = checkpoint.unless_signal
        if unless is not None and any(signal.name == unless for signal in saga.signals):
            raise SagaSignalPendingError(
                f"saga {saga.saga_id} has a pending signal {unless!r}: it arrived first, so "
                "the saga takes it; nothing was written"
            )
        wanted = checkpoint.consume_signal
        if wanted is None:
            return None
        for signal in saga.signals:
            if signal.signal_id == wanted:
                return signal
        raise SagaVersionConflictError(
            f"saga {saga.saga_id} has no pending signal {wanted!r} to consume: another runner "
            "consumed it; stop without writing"
        )

    def _deliver(self, signal: NewSignal) -> bool:
        saga = self._get(signal.saga_id)
        if signal.signal_id in saga.delivered:
            return False
        if saga.status.is_terminal:
            raise _finished(saga)
        if saga.status not in _CANCELLABLE or saga.cancel_reason is not None:
            why = (
                "it is cancelled"
                if saga.cancel_reason is not None
                else (f"it is {saga.status.value}")
            )
            raise SagaSignalRefusedError(
                f"saga {saga.saga_id} does not accept signal {signal.name!r}: {why}, so it "
                "will not wait for it again; nothing was stored"
            )
        if saga.cursor > signal.wait_cursor or (
            saga.cursor == signal.wait_cursor and saga.next_step != signal.wait_step
        ):
            raise SagaSignalRefusedError(
                f"saga {saga.saga_id} has gone past its wait for signal {signal.name!r} (it "
                "took an earlier one, or the wait timed out); nothing was stored"
            )
        pending = next((p for p in saga.signals if p.name == signal.name), None)
        if pending is not None:
            raise SagaSignalRefusedError(
                f"saga {saga.saga_id} has a signal {signal.name!r} pending already (id "
                f"{pending.signal_id!r}) and its wait takes one; nothing was stored"
            )
        now = self._clock()
        saga.delivered.add(signal.signal_id)
        saga.signals.append(
            PendingSignal(
                signal.signal_id,
                signal.name,
                signal.payload,
                datetime.fromtimestamp(now, timezone.utc),
            )
        )
        if saga.status is SagaStatus.WAITING and saga.waiting_for == signal.name:
            self._wake_now(saga)
        self._write_count += 1
        return True

    def _wake_now(self, saga: _StoredSaga) -> None:
        """Make a WAITING saga due now (its ``wake_at`` brought forward), and say so."""
        if saga.status is not SagaStatus.WAITING:
            return
        now = self._clock()
        if saga.wake is None or saga.wake > now:
            saga.wake = now
        self._notify()


_CANCELLABLE = (SagaStatus.RUNNING, SagaStatus.WAITING)


def _key(saga_id: UUID) -> int:
    """The dict key of ``saga_id``; a saga id that is not a UUID is the caller's mistake
    (:class:`~saga_core.SagaUsageError`), raised before anything is written."""
    if type(saga_id) is UUID:
        return saga_id.int
    return require_saga_id(saga_id).int


def _cancelled(saga: _StoredSaga) -> SagaCancelledError:
    return SagaCancelledError(
        f"saga {saga.saga_id} was cancelled ({saga.cancel_reason}); it may not move forward: "
        "compensate it"
    )


def _closed_error() -> StorageUnavailableError:
    return StorageUnavailableError("storage is closed")


def _not_found(saga_id: UUID) -> SagaNotFoundError:
    return SagaNotFoundError(f"no saga with id {saga_id} in storage")


def _finished(saga: _StoredSaga) -> SagaFinishedError:
    return SagaFinishedError(
        f"saga {saga.saga_id} is {saga.status.value}, a final state that is never written again"
    )


def open_memory_storage(url: str, **options: Any) -> MemorySagaStorage:
    """Open a :class:`MemorySagaStorage` for ``memory://`` (the ``memory`` entry point).

    Args:
        url: ``"memory://"`` or ``"memory:"``; nothing may follow the scheme.
        options: passed to :class:`MemorySagaStorage` (``retain_finished``, ``clock``).

    Raises:
        SagaUsageError: the URL is not a bare memory URL, or an option is unknown.
    """
    scheme, _, rest = url.partition(":")
    if scheme.lower() != "memory":
        raise SagaUsageError(f"not a memory storage URL (scheme {scheme!r}); use 'memory://'")
    if rest not in ("", "//"):
        raise SagaUsageError(
            f"a memory storage URL takes nothing after 'memory://', got {url!r}; pass options "
            f"as keyword arguments, e.g. open_storage('memory://', retain_finished=1000)"
        )
    unknown = sorted(options.keys() - _OPTIONS)
    if unknown:
        raise SagaUsageError(
            f"unknown memory storage option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(_OPTIONS))}"
        )
    return MemorySagaStorage(**options)
