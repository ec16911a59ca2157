"""The storage protocol: what a saga storage must do, and the records it exchanges.

A storage keeps one record per saga and an append-only journal per saga. The executor talks
to it through five writes and reads; everything else (recovery, the worker, the CLI) uses the
same calls. A third-party storage implements :class:`SagaStorage` and runs the contract suite
in :mod:`saga_core.testing` to prove it keeps every rule. The rules are stated once, in the
public module :mod:`saga_core.storage` that re-exports these names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Protocol, runtime_checkable
from uuid import UUID

from saga_core._model.status import SagaStatus, StepDirection, StepEvent

#: The version :meth:`SagaStorage.create` stores.
INITIAL_VERSION = 1


class JournalEntry(NamedTuple):
    """One event in a saga's history: a step attempt (or a wait) started, completed or
    failed; or the saga claimed by a runner, deciding to compensate, finished."""

    step_id: str
    """The step or wait it is about (the one at the cursor for a claim); ``""`` for the saga
    itself (compensating, finished)."""
    direction: StepDirection
    event: StepEvent
    attempt: int
    """The attempt of a step; for a claim, the saga's recovery attempts."""
    at: datetime
    """When it happened (UTC, timezone-aware)."""
    error: str | None = None
    """``"ExceptionType: message"`` for a failure (or the cause of a decision to compensate),
    else ``None``."""
    detail: str | None = None
    """What else it says: the runner's owner for a claim, the final status when finished, the
    signal's id when a wait took one, the wake time when a wait suspends."""


class PendingSignal(NamedTuple):
    """A signal delivered to a saga and not consumed yet (:meth:`SagaStorage.deliver_signal`)."""

    signal_id: str
    """Unique per saga: a second delivery with the same id is a duplicate."""
    name: str
    payload: str
    """The payload as the codec's JSON text."""
    delivered_at: datetime
    """When the storage stored it (UTC, timezone-aware)."""


class NewSignal(NamedTuple):
    """What :meth:`SagaStorage.deliver_signal` stores, and when the saga accepts it."""

    saga_id: UUID
    signal_id: str
    name: str
    payload: str
    """The payload as the codec's JSON text (stored and returned unchanged)."""
    wait_cursor: int
    """Position of the saga's wait for ``name``: the saga accepts the signal until it has gone
    past that wait (see :meth:`SagaStorage.deliver_signal`)."""
    wait_step: str
    """The wait's step id (the saga's ``next_step`` while it waits there)."""


class NewSaga(NamedTuple):
    """What :meth:`SagaStorage.create` stores: a saga at cursor 0, version 1 — RUNNING and
    leased to its runner, or WAITING without a lease and due at ``wake_at`` (started detached:
    a worker runs it)."""

    saga_id: UUID
    saga_name: str
    context: str
    """The context as the codec's JSON text."""
    lease_owner: str | None
    """The runner's name (RUNNING); ``None`` for a WAITING saga."""
    lease_seconds: float | None
    journal: Sequence[JournalEntry] = ()
    next_step: str | None = None
    """Id of the step at the cursor (the first step), stored so that recovery can check the
    step in flight is still the one at that position."""
    saga_version: int = 1
    """The saga definition's version (``Saga.version``); recovery runs the saga on it."""
    status: SagaStatus = SagaStatus.RUNNING
    """RUNNING (with a lease) or WAITING (without one)."""
    wake_at: datetime | None = None
    """When a WAITING saga is due (aware); ``None`` for a RUNNING one."""
    deadline_at: datetime | None = None
    """When the saga must be finished by (aware), stored unchanged for its life; ``None``: no
    deadline."""
    parent_id: UUID | None = None
    """The saga that started this one as a child (a SubSaga node), or ``None``; stored
    unchanged for the saga's life."""


