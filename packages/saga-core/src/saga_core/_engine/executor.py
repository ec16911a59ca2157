"""The driver: one :class:`SagaRun` runs one saga id for one runner.

It asks the state machine (:mod:`saga_core._engine.transitions`) what to do, performs the
writes through the storage protocol and the calls through the step-call layer
(:mod:`saga_core._engine.calls`), and feeds back what happened. Every checkpoint is a
compare-and-set on the version this runner last wrote, so a second runner of the same saga
is refused and can never overwrite a newer state.

The run is advanced one result at a time (:meth:`SagaRun.next_result`) so that
``mediator.stream`` can yield between steps without holding a cancel scope across a yield.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
import anyio.lowlevel

from saga_core._codec.context import ContextCodec
from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    SagaAlreadyExistsError,
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaConcurrencyError,
)
from saga_core._model.outcome import SagaOutcome
from saga_core._model.saga import SagaDefinition
from saga_core._model.status import SagaStatus, StepDirection
from saga_core._model.step import SagaStepResult
from saga_core._storage.protocol import Checkpoint, NewSaga, SagaStorage

from . import transitions as machine
from .calls import CallOutcome, StepCalls, forward_result
from .hooks import Hooks, fire
from .observer import logger
from .resolution import StepResolver

#: How long an abandoned run may spend handing its lease back (shielded from cancellation).
_RELEASE_TIMEOUT = 5.0


class SagaRun:
    """One runner of one saga id. Build it with :meth:`start` (a new saga) or through
    recovery; then call :meth:`next_result` until it returns None, then :meth:`outcome`."""

    __slots__ = (
        "_calls",
        "_failed",
        "_hold_seconds",
        "_hooks",
        "_lease_seconds",
        "_owner",
        "_state",
        "_storage",
        "_trigger",
        "context",
        "definition",
        "saga_id",
        "version",
    )

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
        # The caller's object: the steps change it in place, and attempt isolation restores
        # it in place, so it stays the same object for the whole run.
        self.context = context
        self.version = version  # the stored version this runner last wrote (or claimed)
        self._storage = storage
        self._hooks = hooks
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._calls = StepCalls(saga_id, context, codec, context_text, resolver, hooks)
        self._state = (
            machine.resumed(status, cursor, applied, error_text)
            if resumed
            else machine.RunState(status, cursor, applied, error_text)
        )
        self._trigger: BaseException | None = None
        # Set when a compensation of this run is exhausted (the run ends FAILED).
        self._failed: SagaCompensationFailedError | None = None
        # A recovery worker's runs keep their lease this long after a failure (FAILED, or an
        # error) instead of releasing it, so the saga is retried only after a pause.
        self._hold_seconds = hold_seconds

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
        new = machine.start()
        write = new.write
        assert write is not None, "a new saga is written before it runs"
        try:
            await storage.create(
                NewSaga(
                    saga_id,
                    definition.name,
                    text,
                    owner,
                    lease_seconds,
                    (),  # journal
                    definition.next_step_ids[write.cursor],
                    definition.version,
                )
            )
        except SagaAlreadyExistsError as exc:
            raise SagaAlreadyExistsError(
                f"saga {saga_id} already exists in storage, so it was not started again "
                "(a saga id runs once): resume it with recover_saga, or start with a new id"
            ) from exc
        if hooks.saga_started:
            fire(hooks.saga_started, saga_id, definition.name, resumed=False)
        created = machine.transition(definition.nodes, new, machine.WRITTEN)
        run = cls(
            definition=definition,
            saga_id=saga_id,
            context=context,
            codec=codec,
            storage=storage,
            resolver=resolver,
            hooks=hooks,
            owner=owner,
            lease_seconds=lease_seconds,
            version=1,
            status=created.status,
            cursor=created.cursor,
            applied=created.applied,
            context_text=text,
        )
        run._state = created  # created, with its first call named
        return run

    # --- the runner's state ------------------------------------------------------------------

    @property
    def status(self) -> SagaStatus:
        """The saga's status as last written."""
        return self._state.status

    @property
    def cursor(self) -> int:
        """The node to run next."""
        return self._state.cursor

    @property
    def applied(self) -> tuple[str, ...]:
        """The step ids whose act may have had an effect, in order of application."""
        return self._state.applied

    @property
    def renewable(self) -> bool:
        """True while a lease keeper may renew this run's lease: not once it finished,
        was fenced, or stepped back (handed the saga back, or ended FAILED)."""
        state = self._state
        return not (state.fenced or state.halted or state.status.is_terminal)

    @property
    def fenced(self) -> bool:
        """True once another runner took the saga over."""
        return self._state.fenced

    def fence(self) -> None:
        """Mark this runner as taken over (its lease is someone else's now): it writes nothing
        more."""
        self._feed(machine.LEASE_LOST)

    # --- driving ---------------------------------------------------------------------------

    async def next_result(self) -> SagaStepResult[Any, Any] | None:
        """Run the next step (or the next compensation) and return its result; None when
        the saga has reached the end of this run.

        Raises:
            SagaConcurrencyError: another runner took the saga over; nothing more is written.
            DependencyResolutionError: a step class cannot be built; the saga stays as last
                written, for recovery.
            SagaStorageError: a checkpoint failed and the saga could not be rolled back
                durably; it stays as last written, for recovery.
        """
        if self._state.fenced:
            raise self._taken_over()
        state = self._state
        if state.call is None and state.write is None:
            state = self._feed(machine.ADVANCE)  # nothing named yet: ask what comes next
        call = state.call
        if isinstance(call, machine.Act):
            return await self._act(call)
        if isinstance(call, machine.Compensate):
            return await self._compensate(call)
        write = state.write
        if write is not None and write.kind == "finish":
            # Nothing left to call: write how the run ends.
            await self._perform(write)
            self._finished()
        return None

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

    async def abandon(self, *, hold_seconds: float | None = None) -> None:
        """Hand the saga back to recovery after the run was interrupted (cancelled, the
        stream closed early, the process shutting down, an error): write the journal so far
        and release the lease — or keep it ``hold_seconds`` more, so that recovery waits that
        long — shielded and bounded in time. The context written is the last checkpoint's: an
        attempt that was interrupted did not complete. Best effort: if it fails the lease
        simply expires. Does nothing once the saga is finished, FAILED, or this runner was
        fenced."""
        write = self._feed(machine.Interrupted(pause=hold_seconds is not None)).write
        if write is None:
            return
        # An interrupted attempt did not complete: its changes are not written, as a run
        # recovered from the last checkpoint would not see them either.
        self._calls.restore_context()
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
            try:
                await self._perform(write, hold_seconds=hold_seconds)
            except Exception as exc:  # the lease will expire on its own
                logger.info("saga %s: could not release its lease: %r", self.saga_id, exc)

    # --- outcome ---------------------------------------------------------------------------

    def outcome(self) -> SagaOutcome[Any]:
        """The run's outcome once :meth:`next_result` returned None.

        Raises:
            SagaCompensatedError: the saga was rolled back (status COMPENSATED).
            SagaCompensationFailedError: a compensation was exhausted (status FAILED).
        """
        status = self._state.status
        if status is SagaStatus.COMPENSATED:
            raise SagaCompensatedError(
                f"saga {self.saga_id} ({self.definition.name}) failed and was compensated: "
                f"{self._state.error}",
                saga_id=self.saga_id,
            ) from self._trigger
        if status is SagaStatus.FAILED:
            assert self._failed is not None, "a run ends FAILED only by an exhausted compensation"
            raise self._failed
        return SagaOutcome(self.saga_id, status, self.context, self.error)

    @property
    def error(self) -> BaseException | None:
        """Why the saga did not complete: the step error that made it compensate, or once
        FAILED the :class:`SagaCompensationFailedError` that holds that error and the
        exhausted compensation's."""
        return self._failed if self._state.status is SagaStatus.FAILED else self._trigger

    # --- forward ---------------------------------------------------------------------------

    async def _act(self, call: machine.Act) -> SagaStepResult[Any, Any]:
        """Run the node at the cursor (its fallback too if the primary fails), write where it
        led and return the result of the branch that ran last."""
        nodes = self.definition.nodes
        node = nodes[call.node]
        while True:
            spec = node.fallback if call.fallback else node.primary
            assert spec is not None, "only a Fallback node has a fallback branch"
            outcome = await self._calls.act(node, spec)
            state = self._feed(
                machine.ACT_COMPLETED if outcome.error is None else _act_failure(outcome)
            )
            if not isinstance(state.call, machine.Act):
                break
            call = state.call  # the primary failed: the node's fallback runs
        write = state.write
        if write is None:  # fenced while the step ran
            raise self._taken_over()
        error = outcome.error
        if write.kind == "step":
            try:
                await self._store(write)
            except SagaConcurrencyError:
                raise
            except Exception as exc:
                # The node ran but its checkpoint failed: the saga compensates, this node too.
                write = self._feed(machine.WriteFailed(exc)).write
                if write is None:
                    raise
                error = exc
            else:
                if write.cursor == len(self.definition.nodes):  # the last node: COMPLETED
                    self._finished()
                return forward_result(spec, outcome.value, self.saga_id, outcome.attempt)
        assert error is not None, "a node that did not complete has an error"
        return await self._begin_compensation(write, spec.cls, spec.step_id, error, outcome)

    async def _begin_compensation(
        self,
        write: machine.Write,
        step_type: Any,
        step_id: str,
        error: Exception,
        outcome: CallOutcome,
    ) -> SagaStepResult[Any, Any]:
        """Make the decision to compensate durable (before any compensation runs); if this
        write fails the saga stays as last written (RUNNING) and recovery runs the node
        again."""
        self._trigger = error
        await self._perform(write)
        fire(self._hooks.compensation_started, self.saga_id, self.definition.name, error)
        if self._state.status is SagaStatus.COMPENSATED:
            self._finished()
        return SagaStepResult(
            step_type, None, self.saga_id, step_id, StepDirection.ACT, error, outcome.attempt
        )

    # --- compensation ----------------------------------------------------------------------

    async def _compensate(self, call: machine.Compensate) -> SagaStepResult[Any, Any]:
        spec = self.definition.steps_by_id[call.step_id]
        # A compensation and its checkpoint are never interrupted halfway: cancellation is
        # held off until both are done, then delivered below.
        with anyio.CancelScope(shield=True):
            outcome = await self._calls.compensate(spec)
            if outcome.error is None:
                event: machine.Event = machine.COMPENSATION_DONE
            else:
                self._failed = self._compensation_failed(outcome.error)
                event = machine.CompensationFailed(outcome.error)
            write = self._feed(event).write
            if write is None:
                raise self._taken_over()
            await self._perform(write)
        if self._state.status is not SagaStatus.COMPENSATING:
            self._finished()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return SagaStepResult(
            spec.cls,
            None,
            self.saga_id,
            spec.step_id,
            StepDirection.COMPENSATE,
            outcome.error,
            outcome.attempt,
        )

    def _compensation_failed(self, error: Exception) -> SagaCompensationFailedError:
        """The error of a run whose compensation was exhausted by ``error``: it names that
        error and the cause of the rollback (the live trigger, or the cause an earlier runner
        stored)."""
        trigger = self._trigger
        cause = describe_error(trigger) if trigger is not None else self._state.error
        why = f"; the rollback was triggered by {cause}" if cause else ""
        failed = SagaCompensationFailedError(
            f"saga {self.saga_id} ({self.definition.name}) could not be compensated: "
            f"{describe_error(error)}{why}; it is FAILED and recovery will retry it",
            saga_id=self.saga_id,
            trigger=trigger,
            compensation_error=error,
        )
        failed.__cause__ = error
        return failed

    # --- writes ----------------------------------------------------------------------------

    def _feed(self, event: machine.Event) -> machine.RunState:
        """Apply ``event`` to the runner's state and return the new state."""
        state = machine.transition(self.definition.nodes, self._state, event)
        self._state = state
        return state

    async def _perform(self, write: machine.Write, *, hold_seconds: float | None = None) -> None:
        """Store ``write`` (see :meth:`_store`); a failure leaves the saga as last written.

        Raises:
            SagaConcurrencyError: another runner owns the saga; this one writes nothing more.
            Exception: what the storage (or the context codec) raised.
        """
        try:
            await self._store(write, hold_seconds=hold_seconds)
        except SagaConcurrencyError:
            raise
        except Exception as exc:
            self._feed(machine.WriteFailed(exc))
            raise

    async def _store(self, write: machine.Write, *, hold_seconds: float | None = None) -> None:
        """Write ``write`` as one compare-and-set checkpoint; once it is durable the runner's
        state is the stored one.

        Raises:
            SagaConcurrencyError: another runner owns the saga; this one writes nothing more.
            Exception: what the storage (or the context codec) raised; not fed back.
        """
        checkpoint = self._checkpoint(write, hold_seconds)
        try:
            await self._storage.checkpoint(checkpoint)
        except SagaConcurrencyError:
            self._feed(machine.WRITE_REFUSED)
            raise
        self.version += 1
        self._calls.written(checkpoint.context)
        self._feed(machine.WRITTEN)

    def _checkpoint(self, write: machine.Write, hold_seconds: float | None) -> Checkpoint:
        """The checkpoint that stores ``write`` with the runner's context and journal.

        ``hold_seconds`` is the lease a hand-back keeps (None: the runner's pause).

        Raises:
            SagaContextError: ``write.strict_context`` and the context cannot be encoded.
        """
        text = self._calls.encode_context(strict=write.strict_context)
        lease = write.lease
        if lease == "keep":
            lease_seconds: float | None = self._lease_seconds
        elif lease == "pause":
            lease_seconds = hold_seconds if hold_seconds is not None else self._hold_seconds
        else:
            lease_seconds = None
        return Checkpoint(
            self.saga_id,
            self.version,  # expected: the version this runner last wrote
            write.status,
            write.cursor,
            write.applied,
            text,
            self._calls.journal,
            write.error,
            self._owner if lease_seconds is not None else None,
            lease_seconds,
            self.definition.next_step_ids[write.cursor],
        )

    # --- reporting -------------------------------------------------------------------------

    def _taken_over(self) -> SagaConcurrencyError:
        return SagaConcurrencyError(
            f"saga {self.saga_id} was taken over by another runner; this one stops"
        )

    def _finished(self) -> None:
        """Log a run that ended other than COMPLETED and tell the observers it ended."""
        status = self._state.status
        if status is SagaStatus.FAILED:
            failed = self._failed
            logger.error(
                "saga %s (%s) is FAILED: a compensation was exhausted: %r",
                self.saga_id,
                self.definition.name,
                failed.compensation_error if failed is not None else None,
            )
        elif status is SagaStatus.COMPENSATED:
            logger.warning(
                "saga %s (%s) was compensated%s",
                self.saga_id,
                self.definition.name,
                f" after: {self._trigger!r}"
                if self._trigger is not None
                else " (rollback finished by recovery)",
            )
        if self._hooks.saga_finished:
            fire(self._hooks.saga_finished, self.saga_id, self.definition.name, status, self.error)


def _act_failure(outcome: CallOutcome) -> machine.Event:
    """The state machine's event for an act that did not complete with a valid result."""
    assert outcome.error is not None, "only a failed call is a failure"
    if outcome.returned:
        return machine.ActInvalid(outcome.error)
    return machine.ActFailed(outcome.error, called=outcome.called, refused=outcome.refused)
