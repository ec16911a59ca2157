"""Builders for storage records with sensible defaults, and a strict JSON comparison."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from uuid import UUID, uuid4

from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._storage.protocol import Checkpoint, JournalEntry, NewSaga, NewSignal

#: The context text the builders use when none is given.
DEFAULT_CONTEXT = '{"value": 0}'
#: The lease owner the builders use when none is given.
DEFAULT_OWNER = "runner"
#: The lease the builders take when none is given: long enough never to expire in a test.
DEFAULT_LEASE_SECONDS = 60.0
#: The signal name :func:`make_signal` uses when none is given.
DEFAULT_SIGNAL = "approval"
#: The step id a saga from :func:`make_new_saga` is at, and where :func:`make_signal` waits.
DEFAULT_STEP = "step-1"


def make_entry(
    step_id: str = "step",
    direction: StepDirection = StepDirection.ACT,
    event: StepEvent = StepEvent.STARTED,
    attempt: int = 1,
    *,
    at: datetime | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> JournalEntry:
    """Build a journal entry; ``at`` defaults to now (UTC, with microseconds)."""
    return JournalEntry(
        step_id=step_id,
        direction=direction,
        event=event,
        attempt=attempt,
        at=datetime.now(timezone.utc) if at is None else at,
        error=error,
        detail=detail,
    )


def make_new_saga(
    *,
    saga_id: UUID | None = None,
    saga_name: str = "test-saga",
    context: str = DEFAULT_CONTEXT,
    lease_owner: str | None = None,
    lease_seconds: float | None = None,
    journal: Sequence[JournalEntry] = (),
    next_step: str | None = DEFAULT_STEP,
    saga_version: int = 1,
    status: SagaStatus = SagaStatus.RUNNING,
    wake_at: datetime | None = None,
    deadline_at: datetime | None = None,
    parent_id: UUID | None = None,
) -> NewSaga:
    """Build a :class:`~saga_core.storage.NewSaga` with a fresh id.

    A RUNNING saga is leased to ``lease_owner`` (default ``"runner"``) for ``lease_seconds``
    (default 60 s); a WAITING one (started detached) holds no lease unless both are given.
    ``parent_id`` makes it the child of that saga.
    Build a saga that :meth:`~saga_core.SagaStorage.create` must refuse with ``._replace``.
    """
    if status is SagaStatus.RUNNING:
        lease_owner = DEFAULT_OWNER if lease_owner is None else lease_owner
        lease_seconds = DEFAULT_LEASE_SECONDS if lease_seconds is None else lease_seconds
    return NewSaga(
        saga_id=uuid4() if saga_id is None else saga_id,
        saga_name=saga_name,
        context=context,
        lease_owner=lease_owner,
        lease_seconds=lease_seconds,
        journal=journal,
        next_step=next_step,
        saga_version=saga_version,
        status=status,
        wake_at=wake_at,
        deadline_at=deadline_at,
        parent_id=parent_id,
    )


def make_checkpoint(
    saga_id: UUID,
    expected_version: int,
    *,
    status: SagaStatus = SagaStatus.RUNNING,
    cursor: int = 0,
    applied: tuple[str, ...] = (),
    context: str = DEFAULT_CONTEXT,
    journal: Sequence[JournalEntry] = (),
    error: str | None = None,
    lease_owner: str | None = DEFAULT_OWNER,
    lease_seconds: float | None = DEFAULT_LEASE_SECONDS,
    next_step: str | None = None,
    wake_at: datetime | None = None,
    waiting_for: str | None = None,
    consume_signal: str | None = None,
    unless_signal: str | None = None,
) -> Checkpoint:
    """Build a :class:`~saga_core.storage.Checkpoint`; by default it keeps the saga RUNNING
    and renews the 60 s lease of ``"runner"`` (pass ``lease_seconds=None`` to release it; a
    WAITING checkpoint drops it whatever is passed)."""
    return Checkpoint(
        saga_id=saga_id,
        expected_version=expected_version,
        status=status,
        cursor=cursor,
        applied=applied,
        context=context,
        journal=journal,
        error=error,
        lease_owner=lease_owner,
        lease_seconds=lease_seconds,
        next_step=next_step,
        wake_at=wake_at,
        waiting_for=waiting_for,
        consume_signal=consume_signal,
        unless_signal=unless_signal,
    )


def make_signal(
    saga_id: UUID,
    *,
    signal_id: str | None = None,
    name: str = DEFAULT_SIGNAL,
    payload: str = '{"approved": true}',
    wait_cursor: int = 0,
    wait_step: str = DEFAULT_STEP,
) -> NewSignal:
    """Build a :class:`~saga_core.storage.NewSignal` with a fresh ``signal_id``, for a wait at
    cursor 0 on ``"step-1"`` (where a saga from :func:`make_new_saga` is, so it accepts it)."""
    return NewSignal(
        saga_id=saga_id,
        signal_id=f"signal-{uuid4().hex}" if signal_id is None else signal_id,
        name=name,
        payload=payload,
        wait_cursor=wait_cursor,
        wait_step=wait_step,
    )


def assert_same_json(actual: str, expected: str) -> None:
    """Assert two JSON texts hold the same value, types included.

    Whitespace, key order and string escapes may differ (a JSON column normalises them), but
    ``1.0`` is not ``1`` and ``true`` is not ``1``: the context codec relies on the types.
    """
    if actual == expected:
        return
    assert _typed(json.loads(actual)) == _typed(json.loads(expected))


def _typed(value: object) -> object:
    """Pair each scalar with its type so that ``==`` also compares types."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)
