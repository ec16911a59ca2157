"""Checkpoints: how one runner stores the writes the state machine names.

A new saga is created (:func:`create_saga`) before any of its steps runs. Every checkpoint
after that is a compare-and-set on the version this runner last wrote, so a second runner of
the same saga is refused and can never overwrite a newer state. It carries the write's
status, cursor and applied steps, with the context and the journal the step calls kept since
the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from uuid import UUID

from saga_core._model.errors import SagaAlreadyExistsError
from saga_core._model.saga import SagaDefinition
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import Checkpoint, JournalEntry, NewSaga, SagaStorage

from .calls import StepCalls
from .states import Write


async def create_saga(
    storage: SagaStorage,
    definition: SagaDefinition,
    saga_id: UUID,
    context_text: str,
    owner: str | None,
    lease_seconds: float | None,
    write: Write,
    *,
    deadline_at: datetime | None = None,
    wake_at: datetime | None = None,
    journal: Sequence[JournalEntry] = (),
    parent_id: UUID | None = None,
) -> None:
    """Store a new saga as ``write`` (the state machine's creation write) names it: RUNNING
    and leased by ``owner``, or — ``owner`` None — WAITING and due at ``wake_at`` (default
    now), for a worker to run (a detached start), with ``journal``; ``parent_id``: the saga
    that started it as its child.

    Raises:
        SagaAlreadyExistsError: storage already holds ``saga_id`` (nothing written).
        SagaStorageError: the storage failed.
    """
    detached = owner is None
    try:
        await storage.create(
            NewSaga(
                saga_id,
                definition.name,
                context_text,
                owner,
                lease_seconds,
                journal,
                definition.next_step_ids[write.cursor],
                definition.version,
                SagaStatus.WAITING if detached else SagaStatus.RUNNING,
                (wake_at or datetime.now(timezone.utc)) if detached else None,
                deadline_at,
                parent_id,
            )
        )
    except SagaAlreadyExistsError as exc:
        raise SagaAlreadyExistsError(
            f"saga {saga_id} already exists in storage, so it was not started again "
            "(a saga id runs once): resume it with recover_saga, or start with a new id"
        ) from exc


class CheckpointWriter:
    """Stores the checkpoints of one saga run, and counts the version it last wrote."""

    __slots__ = (
        "_calls",
        "_lease_seconds",
        "_next_step_ids",
        "_owner",
        "_storage",
        "saga_id",
        "version",
    )

    def __init__(
        self,
        saga_id: UUID,
        storage: SagaStorage,
        calls: StepCalls,
        next_step_ids: tuple[str | None, ...],
        owner: str,
        lease_seconds: float,
        version: int,
    ) -> None:
        self.saga_id = saga_id
        self.version = version  # the stored version this runner last wrote (or claimed)
        self._storage = storage
        self._calls = calls
        self._next_step_ids = next_step_ids
        self._owner = owner
        self._lease_seconds = lease_seconds

    @property
    def owner(self) -> str:
        """The runner's name in leases."""
        return self._owner

    async def store(self, write: Write, pause_seconds: float | None) -> None:
        """Write ``write`` as one compare-and-set checkpoint (with the run's context and
        journal), then count the new version and tell the step calls their context and journal
        are durable.

        ``pause_seconds`` is how long a ``"pause"`` lease is kept (None: released).

        Raises:
            SagaConcurrencyError: another runner owns the saga (nothing written).
            SagaContextError: ``write.strict_context`` and the context cannot be encoded.
            Exception: what the storage raised.
        """
        text = self._calls.encode_context(strict=write.strict_context)
        lease = write.lease
        if lease == "keep":
            lease_seconds: float | None = self._lease_seconds
        elif lease == "pause":
            lease_seconds = pause_seconds
        else:
            lease_seconds = None
        wake = write.wake
        checkpoint = Checkpoint(
            self.saga_id,
            self.version,  # expected: the version this runner last wrote
            write.status,
            write.cursor,
            write.applied,
            text,
            self._calls.journal,
            write.error,
            self._owner if lease_seconds is not None else None,
            lease_seconds,
            write.next_step or self._next_step_ids[write.cursor],
            None if wake is None else wake.wake_at,
            None if wake is None else wake.waiting_for,
            write.consume_signal,
            write.unless_signal,
        )
        await self._storage.checkpoint(checkpoint)
        self.version += 1
        self._calls.written(text)
