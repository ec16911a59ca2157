"""Running the branches of a ``Parallel`` group concurrently.

:class:`BranchRun` runs the branches of one group that are not done yet, each in its own task
with its own step calls (its own copy of the context, its own journal), and reports each
step or ``Fallback`` branch as it ends (:class:`BranchEnd`) on a stream the driver reads: the
driver merges and checkpoints completions, and decides what a failure rolls back. Which steps
a branch applied, or may have applied, follows the same rules as a node of the saga's own
(:func:`~saga_core._engine.transitions.completed_ids` and its neighbours).

When a branch fails, a ``fail="fast"`` group cancels its other branches (a nested group then
fails as one branch of its parent); a cancelled branch ends with what it may have done. A
step that cannot be built (:class:`~saga_core.DependencyResolutionError`) stops the whole run:
it is kept as :attr:`BranchRun.fatal` for the driver to raise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    DependencyResolutionError,
    SagaCancelledError,
    SagaChildError,
    SagaUsageError,
)
from saga_core._model.saga import Node, StepSpec
from saga_core._model.status import SagaStatus

from .calls import CallOutcome, StepCalls
from .children import ChildEnd, child_entry, child_failure
from .states import ActFailed
from .transitions import (
    after_primary_failed,
    branch_done,
    completed_ids,
    failure_ids,
    interrupted_ids,
)

#: How long a branch waits, at first and at most, before it looks again at a child saga that
#: another runner holds (after a crash its lease expires and this runner takes it over).
_CHILD_POLL_SECONDS = (0.05, 5.0)


class ChildBranches(NamedTuple):
    """What a group needs to run ``SubSaga`` branches: the parent's child runner, bound."""

    settle: Callable[[Node, Any], Awaitable[ChildEnd]]
    """``settle(node, branch_context)``: bring the node's child to its end here if it can."""
    stop: Callable[[Node, Exception], Awaitable[ChildEnd]]
    """``stop(node, reason)``: cancel the node's child (it compensates itself)."""


class BranchEnd(NamedTuple):
    """How one step, ``Fallback`` or ``SubSaga`` branch of a group ended."""

    branch_id: str
    """The branch's node id."""
    spec: StepSpec | None
    """The step that ran last (the fallback when the primary failed); None for a child."""
    calls: StepCalls
    """The branch's calls: its context copy and its journal entries."""
    outcome: CallOutcome
    """The last call's outcome (its error is the branch's failure, if it failed)."""
    ids: tuple[str, ...]
    """Completed: the steps it applied. Otherwise the steps that may have had an effect."""
    completed: bool
    """True when the branch completed with a valid result."""


