"""The driver: one :class:`SagaRun` runs one saga id for one runner.

It asks the state machine (:mod:`saga_core._engine.transitions`) what to do, performs the
writes through the storage protocol and the calls through the step-call layer
(:mod:`saga_core._engine.calls`), and feeds back what happened. The checkpoints are stored
by :mod:`saga_core._engine.checkpoints`; how the run ended is reported by
:mod:`saga_core._engine.reporting`.

The run is advanced one result at a time (:meth:`SagaRun.next_result`) so that
``mediator.stream`` can yield between steps without holding a cancel scope across a yield.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from saga_core._codec.context import ContextCodec, codec_for
from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    SagaBranchConflictError,
    SagaCancelledError,
    SagaChildError,
    SagaConcurrencyError,
    SagaContextError,
    SagaDeadlineExceededError,
    SagaNotFoundError,
    SagaRecoveryError,
    SagaSignalPendingError,
    SagaUsageError,
    SagaWaitTimedOutError,
)
from saga_core._model.outcome import SagaOutcome
from saga_core._model.saga import Node, SagaDefinition, StepSpec
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._model.step import SagaStepResult
from saga_core._model.waits import WaitSpec, due_at
from saga_core._storage.protocol import JournalEntry, NewSignal, PendingSignal, SagaStorage

from . import states
from . import transitions as machine
from .branches import BranchEnd, BranchRun, ChildBranches
from .calls import CallOutcome, StepCalls, forward_result
from .checkpoints import CheckpointWriter, create_saga
from .children import ChildRunner, child_entry, child_failure, child_saga_id, child_signal
from .hooks import Hooks, fire
from .merging import ContextMerge
from .observer import logger
from .reporting import RunReport
from .resolution import StepResolver

#: How long an abandoned run may spend handing its lease back (shielded from cancellation).
_RELEASE_TIMEOUT = 5.0

#: A parent waiting for its child is due again after this long at the latest, to look at the
#: child itself: the child's end normally wakes it at once, but the child's process may die
#: between its last write and that wake-up.
CHILD_CHECK_SECONDS = 300.0


class SagaRun:
    """One runner of one saga id. Build it with :meth:`start` (a new saga) or through
    recovery (with the state :func:`~saga_core._engine.transitions.resumed` gives); then call
    :meth:`next_result` until it returns None, then :meth:`outcome`."""

    __slots__ = (
        "_abort",
        "_act_scope",
        "_calls",
        "_children",
        "_codec",
        "_ended",
        "_hold_seconds",
        "_report",
        "_results",
        "_signals",
        "_state",
        "_storage",
        "_wakes_parent",
        "_writer",
        "child",
        "context",
        "deadline_at",
        "definition",
        "saga_id",
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
        state: states.RunState,
        context_text: str,
        hold_seconds: float | None = None,
        deadline_at: datetime | None = None,
        signals: tuple[PendingSignal, ...] = (),
        children: ChildRunner | None = None,
        wakes_parent: UUID | None = None,
    ) -> None:
        self.definition = definition
        self.saga_id = saga_id
        # The caller's object: the steps change it in place, and attempt isolation restores
        # it in place, so it stays the same object for the whole run.
        self.context = context
        self._calls = StepCalls(saga_id, context, codec, context_text, resolver, hooks)
        self._writer = CheckpointWriter(
            saga_id, storage, self._calls, definition.next_step_ids, owner, lease_seconds, version
        )
        self._report = RunReport(saga_id, definition.name, hooks)
        self._state = state
        # A recovery worker's runs keep their lease this long after a failure (FAILED, or an
        # error) instead of releasing it, so the saga is retried only after a pause.
        self._hold_seconds = hold_seconds
        self._storage = storage
        self._codec = codec
        self.deadline_at = deadline_at
        """When the saga must be finished by (None: no deadline)."""
        # The pending signals as last read (a wait takes its signal from here).
        self._signals = signals
        # Why the saga must stop going forward (a cancel of this process, its deadline): fed to
        # the state machine before the next call, or at once by cancelling the act in flight.
        self._abort: Exception | None = None
        self._act_scope: anyio.CancelScope | None = None
        # Results of calls made together (a group's branches, concurrent compensations) that
        # next_result has not returned yet, in the order they ended.
        self._results: deque[SagaStepResult[Any, Any]] = deque()
        # Runs the child sagas of SubSaga nodes (None: this runner cannot).
        self._children = children
        # The parent saga to wake once this saga ends (it runs as a child, not in place).
        self._wakes_parent = wakes_parent
        self._ended = False
        self.child: SagaRun | None = None
        """The child saga this runner runs in place (a SubSaga), to which a cancel passes."""

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
        children: ChildRunner | None = None,
        parent_id: UUID | None = None,
    ) -> SagaRun:
        """Validate and store a new saga (durable before any step runs) and return its runner.

        The saga's deadline (``Saga.deadline``) counts from now. ``parent_id``: the saga
        that starts this one as its child (and runs it in place).

        Raises:
            SagaContextError: the context cannot be stored losslessly (nothing written).
            SagaAlreadyExistsError: storage already holds ``saga_id`` (nothing run).
            SagaStorageError: the storage failed (nothing run).
        """
        text = codec.encode(context)
        new = machine.start(definition.nodes)
        write = new.write
        assert write is not None, "a new saga is written before it runs"
        deadline_at = deadline_from_now(definition)
        await create_saga(
            storage,
            definition,
            saga_id,
            text,
            owner,
            lease_seconds,
            write,
            deadline_at=deadline_at,
            parent_id=parent_id,
        )
        if hooks.saga_started:
            fire(hooks.saga_started, saga_id, definition.name, resumed=False)
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
            state=machine.written(new),  # created, with its first call named
            context_text=text,
            deadline_at=deadline_at,
            children=children,
        )
        return run

    # --- the runner's state ------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The stored version this runner last wrote (or claimed)."""
        return self._writer.version

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
        self._feed(states.LEASE_LOST)

    # --- driving ---------------------------------------------------------------------------

    async def next_result(self) -> SagaStepResult[Any, Any] | None:
        """Run the next step (or the next compensation) and return its result; None when
        the saga has reached the end of this run. A child saga's end wakes its parent.

        Raises:
            SagaConcurrencyError: another runner took the saga over; nothing more is written.
            DependencyResolutionError: a step class cannot be built; the saga stays as last
                written, for recovery.
            SagaChildError: a ``SubSaga``'s context factory or result function failed; the
                saga stays as last written, for recovery.
            SagaStorageError: a checkpoint failed and the saga could not be rolled back
                durably; it stays as last written, for recovery.
        """
        result = await self._next()
        status = self._state.status
        if (
            result is None
            and not self._ended
            and (status.is_terminal or status is SagaStatus.FAILED)
        ):
            # Ended for a parent that waits for it: finished, or FAILED (a parent does not wait
            # for a rollback that needs an operator or a later recovery).
            self._ended = True
            if self._wakes_parent is not None:
                await self._wake_parent(self._wakes_parent)
        return result

    def queue_result(self, result: SagaStepResult[Any, Any]) -> None:
        """Queue a step result for :meth:`next_result` (a child's run in place)."""
        self._results.append(result)

    async def _next(self) -> SagaStepResult[Any, Any] | None:
        while True:
            if self._results:
                return self._results.popleft()
            if self._state.fenced:
                raise self._report.taken_over()
            state = self._state
            if state.call is None and state.write is None:
                state = self._feed(states.ADVANCE)  # nothing named yet: ask what comes next
            call = state.call
            if call is not None and not isinstance(call, (states.Compensate, states.CompensateAll)):
                # Going forward: a cancel or the deadline stops it before the next node.
                abort = self._abort_reason()
                if abort is not None:
                    done: tuple[str, ...] = ()
                    if isinstance(call, states.Act):
                        done = await self._stop_children(self.definition.nodes[call.node], abort)
                    state = self._stop_forward(states.Aborted(abort, ids=done))
            call = state.call
            if isinstance(call, states.Act):
                node = self.definition.nodes[call.node]
                if node.group is not None:
                    await self._run_group(call)
                    continue
                if node.child is not None:
                    await self._run_child(call)
                    continue
                return await self._act(call)
            if isinstance(call, states.Compensate):
                return await self._compensate(call)
            if isinstance(call, states.CompensateAll):
                await self._compensate_all(call)
                continue
            if isinstance(call, states.Await):
                self._await(call)
                continue
            write = state.write
            if write is None:
                return None
            # A write with nothing called before it: the end of the run (finish), a wait's
            # suspend or timeout, or a decision to compensate that is not a step's failure.
            await self._perform_decided(write)
            if write.kind == "finish" and self._state.write is None:
                self._report.finished(self._state.status)
                return None
            if write.kind == "decision" and self._state.write is None:
                self._report.compensation_started()
                if self._state.status is SagaStatus.COMPENSATED:
                    self._report.finished(self._state.status)
                    return None

    async def run_to_end(
        self, each: Callable[[SagaStepResult[Any, Any]], None] | None = None
    ) -> None:
        """Call :meth:`next_result` until the run ends (``each`` is given every result); if
        it is interrupted (cancelled, an error), hand the saga back to recovery with
        :meth:`abandon` and re-raise."""
        try:
            while (result := await self.next_result()) is not None:
                if each is not None:
                    each(result)
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
        write = self._feed(states.Interrupted(pause=hold_seconds is not None)).write
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

    def cancel(self, error: Exception) -> None:
        """Stop going forward because of ``error`` (a cancel decided in this process, the
        deadline): the act in flight, if any, is cancelled at once and the saga compensates,
        that step included. Does nothing once the saga compensates."""
        if self._abort is None:
            self._abort = error
        scope = self._act_scope
        if scope is not None:
            scope.cancel()
        if self.child is not None:
            self.child.cancel(error)

    def _abort_reason(self) -> Exception | None:
        """Why the saga must stop going forward now, if it must (taken once)."""
        abort = self._abort
        if abort is not None:
            self._abort = None
            return abort
        deadline = self.deadline_at
        if deadline is not None and datetime.now(timezone.utc) >= deadline:
            return _deadline_error(self.saga_id, deadline)
        return None

    # --- outcome ---------------------------------------------------------------------------

    def outcome(self) -> SagaOutcome[Any]:
        """The run's outcome once :meth:`next_result` returned None.

        Raises:
            SagaCompensatedError: the saga was rolled back (status COMPENSATED).
            SagaCompensationFailedError: a compensation was exhausted (status FAILED).
        """
        return self._report.outcome(self._state.status, self.context, self._state.error)

    @property
    def error(self) -> BaseException | None:
        """Why the saga did not complete: the step error that made it compensate, or once
        FAILED the :class:`SagaCompensationFailedError` that holds that error and the
        exhausted compensation's."""
        return self._report.error(self._state.status)

    # --- forward ---------------------------------------------------------------------------

    async def _act(self, call: states.Act) -> SagaStepResult[Any, Any]:
        """Run the node at the cursor (its fallback too if the primary fails), write where it
        led and return the result of the branch that ran last."""
        nodes = self.definition.nodes
        node = nodes[call.node]
        while True:
            spec = node.branch(call.fallback)
            with anyio.CancelScope(deadline=self._deadline_clock()) as scope:
                self._act_scope = scope
                try:
                    outcome = await self._calls.act(node, spec)
                finally:
                    self._act_scope = None
            if scope.cancelled_caught:
                # Cancelled mid-act (a cancel, the deadline): it may have had an effect.
                reason = self._abort_reason() or _deadline_error(self.saga_id, self.deadline_at)
                outcome = self._calls.interrupted(spec, reason)
                state = self._stop_forward(states.Aborted(reason, in_flight=True))
                break
            state = self._feed(
                states.ACT_COMPLETED if outcome.error is None else _act_failure(outcome)
            )
            if not isinstance(state.call, states.Act):
                break
            call = state.call  # the primary failed: the node's fallback runs
        write = state.write
        if write is None:  # fenced while the step ran
            raise self._report.taken_over()
        error: Exception | None = outcome.error
        if write.kind == "step":
            try:
                await self._store(write)
            except SagaConcurrencyError:
                raise
            except SagaCancelledError as exc:
                # Cancelled elsewhere while the step ran: it completed, and is compensated.
                write = self._feed(states.Aborted(exc)).write
                if write is None:
                    raise
                error = exc
            except Exception as exc:
                # The node ran but its checkpoint failed: the saga compensates, this node too.
                write = self._feed(states.WriteFailed(exc)).write
                if write is None:
                    raise
                error = exc
            else:
                if write.cursor == len(self.definition.nodes):  # the last node: COMPLETED
                    self._report.finished(self._state.status)
                return forward_result(spec, outcome.value, self.saga_id, outcome.attempt)
        assert error is not None, "a node that did not complete has an error"
        return await self._begin_compensation(write, spec.cls, spec.step_id, error, outcome)

    async def _begin_compensation(
        self,
        write: states.Write,
        step_type: Any,
        step_id: str,
        error: Exception,
        outcome: CallOutcome,
    ) -> SagaStepResult[Any, Any]:
        """Make the decision to compensate durable (before any compensation runs); if this
        write fails the saga stays as last written (RUNNING) and recovery runs the node
        again."""
        await self._decide(write, error)
        return SagaStepResult(
            step_type, None, self.saga_id, step_id, StepDirection.ACT, error, outcome.attempt
        )

    async def _decide(self, write: states.Write, error: Exception) -> None:
        """Store the decision to compensate ``write`` (after ``error``) and report it."""
        self._report.trigger = error
        await self._perform(write)
        self._report.compensation_started()
        if self._state.status is SagaStatus.COMPENSATED:
            self._report.finished(self._state.status)

    # --- parallel groups -------------------------------------------------------------------

    async def _run_group(self, call: states.Act) -> None:
        """Run the group at node ``call.node``: its branches not done yet, concurrently.

        Completions are merged into the context and written as they come; those that end
        while a write is in flight share the next one, and the last one's write moves the
        cursor on. A failed branch (or a cancel, the deadline, a failed write, two branches
        changing one field) stops the group: what its branches may have done is applied and
        the decision to compensate is written. The branches' results are queued for
        :meth:`next_result`, in the order they ended.
        """
        node = self.definition.nodes[call.node]
        group = node.group
        assert group is not None, "a group node"
        state = self._state
        if all(machine.branch_done(branch, state.applied) for branch in group.branches):
            # Every branch is recorded as done already: only the group's own write is left.
            await self._store_node_write(self._feed(states.BranchesCompleted(())).write)
            return
        base = self._calls.context_text
        merge = ContextMerge(self._codec, base, node.node_id)
        stops: list[Exception] = []

        def stop_reason() -> Exception:
            # Why the driver stopped the branches: taken once, the first time it is asked.
            if not stops:
                stops.append(
                    self._abort_reason() or _deadline_error(self.saga_id, self.deadline_at)
                )
            return stops[0]

        children = None
        if self._children is not None:
            runner = self._children
            children = ChildBranches(
                lambda child, context: runner.settle(self, child, context),
                lambda child, reason: runner.stop(self, child, reason),
            )
        run = BranchRun(
            node,
            state.applied,
            state.resumed_at == call.node,
            lambda: self._calls.branch(base),
            stop_reason,
            children,
        )
        scope = anyio.CancelScope(deadline=self._deadline_clock())
        # Nothing is raised inside the task group below (it would come out wrapped in an
        # exception group): failures are kept and acted on once every branch has ended.
        send, receive = anyio.create_memory_object_stream[BranchEnd](math.inf)
        failure: Exception | None = None
        unwritten: list[str] = []  # steps of ended branches not fed to the state machine yet
        write_error: Exception | None = None
        self._act_scope = scope
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run.run, send, scope)
                async with receive:
                    async for first in receive:
                        for end in (first, *_drain(receive)):
                            self._calls.journal.extend(end.calls.journal)
                            if end.spec is not None:  # a child's results are queued already
                                self._results.append(_branch_result(end, self.saga_id))
                            unwritten.extend(end.ids)
                            if failure is not None:
                                continue
                            if not end.completed:
                                failure = end.outcome.error
                                continue
                            try:
                                merge.take(self.context, end.calls.context, end.branch_id)
                            except (SagaBranchConflictError, SagaContextError) as exc:
                                failure = exc
                                stops.append(exc)
                                scope.cancel()
                        if self._state.fenced:
                            break  # taken over: the branches stop, nothing more is written
                        if failure is not None or not unwritten:
                            continue
                        write = self._feed(states.BranchesCompleted(tuple(unwritten))).write
                        unwritten.clear()
                        try:
                            write_error = await self._store_node_write(write)
                        except SagaConcurrencyError:
                            break  # fenced: raised below, outside the task group
                        if write_error is not None:
                            failure = write_error
                            stops.append(write_error)
                            scope.cancel()
                if self._state.fenced:  # left early: stop the branches still running
                    stops.append(self._report.taken_over())
                    scope.cancel()
        finally:
            self._act_scope = None
        if self._state.fenced:
            raise self._report.taken_over()
        if run.fatal is not None:
            raise run.fatal
        if failure is None:
            if self._state.status is SagaStatus.COMPLETED:
                self._report.finished(self._state.status)
            return
        if write_error is not None and self._state.write is not None:
            # The group's last write failed: it has decided to compensate already.
            await self._decide(self._state.write, write_error)
            return
        decided = self._stop_forward(states.BranchesFailed(failure, tuple(unwritten)))
        if decided.write is None:
            raise self._report.taken_over()
        await self._decide(decided.write, failure)

    async def _store_node_write(self, write: states.Write | None) -> Exception | None:
        """Store a write of the group or child in flight; return the error that stops it (its
        state fed already: a branch write's failure leaves the group to stop, the node's
        last write's turns into the decision to compensate), None once it is durable.

        Raises:
            SagaConcurrencyError: another runner owns the saga.
        """
        assert write is not None, "a completion names a write"
        try:
            await self._store(write)
        except SagaConcurrencyError:
            raise
        except Exception as exc:
            if write.kind == "step" and isinstance(exc, SagaCancelledError):
                # Cancelled elsewhere while the branches ran: they completed, and are
                # compensated.
                self._feed(states.Aborted(exc))
            else:
                self._feed(states.WriteFailed(exc))
            return exc
        return None

    # --- child sagas ------------------------------------------------------------------------

    async def _run_child(self, call: states.Act) -> None:
        """Run the ``SubSaga`` node at ``call.node``: the child runner brings the child to its
        end here if it can. A COMPLETED child's result goes into the context and its steps
        are recorded with the node's write (the parent compensates them if it must); a child
        rolled back makes the parent compensate; a child that cannot end here makes the
        parent suspend until the child's end wakes it (or :data:`CHILD_CHECK_SECONDS`)."""
        node = self.definition.nodes[call.node]
        child = node.child
        assert child is not None, "a SubSaga node"
        end = await self._child_runner().settle(self, node)
        self._calls.journal.append(child_entry(child.node_id, end))
        if end.status is SagaStatus.COMPLETED:
            if child.result is not None:
                try:
                    child.result(self.context, end.context)
                except Exception as exc:
                    self._calls.restore_context()
                    raise SagaChildError(
                        f"saga {self.saga_id}: the result function of {child.node_id} raised "
                        f"{describe_error(exc)}; the saga stays at that step, and recovery runs "
                        "it again once the function is fixed"
                    ) from exc
            ids = tuple(child.step_id(step_id) for step_id in end.applied)
            error = await self._store_node_write(self._feed(states.ChildCompleted(ids)).write)
            if error is not None and self._state.write is not None:
                await self._decide(self._state.write, error)
            elif error is None and self._state.status is SagaStatus.COMPLETED:
                self._report.finished(self._state.status)
            return
        if end.status is not None:
            # The decision to compensate is written by the driving loop.
            self._stop_forward(states.ChildFailed(child_failure(child.node_id, end)))
            return
        now = datetime.now(timezone.utc)
        wake_at = due_at(now + timedelta(seconds=CHILD_CHECK_SECONDS), self.deadline_at)
        wake = states.Wake(wake_at, child_signal(end.child_id), call.node, self._state.applied)
        self._feed(states.Suspend(wake))

    def _child_runner(self) -> ChildRunner:
        if self._children is None:
            raise SagaUsageError(
                f"saga {self.saga_id} reached a SubSaga, but this runner was built without a "
                "child runner; run it through a mediator, a worker or recover_saga"
            )
        return self._children

    async def _stop_children(self, node: Node, reason: Exception) -> tuple[str, ...]:
        """The parent stops going forward at ``node`` before running it: cancel the children
        an earlier runner may have started there (a ``SubSaga``, or a group's ``SubSaga``
        branches; each compensates itself, here when it can); return the ids of the steps of
        those that had COMPLETED already (the parent compensates those)."""
        done: list[str] = []
        for child_node in node.child_nodes():
            child = child_node.child
            assert child is not None
            end = await self._child_runner().stop(self, child_node, reason)
            if end.status is SagaStatus.COMPLETED:
                done.extend(child.step_id(step_id) for step_id in end.applied)
        return tuple(done)

    async def _wake_parent(self, parent_id: UUID) -> None:
        """This saga ran as a child and ended: wake its parent, if it still waits for it.
        Best effort: a parent that moved on refuses it, and one whose wake-up is lost looks
        at its child on its own later (:data:`CHILD_CHECK_SECONDS`)."""
        try:
            parent = await self._storage.load(parent_id)
            if parent.status.is_terminal:
                return
            await self._storage.deliver_signal(
                NewSignal(
                    parent_id,
                    f"child-end:{self.saga_id}",
                    child_signal(self.saga_id),
                    "null",
                    parent.cursor,
                    parent.next_step or "",
                )
            )
        except Exception as exc:  # the parent's own check is the safety net
            logger.info("saga %s: could not wake its parent %s: %r", self.saga_id, parent_id, exc)

    async def _compensate_step(self, step_id: str) -> CallOutcome:
        """Call the compensate of step ``step_id`` (this saga's, or a child's: see
        :meth:`_calls_for`). A child whose record is gone (a storage's retention removed it)
        cannot be compensated: that is the compensation's failure, and the saga ends FAILED,
        visibly, instead of compensating on a context it no longer has."""
        try:
            calls, spec = await self._calls_for(step_id)
        except SagaNotFoundError as exc:
            error = SagaRecoveryError(
                f"saga {self.saga_id} cannot compensate {step_id}: its child saga's record is "
                f"gone ({exc}); keep finished sagas longer than their parents run"
            )
            self._calls.journal.append(
                JournalEntry(
                    step_id,
                    StepDirection.COMPENSATE,
                    StepEvent.FAILED,
                    0,
                    datetime.now(timezone.utc),
                    describe_error(error),
                )
            )
            return CallOutcome(None, error, 0, called=False)
        outcome = await calls.compensate(spec)
        self._take_journal(calls, step_id)
        return outcome

    async def _calls_for(self, step_id: str) -> tuple[StepCalls, StepSpec]:
        """The step calls and the spec that compensate step ``step_id``: this saga's own, or,
        for a step of a child saga (``"<node id>/<step id>"``, nested children too), the
        child's — on its stored context, with its saga id, as the child would."""
        spec = self.definition.steps_by_id[step_id]
        definition = self.definition
        saga_id = self.saga_id
        own_id = step_id
        while own_id in definition.child_steps:
            child = definition.child_steps[own_id].child
            assert child is not None
            saga_id = child_saga_id(saga_id, child.node_id)
            own_id = own_id[len(child.node_id) + 1 :]
            definition = child.definition
        if saga_id == self.saga_id:
            return self._calls, spec
        assert definition.context_type is not None, "a child saga has a context type"
        record = await self._storage.load(saga_id)
        return self._calls.for_saga(
            saga_id, codec_for(definition.context_type), record.context
        ), spec

    def _take_journal(self, calls: StepCalls, step_id: str) -> None:
        """Move a child's step calls' journal into this saga's, under the id recorded here."""
        if calls is not self._calls:
            self._calls.journal.extend(entry._replace(step_id=step_id) for entry in calls.journal)

    # --- compensation ----------------------------------------------------------------------

    async def _compensate(self, call: states.Compensate) -> SagaStepResult[Any, Any]:
        # A compensation and its checkpoint are never interrupted halfway: cancellation is
        # held off until both are done, then delivered below.
        spec = self.definition.steps_by_id[call.step_id]
        with anyio.CancelScope(shield=True):
            outcome = await self._compensate_step(call.step_id)
            if outcome.error is None:
                event: states.Event = states.COMPENSATION_DONE
            else:
                self._report.compensation_failed(outcome.error, self._state.error)
                event = states.CompensationFailed(outcome.error)
            write = self._feed(event).write
            if write is None:
                raise self._report.taken_over()
            await self._perform(write)
        if self._state.status is not SagaStatus.COMPENSATING:
            self._report.finished(self._state.status)
        await anyio.lowlevel.checkpoint_if_cancelled()
        return SagaStepResult(
            spec.cls,
            None,
            self.saga_id,
            call.step_id,
            StepDirection.COMPENSATE,
            outcome.error,
            outcome.attempt,
        )

    async def _compensate_all(self, call: states.CompensateAll) -> None:
        """Compensate the steps ``call.step_ids`` concurrently, then write once; their results
        are queued for :meth:`next_result`."""
        specs = {step_id: self.definition.steps_by_id[step_id] for step_id in call.step_ids}
        outcomes: dict[str, CallOutcome] = {}
        unbuildable: list[Exception] = []
        # As for one compensation: never interrupted halfway, cancellation delivered after.
        with anyio.CancelScope(shield=True):

            async def compensate(step_id: str) -> None:
                try:
                    outcomes[step_id] = await self._compensate_step(step_id)
                except Exception as exc:  # a step that cannot be built: raised below
                    unbuildable.append(exc)

            async with anyio.create_task_group() as tasks:
                for step_id in call.step_ids:
                    tasks.start_soon(compensate, step_id)
            if unbuildable:
                raise unbuildable[0]
            done = tuple(i for i in call.step_ids if outcomes[i].error is None)
            failure: tuple[str, Exception] | None = None
            for step_id in call.step_ids:
                error = outcomes[step_id].error
                if error is not None and failure is None:
                    failure = (step_id, error)
                    self._report.compensation_failed(error, self._state.error)
            write = self._feed(states.CompensationsEnded(done, failure)).write
            if write is None:
                raise self._report.taken_over()
            await self._perform(write)
        if self._state.status is not SagaStatus.COMPENSATING:
            self._report.finished(self._state.status)
        for step_id, spec in specs.items():
            outcome = outcomes[step_id]
            self._results.append(
                SagaStepResult(
                    spec.cls,
                    None,
                    self.saga_id,
                    step_id,
                    StepDirection.COMPENSATE,
                    outcome.error,
                    outcome.attempt,
                )
            )
        await anyio.lowlevel.checkpoint_if_cancelled()

    # --- waits -----------------------------------------------------------------------------

    def _await(self, call: states.Await) -> None:
        """Decide about the wait at node ``call.node``: its signal is there (taken into the
        context), its timer is due (over, or timed out), or the saga suspends until then."""
        wait = self.definition.nodes[call.node].wait
        assert wait is not None, "Await names a wait node"
        now = datetime.now(timezone.utc)
        if wait.signal is not None:
            signal = next((s for s in self._signals if s.name == wait.signal), None)
            if signal is not None and self._state.consume is not None:
                # An earlier wait took a signal that no write has consumed yet, and a write
                # consumes one: write the progress first, then this wait takes its own.
                self._feed(states.SETTLE)
                return
            if signal is not None:
                try:
                    self._take(wait, signal)
                except Exception as exc:
                    self._journal(wait, StepEvent.FAILED, now, exc)
                    self._stop_forward(states.Aborted(exc))
                    return
                self._signals = tuple(s for s in self._signals if s is not signal)
                self._journal(wait, StepEvent.COMPLETED, now, detail=signal.signal_id)
                self._feed(states.WaitOver(signal.signal_id))
                return
        stored = self._state.wake
        # Claimed while suspended at this very wait: its timer is the one stored. (A saga
        # started detached is WAITING at its first node without having waited there yet,
        # unless that node is a sleep, which the start suspends at.)
        suspended_here = (
            stored is not None
            and stored.cursor == call.node
            and (wait.signal is None or stored.waiting_for == wait.signal)
        )
        if suspended_here:
            assert stored is not None
            timer = stored.wake_at
        else:
            try:
                timer = wait.timer(self.context, now)
            except Exception as exc:  # SleepUntil returned no aware datetime
                self._journal(wait, StepEvent.FAILED, now, exc)
                self._stop_forward(states.Aborted(exc))
                return
        if timer is not None and timer <= now:
            if wait.signal is None:
                self._journal(wait, StepEvent.COMPLETED, now)
                self._feed(states.WaitOver())
                return
            error = SagaWaitTimedOutError(
                f"saga {self.saga_id}: signal {wait.signal!r} did not arrive by {timer.isoformat()}"
            )
            self._journal(wait, StepEvent.FAILED, now, error)
            self._stop_forward(states.TimedOut(error))
            return
        wake_at = due_at(timer, self.deadline_at)
        if not suspended_here:
            detail = None if wake_at is None else wake_at.isoformat()
            self._journal(wait, StepEvent.STARTED, now, detail=detail)
        wake = states.Wake(wake_at, wait.signal, call.node, self._state.applied)
        self._feed(states.Suspend(wake))

    def _take(self, wait: WaitSpec, signal: PendingSignal) -> None:
        """Decode ``signal``'s payload into the context field the wait names (as that
        field's type, by the context codec).

        Raises:
            StorageCorruptedError: the payload does not decode as the field's type.
        """
        field = wait.into
        if field is None:
            return
        value = self._codec.field_from_jsonable(self.context, field, json.loads(signal.payload))
        setattr(self.context, field, value)

    def _journal(
        self,
        wait: WaitSpec,
        event: StepEvent,
        at: datetime,
        error: Exception | None = None,
        detail: str | None = None,
    ) -> None:
        """Journal a wait's event: STARTED when it suspends, COMPLETED when it is over,
        FAILED when it timed out or could not be completed."""
        self._calls.journal.append(
            JournalEntry(
                wait.wait_id,
                StepDirection.ACT,
                event,
                1,
                at,
                None if error is None else describe_error(error),
                detail,
            )
        )

    def journal_claim(self, step_id: str | None, attempts: int) -> None:
        """Journal that this runner claimed the saga (written with its first write)."""
        direction = StepDirection.ACT if self._state.status.is_forward else StepDirection.COMPENSATE
        self._calls.journal.append(
            JournalEntry(
                step_id or "",
                direction,
                StepEvent.CLAIMED,
                attempts,
                datetime.now(timezone.utc),
                None,
                self._writer.owner,
            )
        )

    async def _perform_decided(self, write: states.Write) -> None:
        """Store a write no call led to (a suspend, a timeout, a decision, the finish): one
        that yields to a pending signal evaluates the wait again with the signals read now;
        one refused because the saga was cancelled turns into the decision to compensate."""
        try:
            await self._store(write)
        except SagaSignalPendingError:
            self._forget_timeout()
            self._feed(states.SIGNAL_PENDING)
            self._signals = (await self._storage.load(self.saga_id)).signals
        except SagaCancelledError as exc:
            self._stop_forward(states.Aborted(exc))
        except SagaConcurrencyError:
            raise
        except Exception as exc:
            self._feed(states.WriteFailed(exc))
            raise

    def _forget_timeout(self) -> None:
        """A timeout lost to a signal that arrived first (its write was refused): it did not
        happen, so the wait's FAILED entry journaled for it goes too; the wait is evaluated
        again and takes the signal."""
        wait = self.definition.nodes[self._state.cursor].wait
        journal = self._calls.journal
        if (
            wait is not None
            and journal
            and journal[-1].step_id == wait.wait_id
            and journal[-1].event is StepEvent.FAILED
        ):
            journal.pop()

    def _stop_forward(
        self, event: states.Aborted | states.TimedOut | states.BranchesFailed | states.ChildFailed
    ) -> states.RunState:
        """Feed ``event`` (the saga stops going forward) and remember its error as why the
        saga compensates."""
        state = self._feed(event)
        if state.write is not None and state.write.kind == "decision":
            self._report.trigger = event.error
        return state

    def _journal_saga(self, write: states.Write) -> int:
        """Journal what ``write`` does to the saga as a whole: the decision to compensate
        (with its cause) and the end (with the final status); return how many entries
        (none for a write that does neither)."""
        if write.kind != "decision" and not write.status.is_terminal:
            return 0
        now = datetime.now(timezone.utc)
        journal = self._calls.journal
        before = len(journal)
        if write.kind == "decision":
            journal.append(
                JournalEntry(
                    "", StepDirection.COMPENSATE, StepEvent.COMPENSATING, 0, now, write.error
                )
            )
        if write.status.is_terminal:
            direction = (
                StepDirection.ACT
                if write.status is SagaStatus.COMPLETED
                else StepDirection.COMPENSATE
            )
            journal.append(
                JournalEntry("", direction, StepEvent.FINISHED, 0, now, None, write.status.value)
            )
        return len(journal) - before

    def _deadline_clock(self) -> float:
        """The deadline as an anyio clock instant, for a cancel scope (inf: none)."""
        deadline = self.deadline_at
        if deadline is None:
            return math.inf
        left = (deadline - datetime.now(timezone.utc)).total_seconds()
        return anyio.current_time() + left

    # --- writes ----------------------------------------------------------------------------

    def _feed(self, event: states.Event) -> states.RunState:
        """Apply ``event`` to the runner's state and return the new state."""
        state = machine.transition(self.definition.nodes, self._state, event)
        self._state = state
        return state

    async def _perform(self, write: states.Write, *, hold_seconds: float | None = None) -> None:
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
            self._feed(states.WriteFailed(exc))
            raise

    async def _store(self, write: states.Write, *, hold_seconds: float | None = None) -> None:
        """Write ``write`` as one compare-and-set checkpoint; once it is durable the runner's
        state is the stored one. ``hold_seconds`` is the lease a hand-back keeps (None: the
        runner's pause).

        Raises:
            SagaConcurrencyError: another runner owns the saga; this one writes nothing more.
            Exception: what the storage (or the context codec) raised; not fed back.
        """
        pause = hold_seconds if hold_seconds is not None else self._hold_seconds
        added = self._journal_saga(write)
        try:
            await self._writer.store(write, pause)
        except BaseException as exc:
            if added:  # not written: the saga did not do what they say
                del self._calls.journal[-added:]
            if isinstance(exc, SagaConcurrencyError):
                self._feed(states.WRITE_REFUSED)
            raise
        self._state = machine.written(self._state)


