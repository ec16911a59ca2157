"""Saga statuses and the transitions the state machine allows."""

from __future__ import annotations

import enum


class SagaStatus(str, enum.Enum):
    """Where a saga is in its life. Stored by its value (``"running"`` ...)."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED and COMPENSATED, which are never overwritten."""
        return self is SagaStatus.COMPLETED or self is SagaStatus.COMPENSATED

    @property
    def is_recoverable(self) -> bool:
        """True for the statuses recovery acts on: RUNNING, COMPENSATING and FAILED."""
        return not (self is SagaStatus.COMPLETED or self is SagaStatus.COMPENSATED)


#: Allowed transitions. A status may also be checkpointed again with itself (a RUNNING saga
#: advancing its cursor, a FAILED saga whose lease is released), and a saga with nothing left to
#: compensate goes straight to COMPENSATED. Storages enforce only that terminal statuses are
#: never written again; the executor keeps the rest.
TRANSITIONS: dict[SagaStatus, frozenset[SagaStatus]] = {
    SagaStatus.RUNNING: frozenset(
        {SagaStatus.RUNNING, SagaStatus.COMPLETED, SagaStatus.COMPENSATING, SagaStatus.COMPENSATED}
    ),
    SagaStatus.COMPENSATING: frozenset(
        {SagaStatus.COMPENSATING, SagaStatus.COMPENSATED, SagaStatus.FAILED}
    ),
    SagaStatus.FAILED: frozenset(
        {SagaStatus.FAILED, SagaStatus.COMPENSATING, SagaStatus.COMPENSATED}
    ),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
}


class StepDirection(str, enum.Enum):
    """Whether a journal entry or step result is about ``act`` or ``compensate``."""

    ACT = "act"
    COMPENSATE = "compensate"


class StepEvent(str, enum.Enum):
    """What happened to a step attempt, as recorded in the journal."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
