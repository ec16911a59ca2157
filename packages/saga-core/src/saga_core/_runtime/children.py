"""Child sagas: starting, taking over and running in place the child of a ``SubSaga`` node.

A parent's runner that reaches a ``SubSaga`` node asks :class:`ChildRuns` (the engine's
:class:`~saga_core._engine.children.ChildRunner`) to bring the child to its end. The child's
id is derived from the parent's and the node's, so the first runner to get there creates it
(its context built by the node's ``context`` function, linked to the parent by
``parent_id``) and any later one finds it. When the child can go on here — just created, or
stalled (its lease expired), or due — this runner claims it and runs it in place, its lease
kept alive with the parent's; when it cannot (it waits for a signal or a timer, or another
runner holds it), the parent suspends and the child's end wakes it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from saga_core._codec.context import codec_for
from saga_core._engine.children import ChildEnd, child_saga_id
from saga_core._engine.executor import SagaRun
from saga_core._engine.hooks import Hooks
from saga_core._engine.resolution import StepResolver
from saga_core._model.error_text import describe_error
from saga_core._model.errors import (
    SagaAlreadyExistsError,
    SagaChildError,
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaNotFoundError,
)
from saga_core._model.saga import ChildSpec, Node, SagaDefinition
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaRecord, SagaStorage

from .leases import LeaseKeeper
from .local_runs import cancellable, is_running_here, running_here
from .resuming import check_record_matches, decode_context, resumed_run


class ChildRuns:
    """Runs child sagas in place for the runners of one mediator, worker or recovery.

    Args:
        storage, resolver, hooks, owner, lease_seconds: as for the parent's runs.
        keeper: renews the lease of a child while it runs in place (None: nothing does, as
            for ``recover_saga``, whose runs are not renewed either).
    """

    def __init__(
        self,
        *,
        storage: SagaStorage,
        resolver: StepResolver,
        hooks: Hooks,
        owner: str,
        lease_seconds: float,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self._storage = storage
        self._resolver = resolver
        self._hooks = hooks
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._keeper = keeper

    def for_definition(self, definition: SagaDefinition) -> ChildRuns | None:
        """This runner of children for a saga of ``definition``, or None when it has none."""
        return self if definition.child_steps else None

    async def settle(
        self, parent: SagaRun, node: Node, branch_context: Any | None = None
    ) -> ChildEnd:
        """See :meth:`saga_core._engine.children.ChildRunner.settle`."""
        child = node.child
        assert child is not None, "a SubSaga node"
        child_id = child_saga_id(parent.saga_id, child.node_id)
        in_branch = branch_context is not None
        record = await self._load(child_id)
        if record is None:
            base = branch_context if in_branch else parent.context
            context = _child_context(parent.saga_id, base, child)
            try:
                run = await SagaRun.start(
                    definition=child.definition,
                    saga_id=child_id,
                    context=context,
                    codec=codec_for(type(context)),
                    storage=self._storage,
                    resolver=self._resolver,
                    hooks=self._hooks,
                    owner=self._owner,
                    lease_seconds=self._lease_seconds,
                    children=self.for_definition(child.definition),
                    parent_id=parent.saga_id,
                )
            except SagaAlreadyExistsError:  # another runner of the parent just started it
                record = await self._storage.load(child_id)
            else:
                return await self._run_in_place(parent, run, in_branch=in_branch)
        return await self._go_on(parent, child, record, in_branch=in_branch)

    async def stop(self, parent: SagaRun, node: Node, reason: Exception) -> ChildEnd:
        """See :meth:`saga_core._engine.children.ChildRunner.stop`."""
        child = node.child
        assert child is not None, "a SubSaga node"
        child_id = child_saga_id(parent.saga_id, child.node_id)
        why = f"its parent saga {parent.saga_id} stopped: {describe_error(reason)}"
        try:
            record = await self._storage.request_cancel(child_id, reason=why)
        except SagaNotFoundError:
            return ChildEnd(child_id, None)  # never started: nothing to stop
        except SagaFinishedError:
            record = await self._storage.load(child_id)
        return await self._go_on(parent, child, record)

    async def _go_on(
        self, parent: SagaRun, child: ChildSpec, record: SagaRecord, *, in_branch: bool = False
    ) -> ChildEnd:
        """How the stored child ``record`` stands, once run here to its end if it can go on
        now."""
        definition = child.definition
        check_record_matches(definition, record)
        if _has_ended(record.status):
            return _ended(definition, record)
        if not _can_go_on(record) or is_running_here(record.saga_id):
            # It waits, or this process runs it already (a worker claimed it along with its
            # parent): its end wakes the parent.
            return ChildEnd(record.saga_id, None)
        try:
            claimed = await self._storage.claim(
                record.saga_id, owner=self._owner, lease_seconds=self._lease_seconds
            )
        except (SagaLeaseHeldError, SagaFinishedError):
            return ChildEnd(record.saga_id, None)  # the parent looks again once woken
        check_record_matches(definition, claimed)
        run = resumed_run(
            definition=definition,
            record=claimed,
            context=decode_context(definition, None, claimed),
            storage=self._storage,
            resolver=self._resolver,
            hooks=self._hooks,
            owner=self._owner,
            lease_seconds=self._lease_seconds,
            children=self.for_definition(definition),
            in_place=True,
        )
        return await self._run_in_place(parent, run, in_branch=in_branch)

    async def _run_in_place(self, parent: SagaRun, run: SagaRun, *, in_branch: bool) -> ChildEnd:
        """Run the child ``run`` to the end of this run, its results queued on ``parent``;
        the parent's deadline and cancels reach it (a branch's through its group)."""
        if parent.deadline_at is not None and (
            run.deadline_at is None or parent.deadline_at < run.deadline_at
        ):
            run.deadline_at = parent.deadline_at
        if not in_branch:
            parent.child = run
        if self._keeper is not None:
            self._keeper.hold(run)
        try:
            with running_here(run.saga_id), cancellable(run):
                await run.run_to_end(each=parent.queue_result)
        finally:
            if not in_branch:
                parent.child = None
            if self._keeper is not None:
                self._keeper.drop(run)
        if not _has_ended(run.status):
            return ChildEnd(run.saga_id, None)  # it waits: its end wakes the parent
        error = run.error
        return ChildEnd(
            run.saga_id,
            run.status,
            run.context,
            run.applied,
            None if error is None else describe_error(error),
        )

    async def _load(self, child_id: Any) -> SagaRecord | None:
        try:
            return await self._storage.load(child_id)
        except SagaNotFoundError:
            return None


def _child_context(parent_id: Any, parent_context: Any, child: ChildSpec) -> Any:
    """The child's context, built from the parent's by the node's ``context`` function.

    Raises:
        SagaChildError: the function raised, or built something else than the child's
            context type.
    """
    where = f"saga {parent_id}: the context function of {child.node_id}"
    try:
        context = child.context(parent_context)
    except Exception as exc:
        raise SagaChildError(
            f"{where} raised {describe_error(exc)}; nothing of the child was written, and "
            "recovery runs this step again once the function is fixed"
        ) from exc
    expected = child.definition.context_type
    if expected is not None and not isinstance(context, expected):
        raise SagaChildError(
            f"{where} returned {type(context).__qualname__}, not the child saga's context "
            f"type {expected.__qualname__}; nothing of the child was written"
        )
    return context


def _has_ended(status: SagaStatus) -> bool:
    """True when a child with ``status`` has ended for its parent: finished, or FAILED (its
    rollback is stuck; recovery retries it, and the parent compensates meanwhile)."""
    return status.is_terminal or status is SagaStatus.FAILED


def _can_go_on(record: SagaRecord) -> bool:
    """True when the stored child can be run now: not WAITING, or due (its timer passed, a
    signal it waits for or a cancel is there)."""
    if record.status is not SagaStatus.WAITING:
        return True
    if record.cancel_reason is not None:
        return True
    if record.wake_at is not None and record.wake_at <= datetime.now(timezone.utc):
        return True
    return any(signal.name == record.waiting_for for signal in record.signals)


def _ended(definition: SagaDefinition, record: SagaRecord) -> ChildEnd:
    """The end of a child stored as finished (COMPLETED, COMPENSATED) or FAILED."""
    if record.status is SagaStatus.COMPLETED:
        context = decode_context(definition, None, record)
        return ChildEnd(record.saga_id, record.status, context, record.applied)
    return ChildEnd(record.saga_id, record.status, error=record.error)
