"""Step handlers (``SagaStepHandler``) and what a step run produces (``SagaStepResult``)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from .errors import SagaDefinitionError
from .policy import RetryPolicy
from .status import StepDirection

Ctx = TypeVar("Ctx")
Resp = TypeVar("Resp")


@dataclasses.dataclass(slots=True)
class SagaStepResult(Generic[Ctx, Resp]):
    """What ``mediator.stream`` yields for each finished step call.

    ``direction`` tells a forward result (``StepDirection.ACT``) from a compensation result
    (``StepDirection.COMPENSATE``); ``error`` is set when the call failed (the saga then
    compensates, and the stream ends by raising).
    """

    step_type: type[SagaStepHandler[Ctx, Resp]]
    """The step class that ran."""
    response: Resp | None
    """What ``act`` returned; ``None`` for compensations and failures."""
    saga_id: UUID | None = None
    step_id: str = ""
    direction: StepDirection = StepDirection.ACT
    error: BaseException | None = None
    """The exception of a failed call, else ``None``."""
    attempt: int = 1
    """How many calls it took (retries included)."""

    @property
    def is_compensation(self) -> bool:
        """True for the result of a ``compensate`` call."""
        return self.direction is StepDirection.COMPENSATE

    @property
    def failed(self) -> bool:
        """True when the call raised (after its retries)."""
        return self.error is not None


class SagaStepHandler(Generic[Ctx, Resp]):
    """Base for saga steps: ``act`` does the forward work, ``compensate`` undoes it.

    Subclass it as ``class ReserveInventory(SagaStepHandler[OrderContext, Reserved])``. The
    class is built per call by the saga's container, so its ``__init__`` may ask for services
    by type. ``act`` may change the context (it is checkpointed after the step) and returns
    ``self._generate_step_result(response)``, a bare ``Response``, or ``None``.
    ``compensate`` does nothing unless overridden.

    Class attributes a step may set:

    * ``name`` — a stable step id; default ``"<module>.<qualified class name>"``. The id is
      what storage records, so set it before renaming or moving a class with sagas in flight.
    * ``retry`` / ``compensation_retry`` — :class:`RetryPolicy` for act / compensate
      (default: the saga's).
    * ``timeout`` — seconds allowed for one act or compensate call; a timeout is a failure.
    * ``failed_act_leaves_no_effect`` — set True when an ``act`` that raised is known to have
      changed nothing, so its compensation is skipped on rollback.

    While a call runs, ``self.saga_id``, ``self.step_id``, ``self.direction``, ``self.attempt``
    and ``self.idempotency_key`` tell which saga, step, direction and attempt this is.
    """

    name: ClassVar[str | None] = None
    step_id: ClassVar[str] = ""
    retry: ClassVar[RetryPolicy | None] = None
    compensation_retry: ClassVar[RetryPolicy | None] = None
    timeout: ClassVar[float | None] = None
    failed_act_leaves_no_effect: ClassVar[bool] = False

    # Set by the engine on each instance before it calls act or compensate.
    saga_id: UUID
    attempt: int = 1
    direction: StepDirection = StepDirection.ACT
    """Whether the current call is ``act`` or ``compensate``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        explicit = cls.__dict__.get("name")
        if explicit is not None and (not isinstance(explicit, str) or not explicit.strip()):
            raise SagaDefinitionError(
                f"{cls.__qualname__}.name must be a non-empty string, got {explicit!r}"
            )
        # Only a name written on this very class counts: a subclass must not inherit its
        # parent's id, or the two would collide in one saga.
        cls.step_id = explicit or f"{cls.__module__}.{cls.__qualname__}"
        for method in ("act", "compensate"):
            _check_coroutine_method(cls, method)
        timeout = cls.__dict__.get("timeout")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise SagaDefinitionError(
                f"{cls.__qualname__}.timeout must be a positive number of seconds, got {timeout!r}"
            )

    async def act(self, context: Ctx) -> SagaStepResult[Ctx, Resp] | Resp | None:
        """Do the step's forward work; may change ``context``. Must be overridden."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement act()")

    async def compensate(self, context: Ctx) -> None:
        """Undo what ``act`` did. The default does nothing."""

    def _generate_step_result(self, response: Resp) -> SagaStepResult[Ctx, Resp]:
        """Wrap ``response`` as this step's result (what ``act`` usually returns)."""
        # The engine fills in the saga id, step id, direction and attempt when act returns.
        return SagaStepResult(type(self), response)

    @property
    def idempotency_key(self) -> str:
        """``"<saga id>:<step id>:<act|compensate>"``: the same on every retry and after
        recovery, so a remote service can deduplicate repeated calls."""
        return f"{self.saga_id}:{self.step_id}:{self.direction.value}"


def _check_coroutine_method(cls: type[Any], name: str) -> None:
    """Refuse an ``act``/``compensate`` written on ``cls`` that is a plain ``def`` (or an
    async generator): the executor awaits it, so the mistake would otherwise surface only at
    run time, as a failed step that rolls the saga back.

    A plain function that wraps a coroutine function (a decorator with ``functools.wraps``)
    is accepted: calling it returns the coroutine.
    """
    method = cls.__dict__.get(name)
    if method is None or not inspect.isfunction(method):
        return  # inherited, or a callable object whose kind cannot be told without calling it
    candidate: Any = method
    while candidate is not None:
        if inspect.iscoroutinefunction(candidate):
            return
        candidate = getattr(candidate, "__wrapped__", None)
    kind = "an async generator" if inspect.isasyncgenfunction(method) else "a plain function"
    raise SagaDefinitionError(
        f"{cls.__qualname__}.{name} is {kind}; the executor awaits it: write it as "
        f"`async def {name}(self, context)`"
    )


def context_type_of(step: type[SagaStepHandler[Any, Any]]) -> type[Any] | None:
    """The context class a step declares through ``SagaStepHandler[Ctx, ...]``, or None when
    it is left generic."""
    for klass in step.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, SagaStepHandler):
                args = typing.get_args(base)
                # typing.Any is a class on 3.11+, but it declares no context type.
                if args and isinstance(args[0], type) and args[0] is not Any:
                    return args[0]
    return None


def is_step_class(obj: object) -> bool:
    """True for a concrete ``SagaStepHandler`` subclass that implements ``act``."""
    return (
        isinstance(obj, type)
        and issubclass(obj, SagaStepHandler)
        and obj is not SagaStepHandler
        and obj.act is not SagaStepHandler.act
    )
