"""Observer hooks: where logging, metrics and tracing attach to a saga's life."""

from __future__ import annotations

import logging
from uuid import UUID

from saga_core._model.status import SagaStatus, StepDirection

logger = logging.getLogger("saga_core.executor")


class SagaObserver:
    """Base for observers passed as ``bootstrap(observers=[...])``; override what you need.

    Every hook is a plain (synchronous) method called on the saga's task, so it must be quick
    and must not raise: an observer's exception is logged and ignored, never allowed to change
    the saga's outcome. ``direction`` tells act from compensate in the step hooks.
    """

    def saga_started(self, saga_id: UUID, saga_name: str, *, resumed: bool) -> None:
        """A saga was created (``resumed=False``) or taken over by recovery (``True``)."""

    def step_started(
        self, saga_id: UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        """An act or compensate call (attempt 1, 2, ...) is about to run."""

    def step_completed(
        self, saga_id: UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        """An act or compensate call returned."""

    def step_failed(
        self,
        saga_id: UUID,
        step_id: str,
        direction: StepDirection,
        attempt: int,
        error: BaseException,
    ) -> None:
        """An act or compensate call raised (it may be retried)."""

    def compensation_started(self, saga_id: UUID, saga_name: str, error: BaseException) -> None:
        """The decision to compensate is durable; ``error`` is what triggered it."""

    def saga_finished(
        self, saga_id: UUID, saga_name: str, status: SagaStatus, error: BaseException | None
    ) -> None:
        """The run ended in COMPLETED, COMPENSATED or FAILED; ``error`` is as in
        ``SagaOutcome.error`` (the step error, or for FAILED the
        ``SagaCompensationFailedError`` that holds both errors)."""


class LoggingObserver(SagaObserver):
    """Logs what needs attention under the ``saga_core.executor`` logger (configured by the
    application, never by the library): a failed step call and the decision to compensate at
    WARNING. (A rolled-back saga is logged at WARNING and a FAILED one at ERROR by the
    executor itself.) Per-step tracing belongs in an observer of your own: it runs on the hot
    path."""

    def step_failed(
        self,
        saga_id: UUID,
        step_id: str,
        direction: StepDirection,
        attempt: int,
        error: BaseException,
    ) -> None:
        logger.warning(
            "saga %s: %s %s failed on attempt %d: %r",
            saga_id,
            direction.value,
            step_id,
            attempt,
            error,
        )

    def compensation_started(self, saga_id: UUID, saga_name: str, error: BaseException) -> None:
        logger.warning("saga %s (%s) is compensating after: %r", saga_id, saga_name, error)
