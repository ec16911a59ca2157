"""``Fallback``: run a fallback step when the primary fails or its circuit is open."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import SagaDefinitionError
from .step import SagaStepHandler, is_step_class

T = TypeVar("T")


@runtime_checkable
class CircuitBreaker(Protocol):
    """What ``Fallback(circuit_breaker=...)`` accepts.

    ``call`` runs ``action`` (the primary step's act, retries included) under the breaker
    kept for ``step_id`` and returns its result or re-raises its exception, counting the
    failure. When the circuit is open it must not call ``action`` and raises
    :class:`~saga_core.CircuitOpenError` instead; the saga then runs the fallback step.
    """

    async def call(self, step_id: str, action: Callable[[], Awaitable[T]]) -> T: ...


@dataclasses.dataclass(frozen=True)
class Fallback:
    """A saga node that runs ``fallback`` when ``step`` fails (or its breaker is open).

    Args:
        step: the primary step class.
        fallback: the step class run instead when the primary raised one of
            ``failure_exceptions`` (any ``Exception`` when empty) or the circuit is open.
        circuit_breaker: optional :class:`CircuitBreaker`; an open circuit skips the primary.
        failure_exceptions: the primary's exceptions that trigger the fallback; any other
            exception fails the node and the saga compensates.

    The branch that ran is recorded durably, so rollback and recovery compensate that branch
    (and the primary as well when its act raised, since it may have had an effect, unless it
    declares ``failed_act_leaves_no_effect``).

    Raises:
        SagaDefinitionError: when a branch is not a step class, both are the same class, or
            the breaker does not implement :class:`CircuitBreaker`.
    """

    step: type[SagaStepHandler[Any, Any]]
    fallback: type[SagaStepHandler[Any, Any]]
    circuit_breaker: CircuitBreaker | None = None
    failure_exceptions: tuple[type[Exception], ...] = ()

    def __post_init__(self) -> None:
        for role in ("step", "fallback"):
            value = getattr(self, role)
            if not is_step_class(value):
                raise SagaDefinitionError(
                    f"Fallback({role}=...) must be a SagaStepHandler subclass that implements "
                    f"act(), got {value!r}"
                )
        if self.step is self.fallback:
            raise SagaDefinitionError(
                f"Fallback step and fallback are the same class ({self.step.__qualname__})"
            )
        if isinstance(self.circuit_breaker, type):
            raise SagaDefinitionError(
                "Fallback(circuit_breaker=...) needs a breaker instance, got the class "
                f"{self.circuit_breaker.__qualname__}; pass an instance: "
                f"{self.circuit_breaker.__name__}(...)"
            )
        if self.circuit_breaker is not None and not isinstance(
            self.circuit_breaker, CircuitBreaker
        ):
            raise SagaDefinitionError(
                "Fallback(circuit_breaker=...) must have an async call(step_id, action) method "
                f"(the CircuitBreaker protocol), got {self.circuit_breaker!r}"
            )
        if not isinstance(self.failure_exceptions, tuple) or not all(
            isinstance(e, type) and issubclass(e, Exception) for e in self.failure_exceptions
        ):
            raise SagaDefinitionError(
                "Fallback(failure_exceptions=...) must be a tuple of Exception subclasses, "
                f"got {self.failure_exceptions!r}"
            )
