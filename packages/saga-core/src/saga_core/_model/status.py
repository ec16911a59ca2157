"""Saga statuses and the transitions the state machine allows."""

from __future__ import annotations

import enum


class SagaStatus(str, enum.Enum):
    """Where a saga is in its life. Stored by its value (``"running"`` ...).

    The state machine: RUNNING -> COMPLETED; RUNNING <-> WAITING (the saga suspends on a wait
    or a sleep and resumes on a signal or its timer; a saga started detached is WAITING until a
    worker takes it); RUNNING | WAITING -> COMPENSATING -> COMPENSATED; COMPENSATING -> FAILED
    (a compensation exhausted); FAILED -> COMPENSATING (recovery retries it); RUNNING/FAILED ->
    COMPENSATED directly when nothing is left to compensate. The executor keeps it; storages
    only refuse to write a terminal status again.
    """

    RUNNING = "running"
    WAITING = "waiting"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"

    is_terminal: bool
    """True for COMPLETED and COMPENSATED, which are never overwritten."""
    is_recoverable: bool
    is_forward: bool
    """True for RUNNING and WAITING: the saga moves forward (a cancel or a deadline makes it
    compensate)."""
    """True for the statuses a worker acts on: every status but COMPLETED and COMPENSATED (a
    WAITING saga only once it is due)."""

    def __init__(self, value: str) -> None:
        # Plain attributes of each member, set once: the engine asks them on every write, and
        # a property would read two members off the class each time (slow on Python < 3.12).
        self.is_terminal = value in ("completed", "compensated")
        self.is_recoverable = not self.is_terminal
        self.is_forward = value in ("running", "waiting")


class StepDirection(str, enum.Enum):
    """Whether a journal entry or step result is about ``act`` or ``compensate``."""

    ACT = "act"
    COMPENSATE = "compensate"


class StepEvent(str, enum.Enum):
    """What happened, as recorded in the journal: to a step attempt or a wait (STARTED,
    COMPLETED, FAILED), or to the saga (CLAIMED by a runner, COMPENSATING, FINISHED)."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    CLAIMED = "claimed"
    COMPENSATING = "compensating"
    FINISHED = "finished"
