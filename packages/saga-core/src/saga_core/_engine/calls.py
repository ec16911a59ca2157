"""The step-call layer: one act or compensate of one step, with its retries.

A call resolves the step class, then attempts it until it succeeds or its retry policy gives
up: each attempt is journaled and reported to the observers, bounded by the step's timeout,
and a failed attempt's changes to the context are undone (attempt isolation, see
:mod:`saga_core._engine.isolation`). An act's result is checked here too. The primary of a
``Fallback`` node with a circuit breaker is called through the breaker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, NamedTuple
from uuid import UUID

import anyio

from saga_core._codec.context import ContextCodec
from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    CircuitOpenError,
    DependencyResolutionError,
    InvalidStepResultError,
    SagaContextError,
)
from saga_core._model.fallback import CircuitBreaker
from saga_core._model.policy import RetryPolicy
from saga_core._model.response import Response
from saga_core._model.saga import Node, StepSpec
from saga_core._model.status import StepDirection, StepEvent
from saga_core._model.step import SagaStepHandler, SagaStepResult
from saga_core._storage.protocol import JournalEntry

from .hooks import Hooks, fire
from .isolation import restore_in_place
from .observer import logger
from .resolution import StepResolver


class CallOutcome(NamedTuple):
    """How one call of a step ended (after its retries)."""

    value: Any
    """What the call returned (None when it failed)."""
    error: Exception | None
    """Why the call failed, else None."""
    attempt: int
    """How many attempts it took (0: none was made)."""
    called: bool = True
    """False when the step was never invoked, so it had no effect."""
    returned: bool = False
    """True when the act returned but its result is invalid (``error`` says why): its effect
    is done."""
    refused: bool = False
    """True when a circuit breaker refused to call the step (its circuit is open)."""


class StepCalls:
    """Calls the steps of one saga run, and keeps what the calls change: the context and
    the journal.

    Attempt isolation: after every attempt that failed or returned an invalid result, the
    context is put back, in place, as the last checkpoint stored it (``context_text``), so
    that a retry, the fallback and the compensations see exactly what a run recovered from
    storage would see.
    """

    __slots__ = (
        "_codec",
        "_hooks",
        "_resolver",
        "context",
        "context_text",
        "journal",
        "saga_id",
    )

    def __init__(
        self,
        saga_id: UUID,
        context: Any,
        codec: ContextCodec[Any],
        context_text: str,
        resolver: StepResolver,
        hooks: Hooks,
    ) -> None:
        self.saga_id = saga_id
        self.context = context
        """The saga's context (the caller's object), changed in place by the steps."""
        self.context_text = context_text
        """The context as the last checkpoint stored it."""
        self.journal: list[JournalEntry] = []
        """The entries not written yet."""
        self._codec = codec
        self._resolver = resolver
        self._hooks = hooks

    def encode_context(self, *, strict: bool) -> str:
        """The context as JSON text, for a checkpoint.

        Raises:
            SagaContextError: ``strict`` and the context cannot be encoded (when not
                ``strict``, the last stored text is returned instead).
        """
        try:
            return self._codec.encode(self.context)
        except SagaContextError:
            if strict:
                raise
            return self.context_text

    def written(self, context_text: str) -> None:
        """A checkpoint with ``context_text`` and the journal so far is durable."""
        self.context_text = context_text
        # A new list, not a cleared one: a storage may keep the written list.
        self.journal = []

    def for_saga(self, saga_id: UUID, codec: ContextCodec[Any], context_text: str) -> StepCalls:
        """Step calls for another saga's steps (a child's, compensated by its parent): on its
        context decoded from ``context_text``, with its saga id (so its steps' idempotency
        keys are the child's), and a journal of their own."""
        return StepCalls(
            saga_id, codec.decode(context_text), codec, context_text, self._resolver, self._hooks
        )

    def branch(self, base_text: str) -> StepCalls:
        """Step calls for one branch of a ``Parallel`` group: on a fresh copy of the context
        decoded from ``base_text`` (the group's base), with a journal of their own (the driver
        moves it into this one when the branch ends)."""
        return StepCalls(
            self.saga_id,
            self._codec.decode(base_text),
            self._codec,
            base_text,
            self._resolver,
            self._hooks,
        )

    def restore_context(self) -> None:
        """Undo the changes of an attempt that did not complete: the context becomes, in
        place, what the last checkpoint stored."""
        try:
            restore_in_place(self.context, self._codec.decode(self.context_text))
        except Exception as exc:  # never seen: the text is this codec's own encoding
            logger.error(
                "saga %s: could not restore its context after a failed attempt: %s",
                self.saga_id,
                describe_error(exc),
            )

    def act(self, node: Node, spec: StepSpec) -> Awaitable[CallOutcome]:
        """Call ``spec``'s act (a step of ``node``), through the node's circuit breaker when
        ``spec`` is a primary with one; what it returned is checked (see :meth:`_call`).

        Raises (when awaited):
            DependencyResolutionError: the step class cannot be built (nothing was called).
        """
        breaker = node.breaker
        if breaker is None or spec is not node.primary:
            return self._call(spec, StepDirection.ACT, spec.retry)
        return self._through_breaker(breaker, spec)

    async def _through_breaker(self, breaker: CircuitBreaker, spec: StepSpec) -> CallOutcome:
        outcomes: list[CallOutcome] = []

        async def guarded() -> None:
            outcome = await self._call(spec, StepDirection.ACT, spec.retry)
            outcomes.append(outcome)
            # An act that returned an invalid result did reach its service: not a breaker
            # failure (the saga still compensates).
            if outcome.error is not None and not outcome.returned:
                raise outcome.error

        try:
            await breaker.call(spec.step_id, guarded)
        except DependencyResolutionError:
            raise
        except CircuitOpenError as exc:
            self._journal_failure(spec.step_id, StepDirection.ACT, 0, exc)
            return CallOutcome(None, exc, 0, called=False, refused=True)
        except Exception as exc:
            if not outcomes:
                # The breaker itself failed before calling the step: reported like a failed
                # call, so that a breaker bug is never silent.
                self._journal_failure(spec.step_id, StepDirection.ACT, 0, exc)
                fire(self._hooks.step_failed, self.saga_id, spec.step_id, StepDirection.ACT, 0, exc)
                return CallOutcome(None, exc, 0, called=False)
        if not outcomes:
            # A breaker that returned without calling the step: as if its circuit were open.
            refusal = CircuitOpenError(f"the circuit breaker of {spec.step_id} did not call it")
            return CallOutcome(None, refusal, 0, called=False, refused=True)
        return outcomes[0]

    def compensate(self, spec: StepSpec) -> Awaitable[CallOutcome]:
        """Call ``spec``'s compensate.

        Raises (when awaited):
            DependencyResolutionError: the step class cannot be built (nothing was called).
        """
        return self._call(spec, StepDirection.COMPENSATE, spec.compensation_retry)

    async def _call(
        self, spec: StepSpec, direction: StepDirection, policy: RetryPolicy
    ) -> CallOutcome:
        """Attempt ``spec``'s call in ``direction`` until it succeeds or ``policy`` gives up.
        An act that returns something other than None, a Response or a step result has
        failed (``returned``: its effect is done) and is not retried."""
        try:
            step: SagaStepHandler[Any, Any] = await self._resolver.resolve(spec.cls)
        except Exception as exc:
            error = self._unbuildable(spec, direction, exc)
            if error is exc:
                raise
            raise error from exc
        step.saga_id = self.saga_id
        step.direction = direction
        acting = direction is StepDirection.ACT
        method: Callable[[Any], Any] = step.act if acting else step.compensate
        hooks = self._hooks
        context = self.context
        step_id = spec.step_id
        timeout = spec.timeout
        attempt = 0
        while True:
            attempt += 1
            step.attempt = attempt
            self.journal.append(
                JournalEntry(
                    step_id, direction, StepEvent.STARTED, attempt, datetime.now(timezone.utc)
                )
            )
            if hooks.step_started:
                fire(hooks.step_started, self.saga_id, step_id, direction, attempt)
            try:
                if timeout is None:
                    value = await method(context)
                else:
                    with anyio.fail_after(timeout):
                        value = await method(context)
            except Exception as exc:
                self._journal_failure(step_id, direction, attempt, exc)
                # The failed attempt's changes to the context are discarded (attempt isolation).
                self.restore_context()
                fire(hooks.step_failed, self.saga_id, step_id, direction, attempt, exc)
                if policy.should_retry(attempt, exc):
                    await anyio.sleep(policy.delay_before(attempt + 1))
                    continue
                return CallOutcome(None, exc, attempt)
            self.journal.append(
                JournalEntry(
                    step_id, direction, StepEvent.COMPLETED, attempt, datetime.now(timezone.utc)
                )
            )
            if hooks.step_completed:
                fire(hooks.step_completed, self.saga_id, step_id, direction, attempt)
            if acting and not (value is None or isinstance(value, _RESULT_TYPES)):
                # An act that returned garbage failed: its changes to the context go too.
                self.restore_context()
                return CallOutcome(None, _invalid_result(spec, value), attempt, returned=True)
            return CallOutcome(value, None, attempt)

    def interrupted(self, spec: StepSpec, error: Exception) -> CallOutcome:
        """Record that ``spec``'s act was cancelled mid-attempt by ``error`` (a cancel, the
        deadline): journaled and reported as a failed attempt, its changes to the context
        undone. Returns the outcome of the call."""
        attempt = next(
            (
                entry.attempt
                for entry in reversed(self.journal)
                if entry.step_id == spec.step_id and entry.event is StepEvent.STARTED
            ),
            1,
        )
        self._journal_failure(spec.step_id, StepDirection.ACT, attempt, error)
        self.restore_context()
        fire(self._hooks.step_failed, self.saga_id, spec.step_id, StepDirection.ACT, attempt, error)
        return CallOutcome(None, error, attempt)

    def _unbuildable(
        self, spec: StepSpec, direction: StepDirection, exc: Exception
    ) -> DependencyResolutionError:
        """The error of a step class the resolver could not build, journaled and reported.

        A step that cannot be built is a wiring mistake, not a business failure: the run stops
        (the saga stays as last written, recoverable once fixed) instead of compensating it.
        """
        error = (
            exc
            if isinstance(exc, DependencyResolutionError)
            else DependencyResolutionError(
                f"cannot build step {spec.step_id} ({spec.cls.__qualname__}): {describe_error(exc)}"
            )
        )
        self._journal_failure(spec.step_id, direction, 0, error)
        fire(self._hooks.step_failed, self.saga_id, spec.step_id, direction, 0, error)
        return error

    def _journal_failure(
        self, step_id: str, direction: StepDirection, attempt: int, error: Exception
    ) -> None:
        self.journal.append(
            JournalEntry(
                step_id,
                direction,
                StepEvent.FAILED,
                attempt,
                datetime.now(timezone.utc),
                describe_error(error),
            )
        )


def forward_result(
    spec: StepSpec, value: Any, saga_id: UUID, attempt: int
) -> SagaStepResult[Any, Any]:
    """The result of a step whose ``act`` returned ``value`` (checked already): the step's own
    result object with its identity fields set, or a new one around a Response or None."""
    if not isinstance(value, SagaStepResult):
        return SagaStepResult(
            spec.cls, value, saga_id, spec.step_id, StepDirection.ACT, None, attempt
        )
    value.step_type = spec.cls
    value.saga_id = saga_id
    value.step_id = spec.step_id
    value.direction = StepDirection.ACT
    value.error = None
    value.attempt = attempt
    return value


#: What ``act`` may return besides None (a SagaStepResult subclass too).
_RESULT_TYPES = (Response, SagaStepResult)


def _invalid_result(spec: StepSpec, value: Any) -> InvalidStepResultError:
    return InvalidStepResultError(
        f"{spec.cls.__qualname__}.act returned {type(value).__qualname__}; it must return "
        "self._generate_step_result(response), a Response, or None"
    )
