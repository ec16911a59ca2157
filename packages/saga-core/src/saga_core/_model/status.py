"""Saga statuses and the transitions the state machine allows."""

from __future__ import annotations

import enum


class SagaStatus(str, enum.Enum):
    """Where a saga is in its life. Stored by its value (``"running"`` ...).

    The state machine: RUNNING -> COMPLETED; RUNNING -> COMPENSATING -> COMPENSATED;
    COMPENSATING -> FAILED (a compensation exhausted); FAILED -> COMPENSATING (recovery retries
    it); RUNNING/FAILED -> COMPENSATED directly when nothing is left to compensate. The executor
    keeps it; storages only refuse to write a terminal status again.
    """

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


class StepDirection(str, enum.Enum):
    """Whether a journal entry or step result is about ``act`` or ``compensate``."""

    ACT = "act"
    COMPENSATE = "compensate"


class StepEvent(str, enum.Enum):
    """What happened to a step attempt, as recorded in the journal."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
