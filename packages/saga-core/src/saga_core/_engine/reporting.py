"""Reporting how a run ends: the outcome or error its caller gets, the log line of a
rollback or a FAILED saga, and the observers' ``compensation_started`` and ``saga_finished``
hooks.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaConcurrencyError,
)
from saga_core._model.outcome import SagaOutcome
from saga_core._model.status import SagaStatus

from .hooks import Hooks, fire
from .observer import logger


class RunReport:
    """What one run of one saga tells its caller, its log and its observers about how it
    ended; the driver records here why the saga rolls back (:attr:`trigger`) and why a
    rollback failed (:meth:`compensation_failed`)."""

    __slots__ = ("_hooks", "failed", "saga_id", "saga_name", "trigger")

    def __init__(self, saga_id: UUID, saga_name: str, hooks: Hooks) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        self._hooks = hooks
        self.trigger: BaseException | None = None
        """The step error that made this run compensate (None: it did not, or an earlier
        runner decided to)."""
        self.failed: SagaCompensationFailedError | None = None
        """Set when a compensation of this run is exhausted (the run ends FAILED)."""

    def error(self, status: SagaStatus) -> BaseException | None:
        """Why a saga now ``status`` did not complete: the step error that made it
        compensate, or once FAILED the :class:`SagaCompensationFailedError` that holds that
        error and the exhausted compensation's."""
        return self.failed if status is SagaStatus.FAILED else self.trigger

    def outcome(self, status: SagaStatus, context: Any, cause: str | None) -> SagaOutcome[Any]:
        """The outcome of a run that ended ``status`` with ``context``; ``cause`` is the
        stored text of why it compensated.

        Raises:
            SagaCompensatedError: the saga was rolled back (status COMPENSATED).
            SagaCompensationFailedError: a compensation was exhausted (status FAILED).
        """
        if status is SagaStatus.COMPENSATED:
            raise SagaCompensatedError(
                f"saga {self.saga_id} ({self.saga_name}) failed and was compensated: {cause}",
                saga_id=self.saga_id,
            ) from self.trigger
        if status is SagaStatus.FAILED:
            assert self.failed is not None, "a run ends FAILED only by an exhausted compensation"
            raise self.failed
        return SagaOutcome(self.saga_id, status, context, self.error(status))

    def compensation_failed(self, error: Exception, stored_cause: str | None) -> None:
        """Record that a compensation was exhausted by ``error``: the run's error names it
        and the cause of the rollback (the live trigger, or ``stored_cause``, the cause an
        earlier runner stored)."""
        trigger = self.trigger
        cause = describe_error(trigger) if trigger is not None else stored_cause
        why = f"; the rollback was triggered by {cause}" if cause else ""
        failed = SagaCompensationFailedError(
            f"saga {self.saga_id} ({self.saga_name}) could not be compensated: "
            f"{describe_error(error)}{why}; it is FAILED and recovery will retry it",
            saga_id=self.saga_id,
            trigger=trigger,
            compensation_error=error,
        )
        failed.__cause__ = error
        self.failed = failed

    def compensation_started(self) -> None:
        """Tell the observers the decision to compensate after :attr:`trigger` is durable."""
        fire(self._hooks.compensation_started, self.saga_id, self.saga_name, self.trigger)

    def taken_over(self) -> SagaConcurrencyError:
        """The error of a runner another one took the saga from."""
        return SagaConcurrencyError(
            f"saga {self.saga_id} was taken over by another runner; this one stops"
        )

    def finished(self, status: SagaStatus) -> None:
        """Log a run that ended ``status`` other than COMPLETED and tell the observers it
        ended."""
        if status is SagaStatus.FAILED:
            failed = self.failed
            logger.error(
                "saga %s (%s) is FAILED: a compensation was exhausted: %r",
                self.saga_id,
                self.saga_name,
                failed.compensation_error if failed is not None else None,
            )
        elif status is SagaStatus.COMPENSATED:
            logger.warning(
                "saga %s (%s) was compensated%s",
                self.saga_id,
                self.saga_name,
                f" after: {self.trigger!r}"
                if self.trigger is not None
                else " (rollback finished by recovery)",
            )
        if self._hooks.saga_finished:
            fire(
                self._hooks.saga_finished, self.saga_id, self.saga_name, status, self.error(status)
            )
