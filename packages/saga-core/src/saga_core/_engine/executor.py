"""The executor: drives one saga id forward, and compensates it when a step fails.

One :class:`SagaRun` is one runner of one saga. It writes a checkpoint per step transition
(n + 1 writes for a successful saga of n steps: the creation, then one per step, the last one
also setting COMPLETED), each a compare-and-set on the version it last wrote, so a second
runner of the same saga is refused and can never overwrite a newer state.

The run is advanced one result at a time (:meth:`SagaRun.next_result`) so that
``mediator.stream`` can yield between steps without holding a cancel scope across a yield.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, NamedTuple
from uuid import UUID

import anyio
import anyio.lowlevel

from saga_core._codec.context import ContextCodec
from saga_core._model.error_text import describe_error as describe
from saga_core._model.errors import (
    CircuitOpenError,
    DependencyResolutionError,
    InvalidStepResultError,
    SagaAlreadyExistsError,
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaConcurrencyError,
    SagaContextError,
)
from saga_core._model.outcome import SagaOutcome
from saga_core._model.policy import RetryPolicy
from saga_core._model.response import Response
from saga_core._model.saga import Node, SagaDefinition, StepSpec
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._model.step import SagaStepHandler, SagaStepResult
from saga_core._storage.memory import MemorySagaStorage
from saga_core._storage.protocol import Checkpoint, JournalEntry, NewSaga, SagaStorage

from .hooks import Hooks, fire
from .isolation import restore_in_place
from .observer import logger
from .resolution import StepResolver

_UTC = timezone.utc
_ACT = StepDirection.ACT
_COMPENSATE = StepDirection.COMPENSATE
_RUNNING = SagaStatus.RUNNING
_COMPLETED = SagaStatus.COMPLETED
_COMPENSATING = SagaStatus.COMPENSATING
_COMPENSATED = SagaStatus.COMPENSATED
_FAILED = SagaStatus.FAILED
_STARTED = StepEvent.STARTED
_DONE = StepEvent.COMPLETED
_RAISED = StepEvent.FAILED
_clock = datetime.now

#: Separates a FAILED saga's original cause from its compensation failure in the error text;
#: the failure part starts with :data:`_FAILURE_PREFIX`. (A cause may hold line breaks itself.)
_FAILURE_SEPARATOR = "\n"
_FAILURE_PREFIX = "compensation of "

#: ``_checkpoint(lease_for=...)`` default: renew the lease while the saga runs, else release.
_USUAL_LEASE = -1.0

#: How long an abandoned run may spend handing its lease back (shielded from cancellation).
_RELEASE_TIMEOUT = 5.0


class _Call(NamedTuple):
    value: Any
    error: Exception | None
    attempt: int
    called: bool
    """False when the step was never invoked (its class could not be built), so it had no
    effect to compensate."""


class SagaRun:
    """One runner of one saga id. Build it with :meth:`start` (a new saga) or through
    recovery; then call :meth:`next_result` until it returns None, then :meth:`outcome`."""

    # Slots: attribute access on the runner is part of every step's cost.
    __slots__ = (
        "_codec",
        "_context_text",
        "_error_text",
        "_failed",
        "_fenced",
        "_halted",
        "_hold_seconds",
        "_holding",
        "_hooks",
        "_journal",
        "_lease_seconds",
        "_owner",
        "_resolve_sync",
        "_resolver",
        "_resumed_node",
        "_storage",
        "_trigger",
        "_write_now",
        "applied",
        "context",
        "cursor",
        "definition",
        "saga_id",
        "status",
        "version",
    )

    # Positional-or-keyword: ``start`` passes them positionally, which a class call does
    # without building a dict of keyword arguments (recovery names them).
    def __init__(
        self,
        definition: SagaDefinition,
        saga_id: UUID,
        context: Any,
        codec: ContextCodec[Any],
        storage: SagaStorage,
        resolver: StepResolver,
        hooks: Hooks,
        owner: str,
        lease_seconds: float,
        version: int,
        status: SagaStatus,
        cursor: int,
        applied: tuple[str, ...],
        context_text: str,
        error_text: str | None = None,
        resumed: bool = False,
        hold_seconds: float | None = None,
    ) -> None:
        self.definition = definition
        self.saga_id = saga_id
        self.context = context
        self.status = status
        self.cursor = cursor
        self.applied = applied
        self.version = version
        self._codec = codec
        self._storage = storage
        self._write_now = _synchronous_checkpoint(storage)
        self._resolver = resolver
        self._resolve_sync: Callable[[type[Any]], Any] | None = getattr(
            resolver, "resolve_sync", None
        )
        self._hooks = hooks
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._context_text = context_text
        # A FAILED record's error is "<cause>\n<compensation failure>"; resuming keeps the cause.
        self._error_text = _cause_of(error_text) if error_text else None
        self._journal: list[JournalEntry] = []
        self._trigger: BaseException | None = None
        # Set when a compensation of this run is exhausted (the run ends FAILED).
        self._failed: SagaCompensationFailedError | None = None
        self._halted = False
        self._fenced = False
        # A recovery worker's runs keep their lease this long after a failure (FAILED, or an
        # error) instead of releasing it, so the saga is retried only after a pause.
        self._hold_seconds = hold_seconds
        self._holding = False
        # The node that was in flight when an earlier runner stopped: its primary may have
        # run even if this runner ends up taking the fallback branch.
        self._resumed_node = cursor if resumed and status is _RUNNING else -1

    # --- creation --------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        *,
        definition: SagaDefinition,
        saga_id: UUID,
        context: Any,
        codec: ContextCodec[Any],
        storage: SagaStorage,
        resolver: StepResolver,
        hooks: Hooks,
        owner: str,
        lease_seconds: float,
    ) -> SagaRun:
        """Validate and store a new saga (durable before any step runs) and return its runner.

        Raises:
            SagaContextError: the context cannot be stored losslessly (nothing written).
            SagaAlreadyExistsError: storage already holds ``saga_id`` (nothing run).
            SagaStorageError: the storage failed (nothing run).
        """
        text = codec.encode(context)
        new = NewSaga(
            saga_id,
            definition.name,
            text,
            owner,
            lease_seconds,
            (),
            definition.next_step_ids[0],
            definition.version,
        )
        try:
            create_now = _synchronous_create(storage)
            if create_now is None:
                await storage.create(new)
            else:
                create_now(new)
        except SagaAlreadyExistsError as exc:
            raise SagaAlreadyExistsError(
                f"saga {saga_id} already exists in storage, so it was not started again "
                "(a saga id runs once): resume it with recover_saga, or start with a new id"
            ) from exc
        if hooks.saga_started:
            fire(hooks.saga_started, saga_id, definition.name, resumed=False)
        return cls(
            definition,
            saga_id,
            context,
            codec,
            storage,
            resolver,
            hooks,
            owner,
            lease_seconds,
            1,  # version
            _RUNNING,
            0,  # cursor
            (),  # applied
            text,  # context_text
        )

    # --- driving ---------------------------------------------------------------------------

    def next_result(self) -> Awaitable[SagaStepResult[Any, Any] | None]:
        """Run the next step (or the next compensation); await it for its result, None when
        the saga has reached the end of this run.

        (A plain method returning the step's coroutine: one coroutine less per step.)

        Raises:
            SagaConcurrencyError: another runner took the saga over; nothing more is written.
            SagaStorageError: a checkpoint failed and the saga could not be rolled back
                durably; it stays as last written, for recovery.
        """
        if self._fenced:
            # Taken over (a lease renewal found another owner): not one more step.
            raise SagaConcurrencyError(
                f"saga {self.saga_id} was taken over by another runner; this one stops"
            )
        status = self.status
        if status is _RUNNING:
            if self.cursor < len(self.definition.nodes):
                return self._forward()
            return self._finish_with(_COMPLETED)
        if (status is _COMPENSATING or status is _FAILED) and not self._halted:
            if self.applied:
                return self._compensate_next()
            return self._finish_with(_COMPENSATED)
        return _nothing()

    async def _finish_with(self, status: SagaStatus) -> None:
        """Write the terminal status of a run that has nothing left to do."""
        if status is _COMPLETED:
            await self._checkpoint(_COMPLETED)
        else:
            await self._checkpoint(_COMPENSATED, error=self._error_text, strict=False)
            self._finished()

    async def run_to_end(self) -> None:
        """Call :meth:`next_result` until the run ends; if it is interrupted (cancelled,
        an error), hand the saga back to recovery with :meth:`abandon` and re-raise."""
        try:
            while await self.next_result() is not None:
                pass
        except Exception:
            await self.abandon(hold_seconds=self._hold_seconds)
            raise
        except BaseException:
            await self.abandon()
            raise

    def fence(self) -> None:
        """Mark this runner as taken over (its lease is someone else's now): it writes nothing
        more, and its next checkpoint would be refused anyway."""
        self._fenced = True

    @property
    def renewable(self) -> bool:
        """True while a lease keeper may renew this run's lease: not once it finished,
        was fenced, or stepped back holding its lease for a pause."""
        return not (self._fenced or self._holding or self._halted or self.status.is_terminal)

    @property
    def fenced(self) -> bool:
        """True once another runner took the saga over."""
        return self._fenced

    def outcome(self) -> SagaOutcome[Any]:
        """The run's outcome once :meth:`next_result` returned None.

        Raises:
            SagaCompensatedError: the saga was rolled back (status COMPENSATED).
            SagaCompensationFailedError: a compensation was exhausted (status FAILED).
        """
        if self.status is _COMPENSATED:
            raise SagaCompensatedError(
                f"saga {self.saga_id} ({self.definition.name}) failed and was compensated: "
                f"{self._error_text}",
                saga_id=self.saga_id,
            ) from self._trigger
        if self.status is _FAILED:
            assert self._failed is not None, "a run ends FAILED only by an exhausted compensation"
            raise self._failed
        return SagaOutcome(self.saga_id, self.status, self.context, self.error)

    @property
    def error(self) -> BaseException | None:
        """Why the saga did not complete: the step error that made it compensate, or once
        FAILED the :class:`SagaCompensationFailedError` that holds that error and the
        exhausted compensation's."""
        return self._failed if self.status is _FAILED else self._trigger

    def _compensation_failed(self, error: Exception) -> SagaCompensationFailedError:
        """The error of a run whose compensation was exhausted by ``error``: it names that
        error and the cause of the rollback (the live trigger, or the cause an earlier runner
        stored)."""
        cause = describe(self._trigger) if self._trigger is not None else self._error_text
        why = f"; the rollback was triggered by {cause}" if cause else ""
        failed = SagaCompensationFailedError(
            f"saga {self.saga_id} ({self.definition.name}) could not be compensated: "
            f"{describe(error)}{why}; it is FAILED and recovery will retry it",
            saga_id=self.saga_id,
            trigger=self._trigger,
            compensation_error=error,
        )
        failed.__cause__ = error
        return failed

    async def abandon(self, *, hold_seconds: float | None = None) -> None:
        """Hand the saga back to recovery after the run was interrupted (cancelled, the
        stream closed early, the process shutting down, an error): write the journal so far
        and release the lease — or keep it ``hold_seconds`` more, so that recovery waits that
        long — shielded and bounded in time. The context written is the last checkpoint's: an
        attempt that was interrupted did not complete. Best effort: if it fails the lease
        simply expires. Does nothing once the saga is finished, FAILED, or this runner was
        fenced."""
        if self._fenced or self.status.is_terminal or self._halted:
            return
        # An interrupted attempt did not complete: its changes are not written, as a run
        # recovered from the last checkpoint would not see them either.
        self._restore_context()
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
            try:
                await self._checkpoint(
                    self.status, error=self._error_text, strict=False, lease_for=hold_seconds
                )
            except Exception as exc:  # the lease will expire on its own
                logger.info("saga %s: could not release its lease: %r", self.saga_id, exc)

    # --- forward ---------------------------------------------------------------------------

    async def _forward(self) -> SagaStepResult[Any, Any]:
        node = self.definition.nodes[self.cursor]
        if node.fallback is None:
            spec = node.primary
            call = await self._call(spec, _ACT, spec.retry)
            ids = (spec.step_id,) if call.error is None else _applied_ids(spec, call)
        else:
            spec, call, ids = await self._forward_fallback(node)
        error: Exception | None = call.error
        value = call.value
        # What act returned must be a result, a Response or None: checked before anything is
        # written (the result object itself is built once the checkpoint is durable).
        if error is None and not (
            value is None or type(value) is SagaStepResult or isinstance(value, _RESULT_TYPES)
        ):
            error = _invalid_result(spec, value)
            self._restore_context()  # a call that returned garbage failed: its changes go too
        applied = self.applied
        if len(ids) == 1 and ids[0] not in applied:  # the common case, without a loop
            self.applied = applied + ids
        else:
            for step_id in ids:
                # A resumed step may already be listed (an earlier runner recorded it as
                # applied before its checkpoint failed); compensating it twice would be wrong.
                if step_id not in applied:
                    applied += (step_id,)
            self.applied = applied
        if error is not None:
            return await self._begin_compensation(spec, error, call.attempt)
        self.cursor += 1
        # _checkpoint inlined (one coroutine less per step).
        try:
            checkpoint = self._prepare(
                _COMPLETED if self.cursor == len(self.definition.nodes) else _RUNNING,
                None,
                True,
                _USUAL_LEASE,
            )
            write_now = self._write_now
            if write_now is None:
                await self._storage.checkpoint(checkpoint)
            else:
                write_now(checkpoint)
        except SagaConcurrencyError:
            self._fenced = True
            raise
        except Exception as exc:
            # The step ran but its checkpoint failed: it is in `applied`, so it is rolled back
            # with the others if the decision to compensate can be written.
            self.cursor -= 1
            return await self._begin_compensation(spec, exc, call.attempt)
        self._written(checkpoint)
        if self.status is _COMPLETED:
            self._finished()
        return _forward_result(spec, value, self.saga_id, call.attempt)

    async def _forward_fallback(self, node: Node) -> tuple[StepSpec, _Call, tuple[str, ...]]:
        primary = node.primary
        fallback = node.fallback
        assert fallback is not None
        primary_call: _Call | None = None
        if node.breaker is None:
            primary_call = await self._call(primary, _ACT, primary.retry)
        else:
            holder: list[_Call] = []

            async def guarded() -> None:
                outcome = await self._call(primary, _ACT, primary.retry)
                holder.append(outcome)
                if outcome.error is not None:
                    raise outcome.error

            try:
                await node.breaker.call(primary.step_id, guarded)
            except DependencyResolutionError:
                raise
            except CircuitOpenError as exc:
                self._journal.append(
                    JournalEntry(primary.step_id, _ACT, StepEvent.FAILED, 0, _now(), describe(exc))
                )
            except Exception as exc:
                if not holder:
                    # The breaker itself failed before calling the primary: recorded and
                    # reported like a failed primary call, so a breaker bug is never silent.
                    self._journal.append(
                        JournalEntry(primary.step_id, _ACT, _RAISED, 0, _now(), describe(exc))
                    )
                    fire(self._hooks.step_failed, self.saga_id, primary.step_id, _ACT, 0, exc)
                    holder.append(_Call(None, exc, 0, False))
            if holder:
                primary_call = holder[0]
        resumed = self._resumed_node == self.cursor
        if primary_call is not None and primary_call.error is None:
            # After a crash inside this node either branch may have run; both are rolled back.
            ids = (primary.step_id, fallback.step_id) if resumed else (primary.step_id,)
            return primary, primary_call, ids
        primary_ids: tuple[str, ...] = ()
        if not primary.failed_act_leaves_no_effect and (
            (primary_call is not None and primary_call.called) or resumed
        ):
            primary_ids = (primary.step_id,)
        if primary_call is not None and primary_call.error is not None:
            error = primary_call.error
            if node.failure_exceptions and not isinstance(error, node.failure_exceptions):
                return primary, primary_call, primary_ids
        call = await self._call(fallback, _ACT, fallback.retry)
        return fallback, call, primary_ids + _applied_ids(fallback, call)

    async def _begin_compensation(
        self, spec: StepSpec, error: Exception, attempt: int
    ) -> SagaStepResult[Any, Any]:
        self._trigger = error
        self._error_text = describe(error)
        status = _COMPENSATING if self.applied else _COMPENSATED
        # Durable before the first compensation runs; if this write fails the saga stays as
        # last written (RUNNING) and recovery runs the step again.
        await self._checkpoint(status, error=self._error_text, strict=False)
        fire(self._hooks.compensation_started, self.saga_id, self.definition.name, error)
        if status is _COMPENSATED:
            self._finished()
        return SagaStepResult(spec.cls, None, self.saga_id, spec.step_id, _ACT, error, attempt)

    # --- compensation ----------------------------------------------------------------------

    async def _compensate_next(self) -> SagaStepResult[Any, Any]:
        spec = self.definition.steps_by_id[self.applied[-1]]
        # A compensation and its checkpoint are never interrupted halfway: cancellation is
        # held off until both are done, then delivered below.
        with anyio.CancelScope(shield=True):
            call = await self._call(spec, _COMPENSATE, spec.compensation_retry)
            if call.error is None:
                remaining = self.applied[:-1]
                self.applied = remaining
                await self._checkpoint(
                    _COMPENSATING if remaining else _COMPENSATED,
                    error=self._error_text,
                    strict=False,
                )
            else:
                self._failed = self._compensation_failed(call.error)
                self._halted = True
                failure = f"{_FAILURE_PREFIX}{spec.step_id} failed: {describe(call.error)}"
                await self._checkpoint(
                    _FAILED,
                    # The original cause stays first, so that it survives a later recovery.
                    error=f"{self._error_text}{_FAILURE_SEPARATOR}{failure}"
                    if self._error_text
                    else failure,
                    strict=False,
                    lease_for=self._hold_seconds,
                )
        if self.status is not _COMPENSATING:
            self._finished()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return SagaStepResult(
            spec.cls, None, self.saga_id, spec.step_id, _COMPENSATE, call.error, call.attempt
        )

    # --- one step call ---------------------------------------------------------------------

    async def _call(self, spec: StepSpec, direction: StepDirection, policy: RetryPolicy) -> _Call:
        journal = self._journal
        hooks = self._hooks
        saga_id = self.saga_id
        step_id = spec.step_id
        try:
            resolve_sync = self._resolve_sync
            step: SagaStepHandler[Any, Any] = (
                resolve_sync(spec.cls)
                if resolve_sync is not None
                else await self._resolver.resolve(spec.cls)
            )
        except Exception as exc:
            # A step that cannot be built is a wiring mistake, not a business failure: the
            # call stops the run (the saga stays as last written, recoverable once fixed)
            # instead of compensating it.
            error = (
                exc
                if isinstance(exc, DependencyResolutionError)
                else DependencyResolutionError(
                    f"cannot build step {step_id} ({spec.cls.__qualname__}): {describe(exc)}"
                )
            )
            journal.append(
                JournalEntry(step_id, direction, StepEvent.FAILED, 0, _now(), describe(error))
            )
            fire(hooks.step_failed, saga_id, step_id, direction, 0, error)
            if error is exc:
                raise
            raise error from exc
        step.saga_id = saga_id
        step._direction = direction
        method: Callable[[Any], Any] = step.act if direction is _ACT else step.compensate
        timeout = spec.timeout
        attempt = 0
        while True:
            attempt += 1
            step.attempt = attempt
            journal.append(JournalEntry(step_id, direction, _STARTED, attempt, _clock(_UTC)))
            if hooks.step_started:
                fire(hooks.step_started, saga_id, step_id, direction, attempt)
            try:
                if timeout is None:
                    value = await method(self.context)
                else:
                    with anyio.fail_after(timeout):
                        value = await method(self.context)
            except Exception as exc:
                journal.append(
                    JournalEntry(step_id, direction, _RAISED, attempt, _clock(_UTC), describe(exc))
                )
                # The failed attempt's changes to the context are discarded (attempt isolation).
                self._restore_context()
                fire(hooks.step_failed, saga_id, step_id, direction, attempt, exc)
                if policy.should_retry(attempt, exc):
                    await anyio.sleep(policy.delay_before(attempt + 1))
                    continue
                return _Call(None, exc, attempt, True)
            journal.append(JournalEntry(step_id, direction, _DONE, attempt, _clock(_UTC)))
            if hooks.step_completed:
                fire(hooks.step_completed, saga_id, step_id, direction, attempt)
            return _Call(value, None, attempt, True)

    # --- checkpoints -----------------------------------------------------------------------

    async def _checkpoint(
        self,
        status: SagaStatus,
        *,
        error: str | None = None,
        strict: bool = True,
        lease_for: float | None = _USUAL_LEASE,
    ) -> None:
        """Write the runner's state as one compare-and-set checkpoint.

        ``strict=False`` keeps the last stored context when the current one cannot be encoded
        (a rollback must not be blocked by a context a failed step left unstorable). By
        default the lease is renewed for RUNNING/COMPENSATING and released otherwise;
        ``lease_for`` releases it (None) or keeps it that many seconds instead.
        """
        checkpoint = self._prepare(status, error, strict, lease_for)
        # (The same three lines as in _forward, which inlines them on the hot path.)
        try:
            write_now = self._write_now
            if write_now is None:
                await self._storage.checkpoint(checkpoint)
            else:
                write_now(checkpoint)
        except SagaConcurrencyError:
            # Another runner owns the saga now: this one writes nothing more.
            self._fenced = True
            raise
        self._written(checkpoint)

    def _restore_context(self) -> None:
        """Undo a failed attempt's changes: the context becomes, in place, what the last
        checkpoint stored (see :mod:`saga_core._engine.isolation`)."""
        try:
            restore_in_place(self.context, self._codec.decode(self._context_text))
        except Exception as exc:  # never seen: the text is this codec's own encoding
            logger.error(
                "saga %s: could not restore its context after a failed attempt: %s",
                self.saga_id,
                describe(exc),
            )

    def _prepare(
        self, status: SagaStatus, error: str | None, strict: bool, lease_for: float | None
    ) -> Checkpoint:
        """The checkpoint that writes the runner's state with ``status`` (see _checkpoint).

        Raises:
            SagaContextError: ``strict`` and the context cannot be encoded.
        """
        try:
            text = self._codec.encode(self.context)
        except SagaContextError:
            if strict:
                raise
            text = self._context_text
        if lease_for == _USUAL_LEASE:
            lease_for = (
                self._lease_seconds if status is _RUNNING or status is _COMPENSATING else None
            )
        else:
            # Stepping back: from now on nobody may renew this lease (see `renewable`).
            self._holding = True
        lease = lease_for is not None
        return Checkpoint(
            self.saga_id,
            self.version,
            status,
            self.cursor,
            self.applied,
            text,
            self._journal,
            error,
            self._owner if lease else None,
            lease_for,
            self.definition.next_step_ids[self.cursor],
        )

    def _written(self, checkpoint: Checkpoint) -> None:
        """Take ``checkpoint`` as durable: the runner's state is now the stored one."""
        # Rebinding (not clearing) keeps the written list intact for a storage holding it.
        self._journal = []
        self.version += 1
        self.status = checkpoint.status
        self._context_text = checkpoint.context

    def _finished(self) -> None:
        status = self.status
        if status is not _COMPLETED:  # what needs attention is logged, whoever observes
            if status is _FAILED:
                failed = self._failed
                logger.error(
                    "saga %s (%s) is FAILED: a compensation was exhausted: %r",
                    self.saga_id,
                    self.definition.name,
                    failed.compensation_error if failed is not None else None,
                )
            else:
                logger.warning(
                    "saga %s (%s) was compensated%s",
                    self.saga_id,
                    self.definition.name,
                    f" after: {self._trigger!r}"
                    if self._trigger is not None
                    else " (rollback finished by recovery)",
                )
        if self._hooks.saga_finished:
            fire(
                self._hooks.saga_finished,
                self.saga_id,
                self.definition.name,
                self.status,
                self.error,
            )


async def _nothing() -> None:
    return None


def _cause_of(error_text: str) -> str:
    """The cause part of a stored error: a FAILED record's error is ``"<cause>\n<failure>"``,
    and the cause may itself span several lines."""
    cause, separator, _ = error_text.rpartition(_FAILURE_SEPARATOR + _FAILURE_PREFIX)
    return cause if separator else error_text


def _synchronous_checkpoint(storage: SagaStorage) -> Callable[[Checkpoint], None] | None:
    """The memory storage's checkpoint as a plain call, else None.

    ``MemorySagaStorage.checkpoint`` never awaits: it only calls its synchronous critical
    section, so calling that directly behaves the same and saves a coroutine per step. A
    subclass that overrides ``checkpoint`` is called through it, as any other storage.
    """
    if isinstance(storage, MemorySagaStorage) and (
        type(storage).checkpoint is MemorySagaStorage.checkpoint
    ):
        return storage._checkpoint
    return None


def _synchronous_create(storage: SagaStorage) -> Callable[[NewSaga], None] | None:
    """The memory storage's create as a plain call, else None (as _synchronous_checkpoint)."""
    if isinstance(storage, MemorySagaStorage) and type(storage).create is MemorySagaStorage.create:
        return storage._create
    return None


def _now() -> datetime:
    return datetime.now(_UTC)


def _applied_ids(spec: StepSpec, call: _Call) -> tuple[str, ...]:
    """The step's id if its act may have had an effect: it completed, or it was called and
    raised, unless the step declares that a failed act leaves no effect."""
    if call.error is None or (call.called and not spec.failed_act_leaves_no_effect):
        return (spec.step_id,)
    return ()


#: What ``act`` may return besides None (a SagaStepResult subclass too).
_RESULT_TYPES = (Response, SagaStepResult)


def _invalid_result(spec: StepSpec, value: Any) -> InvalidStepResultError:
    return InvalidStepResultError(
        f"{spec.cls.__qualname__}.act returned {type(value).__qualname__}; it must return "
        "self._generate_step_result(response), a Response, or None"
    )


def _forward_result(
    spec: StepSpec, value: Any, saga_id: UUID, attempt: int
) -> SagaStepResult[Any, Any]:
    """The forward result of a step whose ``act`` returned ``value`` (checked already): the
    step's own result object, with its identity fields set, or a new one around a Response
    or None."""
    if not isinstance(value, SagaStepResult):
        return SagaStepResult(spec.cls, value, saga_id, spec.step_id, _ACT, None, attempt)
    result = value
    result.step_type = spec.cls
    result.saga_id = saga_id
    result.step_id = spec.step_id
    result.direction = _ACT
    result.error = None
    result.attempt = attempt
    return result