class Checkpoint(NamedTuple):
    """One atomic compare-and-set write of a saga's state (see the module's rules)."""

    saga_id: UUID
    expected_version: int
    status: SagaStatus
    cursor: int
    """Number of steps of the saga's ``steps`` list finished going forward."""
    applied: tuple[str, ...]
    """Ids of the steps whose act may have had an effect and that are not yet compensated, in
    the order they were applied; rollback compensates them from the end."""
    context: str
    journal: Sequence[JournalEntry]
    error: str | None = None
    lease_owner: str | None = None
    lease_seconds: float | None = None
    """Extend the lease to ``now + lease_seconds`` for ``lease_owner``; ``None`` releases it."""
    next_step: str | None = None
    """Id of the step at ``cursor`` (the one to run, or in flight), ``None`` past the last
    step. Stored as given; recovery uses it to refuse a saga whose steps were changed."""
    wake_at: datetime | None = None
    """WAITING only: when the saga is due (its timer, timeout or deadline; aware); ``None``
    waits for a signal only. Other statuses store ``None``."""
    waiting_for: str | None = None
    """WAITING only: the name of the signal the saga waits for (a pending or later signal of
    that name makes it due); ``None`` for a sleep."""
    consume_signal: str | None = None
    """The id of a pending signal this write consumes (removes from the pending signals, its
    id still known as delivered). Not pending: :class:`~saga_core.SagaVersionConflictError`."""
    unless_signal: str | None = None
    """Refuse this write with :class:`~saga_core.SagaSignalPendingError` if a signal of this
    name is pending (a timeout, or a suspend, loses to a signal that arrived first)."""


class SagaRecord(NamedTuple):
    """A saga as storage holds it."""

    saga_id: UUID
    saga_name: str
    status: SagaStatus
    version: int
    cursor: int
    applied: tuple[str, ...]
    context: str
    error: str | None
    created_at: datetime
    updated_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    next_step: str | None = None
    attempts: int = 0
    """How many times recovery claimed the saga (since it was created or last unparked)."""
    parked: bool = False
    """True in the dead-letter state: recovery leaves it alone until an operator unparks it."""
    saga_version: int = 1
    """The saga definition's version it was created with (1 for sagas stored before
    versions were recorded)."""
    wake_at: datetime | None = None
    """WAITING: when it is due (see the rules); else ``None``."""
    waiting_for: str | None = None
    """WAITING: the signal name it waits for, or ``None``."""
    deadline_at: datetime | None = None
    """When the saga must be finished by, or ``None``."""
    cancel_reason: str | None = None
    """Why a cancel was requested (:meth:`SagaStorage.request_cancel`); ``None`` when none was."""
    signals: tuple[PendingSignal, ...] = ()
    """The signals delivered and not consumed yet, in delivery order."""
    parent_id: UUID | None = None
    """The saga that started this one as a child (a SubSaga node), or ``None``; stored at
    creation and never changed."""


