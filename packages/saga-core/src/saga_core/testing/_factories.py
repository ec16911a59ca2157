"""Builders for storage records with sensible defaults, and a strict JSON comparison."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from uuid import UUID, uuid4

from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._storage.protocol import Checkpoint, JournalEntry, NewSaga

#: The context text the builders use when none is given.
DEFAULT_CONTEXT = '{"value": 0}'
#: The lease owner the builders use when none is given.
DEFAULT_OWNER = "runner"
#: The lease the builders take when none is given: long enough never to expire in a test.
DEFAULT_LEASE_SECONDS = 60.0


def make_entry(
    step_id: str = "step",
    direction: StepDirection = StepDirection.ACT,
    event: StepEvent = StepEvent.STARTED,
    attempt: int = 1,
    *,
    at: datetime | None = None,
    error: str | None = None,
) -> JournalEntry:
    """Build a journal entry; ``at`` defaults to now (UTC, with microseconds)."""
    return JournalEntry(
        step_id=step_id,
        direction=direction,
        event=event,
        attempt=attempt,
        at=datetime.now(timezone.utc) if at is None else at,
        error=error,
    )


def make_new_saga(
    *,
    saga_id: UUID | None = None,
    saga_name: str = "test-saga",
    context: str = DEFAULT_CONTEXT,
    lease_owner: str = DEFAULT_OWNER,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    journal: Sequence[JournalEntry] = (),
    next_step: str | None = "step-1",
    saga_version: int = 1,
) -> NewSaga:
    """Build a :class:`~saga_core.storage.NewSaga` with a fresh id, leased to ``"runner"``
    for 60 s."""
    return NewSaga(
        saga_id=uuid4() if saga_id is None else saga_id,
        saga_name=saga_name,
        context=context,
        lease_owner=lease_owner,
        lease_seconds=lease_seconds,
        journal=journal,
        next_step=next_step,
        saga_version=saga_version,
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
) -> Checkpoint:
    """Build a :class:`~saga_core.storage.Checkpoint`; by default it keeps the saga RUNNING
    and renews the 60 s lease of ``"runner"`` (pass ``lease_seconds=None`` to release it)."""
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