def deadline_from_now(definition: SagaDefinition) -> datetime | None:
    """When a saga of ``definition`` started now must be finished by (None: no deadline)."""
    seconds = definition.deadline_seconds
    if seconds is None:
        return None
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def first_sleep(
    definition: SagaDefinition, context: Any, deadline_at: datetime | None
) -> tuple[datetime | None, tuple[JournalEntry, ...]]:
    """When a saga started detached now is due, and the journal it is created with: a saga
    whose first node is a sleep is created suspended at it (due when it ends, or at its
    deadline); any other is due now (``None``) and a worker starts it.

    Raises:
        SagaDefinitionError: a first ``SleepUntil`` returned no aware datetime.
    """
    wait = definition.nodes[0].wait
    if wait is None or wait.signal is not None:
        return None, ()
    now = datetime.now(timezone.utc)
    wake_at = due_at(wait.timer(context, now), deadline_at)
    assert wake_at is not None, "a sleep has a timer"
    started = JournalEntry(wait.wait_id, StepDirection.ACT, StepEvent.STARTED, 1, now)
    return max(wake_at, now), (started,)


def _deadline_error(saga_id: UUID, deadline: datetime | None) -> SagaDeadlineExceededError:
    when = "its deadline" if deadline is None else f"its deadline {deadline.isoformat()}"
    return SagaDeadlineExceededError(f"saga {saga_id} was not finished by {when}")


def _drain(receive: MemoryObjectReceiveStream[BranchEnd]) -> list[BranchEnd]:
    """The branch ends already waiting on ``receive`` (they share the next write)."""
    ends: list[BranchEnd] = []
    try:
        while True:
            ends.append(receive.receive_nowait())
    except (anyio.WouldBlock, anyio.EndOfStream):
        return ends


def _branch_result(end: BranchEnd, saga_id: UUID) -> SagaStepResult[Any, Any]:
    """The step result of a group's branch that ended as ``end``."""
    outcome = end.outcome
    assert end.spec is not None, "a step's end"
    if end.completed:
        return forward_result(end.spec, outcome.value, saga_id, outcome.attempt)
    return SagaStepResult(
        end.spec.cls,
        None,
        saga_id,
        end.spec.step_id,
        StepDirection.ACT,
        outcome.error,
        outcome.attempt,
    )


def _act_failure(outcome: CallOutcome) -> states.Event:
    """The state machine's event for an act that did not complete with a valid result."""
    assert outcome.error is not None, "only a failed call is a failure"
    if outcome.returned:
        return states.ActInvalid(outcome.error)
    return states.ActFailed(outcome.error, called=outcome.called, refused=outcome.refused)