@runtime_checkable
class SagaStorage(Protocol):
    """What a saga storage implements. Every method is safe to call from concurrent tasks.

    A storage is also an async context manager whose exit calls :meth:`aclose`.
    """

    async def create(self, saga: NewSaga) -> None:
        """Store a new saga at cursor 0 and version 1: RUNNING with the given lease, or
        WAITING without one (check it with :func:`~saga_core.storage.check_new_saga`), with
        its ``saga_version``, ``deadline_at`` and ``parent_id``, which no later write changes.

        Raises :class:`~saga_core.SagaAlreadyExistsError` if the id exists (nothing written).
        """
        ...

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Apply one checkpoint atomically if the stored version is ``expected_version``.

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError`
        (terminal record) or :class:`~saga_core.SagaVersionConflictError`; nothing is written
        then.
        """
        ...

    async def load(self, saga_id: UUID) -> SagaRecord:
        """Return the saga's record. Raises :class:`~saga_core.SagaNotFoundError`."""
        ...

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        """Return the saga's journal in write order. Raises
        :class:`~saga_core.SagaNotFoundError` for an unknown id."""
        ...

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        """Return up to ``limit`` recoverable sagas (see the module's rules; parked sagas
        are not), earliest due first, without claiming them."""
        ...

    async def claim(
        self, saga_id: UUID, *, owner: str, lease_seconds: float, force: bool = False
    ) -> SagaRecord:
        """Take the lease on one saga for recovery and return its record with the new version.

        Succeeds when the saga is recoverable or its lease is already ``owner``'s, or with
        ``force=True`` whoever holds its lease (an operator taking over from a runner they
        know is dead). Raises :class:`~saga_core.SagaNotFoundError`,
        :class:`~saga_core.SagaFinishedError` (terminal), :class:`~saga_core.SagaParkedError`
        (dead-letter state, forced or not) or :class:`~saga_core.SagaLeaseHeldError` (another
        owner's lease has not expired, without ``force``). The version bump fences off any
        earlier runner of the saga.
        """
        ...

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        """Atomically claim up to ``limit`` recoverable sagas — stalled ones and due WAITING
        ones — earliest due first (see the rules).

        Two concurrent callers never receive the same saga. Returns the claimed records with
        their new versions.
        """
        ...

    async def renew_lease(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> None:
        """Extend ``owner``'s lease on a saga to ``now + lease_seconds``; nothing else changes.

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError`
        (terminal) or :class:`~saga_core.SagaLeaseHeldError` when the lease is not (or no
        longer) ``owner``'s — a runner that gets it has been taken over and must stop.
        A lease of ``owner``'s that expired but was not taken over is renewed.
        """
        ...

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
        """Return up to ``limit`` sagas matching every given filter, oldest update first.

        ``updated_before`` is an aware datetime (a naive one is a
        :class:`~saga_core.SagaUsageError`); ``lease_owner`` matches the sagas whose lease
        names that owner, live or expired (a process restarted under its old name finds its
        sagas with it; a non-empty string, else a usage error); ``None`` filters are not
        applied.
        """
        ...

    async def park(self, saga_id: UUID, *, owner: str, reason: str) -> None:
        """Move a saga whose lease is ``owner``'s to the dead-letter state (see the rules).

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError`
        or :class:`~saga_core.SagaLeaseHeldError` (the lease is not ``owner``'s).
        """
        ...

    async def deliver_signal(self, signal: NewSignal) -> bool:
        """Store a signal for a saga, atomically; return False (nothing written) when a signal
        with the same ``signal_id`` was delivered to the saga before (pending or consumed).

        The saga accepts it while it is RUNNING or WAITING with no cancel requested and has not
        gone past the wait: its cursor is below ``wait_cursor``, or at it with ``next_step ==
        wait_step``. A WAITING saga whose ``waiting_for`` is the signal's name becomes due now.
        The version does not change (a runner holding the saga is not fenced off).

        Raises :class:`~saga_core.SagaNotFoundError`, :class:`~saga_core.SagaFinishedError`
        (terminal) or :class:`~saga_core.SagaSignalRefusedError` (not accepted, or a signal of
        that name is pending already); all checked after the duplicate check, so a retried
        delivery returns False whatever happened since.
        """
        ...

    async def request_cancel(self, saga_id: UUID, *, reason: str) -> SagaRecord:
        """Record the durable decision to cancel a RUNNING or WAITING saga and return its
        record. A WAITING saga becomes due now; the version does not change. From then on a
        checkpoint that moves the saga forward is refused (see the rules), so its runner
        compensates it. A saga already cancelled, COMPENSATING or FAILED is returned unchanged.

        Raises :class:`~saga_core.SagaNotFoundError` or :class:`~saga_core.SagaFinishedError`
        (terminal).
        """
        ...

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        """Take a saga out of the dead-letter state (``parked=False``, ``attempts=0``) and
        return its record; it is recoverable at once. A saga that is not parked is returned
        unchanged. Raises :class:`~saga_core.SagaNotFoundError`.
        """
        ...

    async def aclose(self) -> None:
        """Release what the storage opened (connections, pools). Idempotent."""
        ...

    async def __aenter__(self) -> SagaStorage: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class WorkNotifications(Protocol):
    """An optional storage capability: telling workers in every process, as it happens, that
    a saga became due — a WAITING saga created (a detached start), a signal delivered to a
    saga that waits for it, a cancel requested. A worker listens when its storage has it, and
    polls otherwise (it polls anyway, for timers and stalled sagas). A notification is a hint:
    a listener may get one for work another worker took, or miss one while it reconnects.
    """

    def work_notifications(self) -> AbstractAsyncContextManager[AsyncIterator[None]]:
        """Start listening; the context's value yields once per notification (several that
        arrive together may be yielded once) until the context exits.

        Raises (on entering): :class:`~saga_core.StorageUnavailableError` when the
        storage cannot be reached.
        """
        ...
