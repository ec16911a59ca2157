"""How a saga run ended, typed by the saga's context."""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar
from uuid import UUID

from .status import SagaStatus

ContextT = TypeVar("ContextT")


@dataclasses.dataclass(frozen=True, slots=True)
class SagaOutcome(Generic[ContextT]):
    """How a saga run ended: returned by ``SagaMediator.run``, ``recover_saga`` and
    ``RecoveryWorker.recover``. ``outcome.context`` has the saga's context type."""

    saga_id: UUID
    status: SagaStatus
    context: ContextT
    error: BaseException | None
    """Why the saga did not complete: the step error that made it compensate (COMPENSATED), or
    the :class:`~saga_core.SagaCompensationFailedError` holding that error and the exhausted
    compensation's (FAILED); ``None`` for COMPLETED."""