class BranchRun:
    """Runs the branches of the group ``node`` not done in ``applied``; reports each ending
    branch on ``send`` (closed when all have ended).

    Args:
        node: the group.
        applied: the steps recorded as applied: their branches are done and do not run.
        resumed: an earlier runner stopped inside this group (its branches not done may have
            run, in part, then).
        new_calls: step calls for one branch, on a fresh copy of the group's base context.
        stop_reason: why the driver cancelled ``scope`` (a cancel, the deadline, a failed
            checkpoint), asked when a branch is cancelled by it. A cancellation from outside
            (the run itself is cancelled: a shutdown) is no stop of the group: the branches
            just end, and the driver hands the saga back.
    """

    def __init__(
        self,
        node: Node,
        applied: tuple[str, ...],
        resumed: bool,
        new_calls: Callable[[], StepCalls],
        stop_reason: Callable[[], Exception],
        children: ChildBranches | None = None,
    ) -> None:
        assert node.group is not None, "a BranchRun runs a group"
        self._node = node
        self._applied = applied
        self._resumed = resumed
        self._new_calls = new_calls
        self._stop_reason = stop_reason
        self._children = children
        self.fatal: SagaUsageError | None = None
        """A step that could not be built, or a child's context that could not be: the run
        stopped, the driver raises it."""
        self._scope = anyio.CancelScope()

    async def run(self, send: MemoryObjectSendStream[BranchEnd], scope: anyio.CancelScope) -> None:
        """Run the branches under ``scope`` (the driver's, to stop them), then close
        ``send``."""
        self._scope = scope

        def driver_stop() -> Exception | None:
            return self._stop_reason() if scope.cancel_called else None

        async with send:
            with scope:
                await self._group(self._node, send, driver_stop)

    async def _group(
        self,
        node: Node,
        send: MemoryObjectSendStream[BranchEnd],
        reason: Callable[[], Exception | None],
    ) -> bool:
        """Run ``node``'s branches not done; True when all completed. ``reason`` tells why
        the group is cancelled, if it was stopped (None: cancelled from outside)."""
        group = node.group
        assert group is not None
        failed: list[str] = []

        def why() -> Exception | None:
            if failed:
                return SagaCancelledError(
                    f"cancelled because branch {failed[0]} of {group.group_id} failed"
                )
            return reason()

        async with anyio.create_task_group() as tasks:

            async def branch(child: Node) -> None:
                if child.group is not None:
                    ok = await self._group(child, send, why)
                elif child.child is not None:
                    ok = await self._child(child, send, why)
                else:
                    ok = await self._leaf(child, send, why)
                if not ok and not failed:
                    failed.append(child.node_id)
                    if group.fail_fast:
                        tasks.cancel_scope.cancel()

            for child in group.branches:
                if not branch_done(child, self._applied):
                    tasks.start_soon(branch, child)
        return not failed

    async def _leaf(
        self,
        node: Node,
        send: MemoryObjectSendStream[BranchEnd],
        reason: Callable[[], Exception | None],
    ) -> bool:
        """Run a step or ``Fallback`` branch; True when it completed."""
        calls = self._new_calls()
        resumed = self._resumed
        assert node.primary is not None, "a leaf branch is a step or a Fallback"
        spec = node.primary
        node_applied: tuple[str, ...] = ()
        on_fallback = False
        try:
            while True:
                outcome = await calls.act(node, spec)
                if outcome.error is None or outcome.returned:
                    ids = completed_ids(node, on_fallback, node_applied, resumed)
                    completed = outcome.error is None
                    break
                event = ActFailed(outcome.error, outcome.called, outcome.refused)
                if node.fallback is None or on_fallback:
                    ids = failure_ids(spec, node_applied, outcome.called)
                    completed = False
                    break
                runs_fallback, node_applied = after_primary_failed(node, event, resumed)
                if not runs_fallback:
                    ids, completed = node_applied, False
                    break
                spec, on_fallback = node.fallback, True
        except anyio.get_cancelled_exc_class():
            why = reason()
            if why is not None:
                # Stopped mid-act: it may have had an effect, and is rolled back.
                interrupted = calls.interrupted(spec, why)
                ids = interrupted_ids(node, spec, node_applied, resumed)
                _report(send, BranchEnd(node.node_id, spec, calls, interrupted, ids, False))
            raise
        except DependencyResolutionError as exc:
            return self._stop_all(exc, node, spec, calls, send)
        _report(send, BranchEnd(node.node_id, spec, calls, outcome, ids, completed))
        return completed

    async def _child(
        self,
        node: Node,
        send: MemoryObjectSendStream[BranchEnd],
        reason: Callable[[], Exception | None],
    ) -> bool:
        """Run a ``SubSaga`` branch: its child, in place; True when it COMPLETED."""
        child = node.child
        children = self._children
        assert child is not None and children is not None, "a child branch, with a runner"
        calls = self._new_calls()  # the branch's context copy: the child's is built from it
        delay, longest = _CHILD_POLL_SECONDS
        try:
            while (end := await children.settle(node, calls.context)).status is None:
                # Another runner holds the child (a child that waits cannot be a branch): look
                # again until it ends or its lease expires and this runner takes it over.
                await anyio.sleep(delay)
                delay = min(delay * 2, longest)
        except anyio.get_cancelled_exc_class():
            why = reason()
            if why is not None:
                # Stopped: the child is cancelled too, and compensates itself; if it had
                # completed already, its steps are the parent's to compensate.
                with anyio.CancelScope(shield=True):
                    end = await children.stop(node, why)
                ids = _child_ids(node, end)
                _report(
                    send,
                    BranchEnd(node.node_id, None, calls, CallOutcome(None, why, 1), ids, False),
                )
            raise
        except SagaChildError as exc:
            return self._stop_all(exc, node, None, calls, send)
        calls.journal.append(child_entry(child.node_id, end))
        if end.status is not SagaStatus.COMPLETED:
            failure = child_failure(child.node_id, end)
            _report(
                send, BranchEnd(node.node_id, None, calls, CallOutcome(None, failure, 1), (), False)
            )
            return False
        if child.result is not None:
            try:
                child.result(calls.context, end.context)
            except Exception as exc:
                error = SagaChildError(
                    f"the result function of {child.node_id} raised {describe_error(exc)}; the "
                    "saga stays at its group, and recovery runs it again once it is fixed"
                )
                error.__cause__ = exc
                return self._stop_all(error, node, None, calls, send)
        ids = _child_ids(node, end)
        _report(send, BranchEnd(node.node_id, None, calls, CallOutcome(None, None, 1), ids, True))
        return True

    def _stop_all(
        self,
        error: SagaUsageError,
        node: Node,
        spec: StepSpec | None,
        calls: StepCalls,
        send: MemoryObjectSendStream[BranchEnd],
    ) -> bool:
        """A wiring or code mistake, not a business failure (a step that cannot be built, a
        child's context that cannot be): the whole run stops, the saga stays as last written,
        as it does for a node of the saga's own."""
        if self.fatal is None:
            self.fatal = error
        self._scope.cancel()
        _report(
            send,
            BranchEnd(node.node_id, spec, calls, CallOutcome(None, error, 0, False), (), False),
        )
        return False


def _child_ids(node: Node, end: ChildEnd) -> tuple[str, ...]:
    """The ids the parent records for a child that ended ``end``: its steps if it
    COMPLETED (the parent compensates them), else none (the child answers for them)."""
    child = node.child
    assert child is not None
    if end.status is not SagaStatus.COMPLETED:
        return ()
    return tuple(child.step_id(step_id) for step_id in end.applied)


def _report(send: MemoryObjectSendStream[BranchEnd], end: BranchEnd) -> None:
    """Tell the driver how a branch ended, unless it stopped listening (its run was
    cancelled: the saga is handed back as last written)."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        send.send_nowait(end)
