"""The saga state machine as a pure function: state + event -> new state.

:func:`transition` decides everything a runner of one saga does — which step to call next,
what each checkpoint holds, when the saga compensates, which steps it rolls back and in which
order — and does none of it: no I/O, no clock, nothing raised. The state it returns
(:class:`~saga_core._engine.states.RunState`) names the write to make or the call to start;
the driver (:mod:`saga_core._engine.executor`) performs it and feeds back its outcome as the next
event. A write names the state it leads to (``Write.then``), decided with it: once the write is
durable the driver takes that state (:func:`written`) without another decision.

The rules it keeps:

* A new saga is written once (:func:`start`), then once per node: the write after the last
  node also sets COMPLETED, so a successful saga of n nodes costs n + 1 writes.
* A failure first makes the decision to compensate durable (COMPENSATING, or COMPENSATED when
  nothing was applied), and only then are the applied steps compensated, last applied first,
  one write each.
* A step is *applied* (compensated on rollback) once its act may have had an effect: it
  completed, or it was called and raised — unless it declares ``failed_act_leaves_no_effect``.
  A step whose checkpoint failed is applied too. A ``Fallback`` node applies the branches that
  may have run; when the node was in flight as an earlier runner stopped, either branch may
  have run, so both count as applied.
* A ``Parallel`` group runs its branches concurrently at one cursor: each completion is a
  write that adds the branch's steps to ``applied`` (so ``applied`` lists them in order of
  completion, and a resumed group runs only the branches not in it); the write of the last
  branch moves the cursor on. When the group fails, what its branches may have done is
  applied too, and the rollback compensates last completed first (concurrently for a
  ``compensate_parallel`` group).
* An exhausted compensation ends the run FAILED; its error keeps the original cause first.
* COMPLETED and COMPENSATED absorb every event; a fenced runner (another one owns the saga)
  writes nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from saga_core._model.error_text import describe_error
from saga_core._model.saga import Node, StepSpec
from saga_core._model.status import SagaStatus

from .states import (
    ACT_COMPLETED,
    ADVANCE,
    COMPENSATION_DONE,
    LEASE_LOST,
    SETTLE,
    SIGNAL_PENDING,
    WRITE_REFUSED,
    WRITTEN,
    Aborted,
    Act,
    ActFailed,
    ActInvalid,
    Await,
    BranchesCompleted,
    BranchesFailed,
    Call,
    ChildCompleted,
    ChildFailed,
    Compensate,
    CompensateAll,
    CompensationFailed,
    CompensationsEnded,
    Event,
    Interrupted,
    Lease,
    RunState,
    Signal,
    Suspend,
    TimedOut,
    WaitOver,
    Wake,
    Write,
    WriteFailed,
    WriteKind,
)

#: Separates a FAILED saga's cause from its compensation failure in the stored error text;
#: the failure part starts with :data:`FAILURE_PREFIX`. (A cause may hold line breaks itself.)
FAILURE_SEPARATOR = "\n"
FAILURE_PREFIX = "compensation of "


# --- entry points ------------------------------------------------------------------------------


def start(nodes: Sequence[Node]) -> RunState:
    """The state of a new saga of ``nodes``, waiting for its creation write (RUNNING at
    node 0)."""
    created = _next(nodes, RunState(SagaStatus.RUNNING, 0, ()))
    create = Write("create", SagaStatus.RUNNING, 0, (), None, "keep", True, created)
    return RunState(SagaStatus.RUNNING, 0, (), write=create)


def written(state: RunState) -> RunState:
    """The state once the write in flight is durable: the one that write named. A runner
    with no write in flight (fenced meanwhile) stays as it is."""
    write = state.write
    return state if write is None else write.then


def resumed(
    status: SagaStatus,
    cursor: int,
    applied: tuple[str, ...],
    error: str | None,
    *,
    on_fallback: bool = False,
    wake: Wake | None = None,
    claimed_before: bool = False,
) -> RunState:
    """The state of a runner that continues a stored saga (claimed by recovery).

    The node at ``cursor`` of a RUNNING saga was in flight when the earlier runner stopped
    (``on_fallback``: the timeout step of a wait that timed out); a WAITING saga (``wake`` as
    stored) has nothing in flight, unless ``claimed_before``: an earlier runner claimed it and
    stopped without writing, so it may have gone past the wait (its signal there, its timer
    due) into the next step. A FAILED saga's stored error ``"<cause>\\n<compensation
    failure>"`` keeps its cause only.
    """
    waiting = status is SagaStatus.WAITING
    in_flight = status is SagaStatus.RUNNING or (waiting and claimed_before)
    return RunState(
        status,
        cursor,
        applied,
        cause_of(error) if error else None,
        on_fallback=on_fallback,
        resumed_at=cursor if in_flight else None,
        wake=wake if waiting else None,
    )


def cause_of(error_text: str) -> str:
    """The cause part of a stored error: a FAILED record's error is ``"<cause>\\n<failure>"``,
    and the cause may itself span several lines."""
    cause, separator, _ = error_text.rpartition(FAILURE_SEPARATOR + FAILURE_PREFIX)
    return cause if separator else error_text


def transition(nodes: Sequence[Node], state: RunState, event: Event) -> RunState:
    """The state after ``event``: its ``write`` is the write to make, else its ``call`` the
    call to start next; neither when the run has nothing more to do.

    ``nodes`` are the saga definition's nodes. An event that does not apply to ``state``
    leaves it as it is: the outcome of a call or write that is not in flight, anything but
    the outcome of its write in flight for a fenced or halted runner, and anything at all for
    a finished saga (COMPLETED or COMPENSATED waits for nothing).
    """
    handler, applies_when_stopped = _HANDLERS[event if type(event) is Signal else type(event)]
    if (state.fenced or state.halted) and not applies_when_stopped:
        return state
    return handler(nodes, state, event)


# --- forward -----------------------------------------------------------------------------------


def _advance(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    if state.call is not None or state.write is not None or state.status.is_terminal:
        return state  # already waiting for an outcome, or finished
    return _next(nodes, state)


def _next(nodes: Sequence[Node], state: RunState) -> RunState:
    """``state`` (idle, not finished) waiting for the next call, or for its final write when
    nothing is left to call."""
    if state.status.is_forward:
        cursor = state.cursor
        if cursor < len(nodes):
            if nodes[cursor].wait is not None and not state.on_fallback:
                return _calling(state, Await(cursor))
            return _calling(state, Act(cursor, state.on_fallback))
        return _write(nodes, state, "finish", SagaStatus.COMPLETED, strict_context=True)
    # COMPENSATING, or FAILED as an earlier runner left it: compensate what is left.
    if state.applied:
        together = _compensated_together(nodes, state.applied)
        if len(together) > 1:
            return _calling(state, CompensateAll(together))
        return _calling(state, Compensate(state.applied[-1]))
    return _write(nodes, state, "finish", SagaStatus.COMPENSATED)


def _calling(state: RunState, call: Call) -> RunState:
    """``state`` waiting for ``call``."""
    return RunState(
        state.status,
        state.cursor,
        state.applied,
        state.error,
        call,
        None,
        state.on_fallback,
        state.node_applied,
        state.resumed_at,
        False,
        False,
        state.consume,
        state.wake,
    )


def _act_completed(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    if not isinstance(state.call, Act):
        return state
    return _node_completed(nodes, state, _applied_with_node(nodes, state))


def _node_completed(
    nodes: Sequence[Node], state: RunState, applied: tuple[str, ...], adds: tuple[str, ...] = ()
) -> RunState:
    """``state`` once the node at its cursor completed with ``applied``: its write moves the
    cursor on (``adds``: the group's branches it records as done)."""
    cursor = state.cursor + 1
    error = state.error
    consume = state.consume
    if cursor == len(nodes):
        done = RunState(SagaStatus.COMPLETED, cursor, applied, error)
        step = Write(
            "step",
            SagaStatus.COMPLETED,
            cursor,
            applied,
            error,
            "release",
            True,
            done,
            consume_signal=consume,
            adds=adds,
        )
    else:
        # RUNNING (a claimed WAITING saga too, once it moves on), keeping the lease; once the
        # write is durable the next node runs.
        following = _next(nodes, RunState(SagaStatus.RUNNING, cursor, applied, error))
        step = Write(
            "step",
            SagaStatus.RUNNING,
            cursor,
            applied,
            error,
            "keep",
            True,
            following,
            consume_signal=consume,
            adds=adds,
        )
    # ``wake`` is kept while the write is in flight: until it is durable a claimed WAITING
    # saga is still stored as it was, and a hand-back must write it back so.
    return RunState(
        state.status, cursor, applied, error, None, step, consume=consume, wake=state.wake
    )


def _act_invalid(nodes: Sequence[Node], state: RunState, event: ActInvalid) -> RunState:
    if not isinstance(state.call, Act):
        return state
    return _compensate_after(
        nodes, state._replace(applied=_applied_with_node(nodes, state)), (), event.error
    )


def _applied_with_node(nodes: Sequence[Node], state: RunState) -> tuple[str, ...]:
    """``state.applied`` with what the node at the cursor applied, its running branch having
    completed."""
    node = nodes[state.cursor]
    resumed = state.resumed_at == state.cursor
    # A resumed step may be listed already (see _with).
    return _with(state.applied, completed_ids(node, state.on_fallback, state.node_applied, resumed))


def completed_ids(
    node: Node, on_fallback: bool, node_applied: tuple[str, ...], resumed: bool
) -> tuple[str, ...]:
    """The steps a step or ``Fallback`` node (or a wait's timeout step) applied once the step
    it runs completed — or returned an invalid result, its effect done.

    ``on_fallback``: the fallback (or timeout) step ran, after ``node_applied`` (what the
    primary may have applied); ``resumed``: an earlier runner stopped inside this node, so
    either branch of a ``Fallback`` may have run, and both are rolled back.
    """
    if node.fallback is None:
        assert node.primary is not None, "a step node has a primary"
        return (node.primary.step_id,)
    if on_fallback:
        # A wait has no effect; its timeout step (the only act a wait runs) may have.
        return (*node_applied, node.fallback.step_id)
    assert node.primary is not None, "a Fallback node has a primary"
    if resumed:
        return (node.primary.step_id, node.fallback.step_id)
    return (node.primary.step_id,)


def failure_ids(spec: StepSpec, node_applied: tuple[str, ...], called: bool) -> tuple[str, ...]:
    """The steps that may have had an effect once ``spec``'s act failed with no fallback left
    to run: ``node_applied`` (its node's primary), and ``spec`` if it was called, unless it
    declares ``failed_act_leaves_no_effect``."""
    effect = (spec.step_id,) if called and not spec.failed_act_leaves_no_effect else ()
    return (*node_applied, *effect)


def after_primary_failed(
    node: Node, event: ActFailed, resumed: bool
) -> tuple[bool, tuple[str, ...]]:
    """Whether the fallback of a ``Fallback`` node runs once its primary failed with
    ``event``, and the primary's steps that may have had an effect: it may if it was called,
    or if an earlier runner stopped inside this node (``resumed``: it may have called it)."""
    primary = node.primary
    assert primary is not None, "only a Fallback node has a fallback branch"
    may_have_run = event.called or resumed
    primary_ids = (
        (primary.step_id,) if may_have_run and not primary.failed_act_leaves_no_effect else ()
    )
    runs_fallback = (
        event.refused
        or not node.failure_exceptions
        or isinstance(event.error, node.failure_exceptions)
    )
    return runs_fallback, primary_ids


def interrupted_ids(
    node: Node, spec: StepSpec, node_applied: tuple[str, ...], resumed: bool
) -> tuple[str, ...]:
    """The steps that may have had an effect once ``spec``'s act (a step of ``node``) was
    cancelled mid-flight: it may, unless it declares ``failed_act_leaves_no_effect``; after
    a stop inside this node (``resumed``), whatever an earlier runner may have run too."""
    effect = () if spec.failed_act_leaves_no_effect else (spec.step_id,)
    ids = (*node_applied, *effect)
    if resumed and node.wait is None:
        ids = (*ids, *node.step_ids)
    return ids


def branch_done(node: Node, applied: tuple[str, ...]) -> bool:
    """True once the branch ``node`` of a group completed as ``applied`` records it: a step
    or ``Fallback`` once one of its steps is applied (going forward, a branch's steps are
    recorded only when it completes), a nested group once all its branches are."""
    if node.group is not None:
        return all(branch_done(branch, applied) for branch in node.group.branches)
    return any(step_id in applied for step_id in node.step_ids)


def _act_failed(nodes: Sequence[Node], state: RunState, event: ActFailed) -> RunState:
    if not isinstance(state.call, Act):
        return state
    node = nodes[state.cursor]
    if node.fallback is None or state.on_fallback:
        spec = node.branch(node.fallback is not None)
        ids = failure_ids(spec, state.node_applied, event.called)
        return _compensate_after(nodes, state, ids, event.error)
    runs_fallback, primary_ids = after_primary_failed(node, event, state.resumed_at == state.cursor)
    if not runs_fallback:
        return _compensate_after(nodes, state, primary_ids, event.error)
    return state._replace(
        on_fallback=True,
        node_applied=primary_ids,
        call=Act(state.cursor, fallback=True),
    )


def _branches_completed(
    nodes: Sequence[Node], state: RunState, event: BranchesCompleted
) -> RunState:
    if not _in_group(nodes, state):
        return state
    applied = _with(state.applied, event.ids)
    adds = applied[len(state.applied) :]
    if branch_done(nodes[state.cursor], applied):
        return _node_completed(nodes, state, applied, adds)
    # Others still run: the completions are written, the cursor stays at the group.
    then = RunState(
        SagaStatus.RUNNING,
        state.cursor,
        applied,
        state.error,
        Act(state.cursor),
        resumed_at=state.resumed_at,
    )
    write = Write(
        "branch",
        SagaStatus.RUNNING,
        state.cursor,
        applied,
        state.error,
        "keep",
        True,
        then,
        consume_signal=state.consume,
        adds=adds,
    )
    return RunState(
        state.status,
        state.cursor,
        applied,
        state.error,
        None,
        write,
        resumed_at=state.resumed_at,
        consume=state.consume,
        wake=state.wake,
    )


def _branches_failed(nodes: Sequence[Node], state: RunState, event: BranchesFailed) -> RunState:
    if not _in_group(nodes, state):
        return state
    return _compensate_after(nodes, state, event.ids, event.error)


def _child_completed(nodes: Sequence[Node], state: RunState, event: ChildCompleted) -> RunState:
    if not _at_child(nodes, state):
        return state
    applied = _with(state.applied, event.ids)
    return _node_completed(nodes, state, applied, applied[len(state.applied) :])


def _child_failed(nodes: Sequence[Node], state: RunState, event: ChildFailed) -> RunState:
    if not _at_child(nodes, state):
        return state
    # Nothing of the child is applied here: its own record answers for its steps.
    return _compensate_after(nodes, state, (), event.error)


def _at_child(nodes: Sequence[Node], state: RunState) -> bool:
    """True while the ``SubSaga`` node at the cursor is in flight."""
    return isinstance(state.call, Act) and nodes[state.cursor].child is not None


def _in_group(nodes: Sequence[Node], state: RunState) -> bool:
    """True while the group at the cursor is in flight."""
    return isinstance(state.call, Act) and nodes[state.cursor].group is not None


def _compensate_after(
    nodes: Sequence[Node],
    state: RunState,
    ids: tuple[str, ...],
    error: Exception,
    *,
    unless_signal: str | None = None,
) -> RunState:
    """The decision to compensate after ``error``, with ``ids`` applied too (refused, when
    ``unless_signal`` is given, if that signal arrived first)."""
    applied = _with(state.applied, ids)
    deciding = RunState(
        state.status,
        state.cursor,
        applied,
        describe_error(error),
        consume=state.consume,
        wake=state.wake,
    )
    status = SagaStatus.COMPENSATING if applied else SagaStatus.COMPENSATED
    return _write(
        nodes,
        deciding,
        "decision",
        status,
        unless_signal=unless_signal,
        cursor=_before_waits(nodes, state.cursor),
    )


def _before_waits(nodes: Sequence[Node], cursor: int) -> int:
    """``cursor`` moved back over the waits just before it: the stored cursor may be the
    first of them, as waits are passed without a write. A decision to compensate is written
    there, so that it is never ahead of the stored saga (a cancelled saga refuses a write
    that moves its cursor forward)."""
    while 0 < cursor <= len(nodes) and nodes[cursor - 1].wait is not None:
        cursor -= 1
    return cursor


# --- compensation ------------------------------------------------------------------------------


def _compensation_done(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    if not isinstance(state.call, Compensate):
        return state
    return _compensated(nodes, state, state.applied[:-1])


def _compensated(nodes: Sequence[Node], state: RunState, remaining: tuple[str, ...]) -> RunState:
    """``state`` once compensations completed, leaving ``remaining`` to compensate: written
    COMPENSATING, or COMPENSATED when nothing is left."""
    status = SagaStatus.COMPENSATING if remaining else SagaStatus.COMPENSATED
    return _write(
        nodes,
        RunState(state.status, state.cursor, remaining, state.error),
        "compensation",
        status,
    )


def _compensation_failed(
    nodes: Sequence[Node], state: RunState, event: CompensationFailed
) -> RunState:
    if not isinstance(state.call, Compensate):
        return state
    return _exhausted(state, state.call.step_id, event.error)


def _compensations_ended(
    nodes: Sequence[Node], state: RunState, event: CompensationsEnded
) -> RunState:
    if not isinstance(state.call, CompensateAll):
        return state
    remaining = tuple(step_id for step_id in state.applied if step_id not in event.done)
    if event.failure is not None:
        step_id, error = event.failure
        return _exhausted(state._replace(applied=remaining), step_id, error)
    return _compensated(nodes, state, remaining)


def _compensated_together(nodes: Sequence[Node], applied: tuple[str, ...]) -> tuple[str, ...]:
    """The steps compensated next: the last applied one, with the ones applied just before
    it by the same ``compensate_parallel`` group — the innermost such group holding it, its
    nested groups' steps included — compensated concurrently."""
    last = applied[-1]
    # The innermost group holding ``last`` that compensates in parallel decides.
    chosen: Node | None = None
    branches: Sequence[Node] = nodes
    while (node := next((n for n in branches if last in n.step_ids), None)) is not None:
        if node.group is None:
            break
        if node.group.compensate_parallel:
            chosen = node
        branches = node.group.branches
    if chosen is None:
        return (last,)
    members = chosen.step_ids
    count = 0
    for step_id in reversed(applied):
        if step_id not in members:
            break
        count += 1
    return applied[len(applied) - count :]


def _exhausted(state: RunState, step_id: str, error: Exception) -> RunState:
    """``state`` once the compensation of ``step_id`` was exhausted by ``error``: FAILED,
    written, and the runner stops."""
    failure = f"{FAILURE_PREFIX}{step_id} failed: {describe_error(error)}"
    cause = state.error
    # The original cause stays first, so that it survives a later recovery.
    text = f"{cause}{FAILURE_SEPARATOR}{failure}" if cause else failure
    # The runner stops here: recovery retries the rollback later.
    stopped = RunState(SagaStatus.FAILED, state.cursor, state.applied, cause, halted=True)
    failed = Write(
        "compensation",
        SagaStatus.FAILED,
        state.cursor,
        state.applied,
        text,
        "pause",
        False,
        stopped,
    )
    return RunState(state.status, state.cursor, state.applied, cause, halted=True, write=failed)


# --- writes ------------------------------------------------------------------------------------


def _write(
    nodes: Sequence[Node],
    state: RunState,
    kind: WriteKind,
    status: SagaStatus,
    *,
    strict_context: bool = False,
    unless_signal: str | None = None,
    cursor: int | None = None,
) -> RunState:
    """``state`` waiting to be written with ``status`` (at ``cursor``, default the state's);
    the lease is renewed unless the saga ends. Once durable, the runner goes on with what
    comes next, unless the saga ended or the runner stopped."""
    lease: Lease = "release" if status.is_terminal else "keep"
    if cursor is None:
        cursor = state.cursor
    durable = RunState(
        status,
        cursor,
        state.applied,
        state.error,
        resumed_at=state.resumed_at,
        halted=state.halted,
        fenced=state.fenced,
    )
    then = durable if state.halted or state.fenced or status.is_terminal else _next(nodes, durable)
    write = Write(
        kind,
        status,
        cursor,
        state.applied,
        state.error,
        lease,
        strict_context,
        then,
        unless_signal=unless_signal,
        consume_signal=state.consume,
    )
    return state._replace(call=None, write=write)


def _written(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    return written(state)


def _write_failed(nodes: Sequence[Node], state: RunState, event: WriteFailed) -> RunState:
    write = state.write
    if write is None:
        return state
    settled = state._replace(write=None)
    if write.kind == "branch" and not state.fenced:
        # Branches ran but their checkpoint failed: they stay applied, and the group stops
        # (the driver cancels the branches still running and reports BranchesFailed).
        return settled._replace(call=Act(state.cursor))
    if write.kind != "step" or state.fenced:
        # The saga stays as last written; the driver reports the failure and hands it back.
        return settled
    # The node ran but its checkpoint failed: it is applied, so it is rolled back with the
    # others if the decision to compensate can be written.
    return _compensate_after(nodes, settled._replace(cursor=state.cursor - 1), (), event.error)


def _fenced(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    if state.status.is_terminal:
        return state
    return state._replace(fenced=True, call=None, write=None)


def _hand_back(nodes: Sequence[Node], state: RunState, event: Interrupted) -> RunState:
    if state.status.is_terminal:
        return state
    lease: Lease = "pause" if event.pause else "release"
    wake = state.wake
    if wake is not None:
        # Claimed WAITING and nothing written since: hand it back exactly as stored (a
        # signal taken meanwhile stays pending, a timer stays due).
        stored = RunState(
            SagaStatus.WAITING, wake.cursor, wake.applied, None, halted=True, wake=wake
        )
        back = Write(
            "hand_back",
            SagaStatus.WAITING,
            wake.cursor,
            wake.applied,
            None,
            lease,
            False,
            stored,
            wake=wake,
        )
        return stored._replace(write=back)
    cursor = state.cursor
    applied = state.applied
    pending = state.write
    on_fallback = state.on_fallback
    if pending is not None and pending.kind == "step":
        # The node's checkpoint did not finish: the node runs again on recovery.
        cursor -= 1
    if pending is not None and pending.adds:
        # Neither are these branches done: their context changes are not written.
        applied = tuple(step_id for step_id in applied if step_id not in pending.adds)
    if state.consume is not None:
        # A wait took a signal that no write consumed: the context handed back is the last
        # written one, without its payload, so the saga goes back to that wait (the last signal
        # wait before the cursor: only sleeps are passed without a write) and takes it again.
        cursor = max(i for i in range(cursor) if _signal_of(nodes[i]) is not None)
        on_fallback = False
    # The runner stops once the saga is handed back.
    stopped = RunState(
        state.status, cursor, applied, state.error, resumed_at=state.resumed_at, halted=True
    )
    back = Write(
        "hand_back",
        state.status,
        cursor,
        applied,
        state.error,
        lease,
        False,
        stopped,
        next_step=_branch_id(nodes, cursor, on_fallback),
    )
    return stopped._replace(write=back)


# --- waits -------------------------------------------------------------------------------------


def _wait_over(nodes: Sequence[Node], state: RunState, event: WaitOver) -> RunState:
    if not isinstance(state.call, Await):
        return state
    cursor = state.cursor + 1
    consume = event.consume or state.consume
    # Nothing is written for the wait itself: the next write (the next node's, or the final
    # one) records it, consuming the signal with it. An earlier runner that stopped at this
    # wait may have passed it as well, without a write: it may have stopped inside the next
    # node.
    resumed_at = cursor if state.resumed_at == state.cursor else state.resumed_at
    after = RunState(
        state.status,
        cursor,
        state.applied,
        state.error,
        resumed_at=resumed_at,
        consume=consume,
        wake=state.wake,
    )
    return _next(nodes, after)


def _suspend(nodes: Sequence[Node], state: RunState, event: Suspend) -> RunState:
    if not isinstance(state.call, Await) and not _at_child(nodes, state):
        return state
    wake = event.wake
    waiting = RunState(
        SagaStatus.WAITING, state.cursor, state.applied, state.error, halted=True, wake=wake
    )
    write = Write(
        "suspend",
        SagaStatus.WAITING,
        state.cursor,
        state.applied,
        state.error,
        "release",
        True,  # a signal taken by an earlier wait is in the context: store it
        waiting,
        wake=wake,
        unless_signal=wake.waiting_for,
        consume_signal=state.consume,
    )
    return state._replace(call=None, write=write)


def _timed_out(nodes: Sequence[Node], state: RunState, event: TimedOut) -> RunState:
    if not isinstance(state.call, Await):
        return state
    node = nodes[state.cursor]
    assert node.wait is not None, "only a wait times out"
    signal = node.wait.signal
    timeout_step = node.fallback
    if timeout_step is None:
        return _compensate_after(nodes, state, (), event.error, unless_signal=signal)
    # The timeout is made durable before its step runs, so that a signal arriving later is
    # refused instead of racing with the step.
    running = RunState(
        SagaStatus.RUNNING,
        state.cursor,
        state.applied,
        state.error,
        Act(state.cursor, fallback=True),
        on_fallback=True,
    )
    write = Write(
        "timeout",
        SagaStatus.RUNNING,
        state.cursor,
        state.applied,
        state.error,
        "keep",
        True,
        running,
        unless_signal=signal,
        consume_signal=state.consume,
        next_step=timeout_step.step_id,
    )
    return state._replace(call=None, write=write)


def _settle(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    """The wait in flight has its signal, but the one an earlier wait took is not written yet
    and a write consumes one signal: write the progress up to this wait first (consuming the
    earlier one), then evaluate this wait again."""
    if not isinstance(state.call, Await) or state.consume is None:
        return state
    again = RunState(
        SagaStatus.RUNNING, state.cursor, state.applied, state.error, Await(state.cursor)
    )
    write = Write(
        "progress",
        SagaStatus.RUNNING,
        state.cursor,
        state.applied,
        state.error,
        "keep",
        True,  # the earlier signal's payload is in the context: store it with its consumption
        again,
        consume_signal=state.consume,
    )
    return state._replace(call=None, write=write)


def _signal_pending(nodes: Sequence[Node], state: RunState, event: Signal) -> RunState:
    """The suspend or timeout write in flight lost to a signal: evaluate the wait again (the
    driver reads the signal first)."""
    write = state.write
    if write is None or write.unless_signal is None:
        return state
    again: Call = (
        Act(state.cursor) if nodes[state.cursor].child is not None else Await(state.cursor)
    )
    return state._replace(write=None, call=again, error=None)


def _aborted(nodes: Sequence[Node], state: RunState, event: Aborted) -> RunState:
    if not state.status.is_forward:
        return state  # compensating already: a compensation is never cut short
    cursor = state.cursor
    ids: tuple[str, ...] = ()
    write = state.write
    call = state.call
    if write is not None:
        if write.kind == "step":
            cursor -= 1  # the node completed: it is in ``applied`` already
    elif isinstance(call, Act) and event.in_flight:
        node = nodes[cursor]
        spec = node.branch(call.fallback)
        ids = interrupted_ids(node, spec, state.node_applied, state.resumed_at == cursor)
    elif state.resumed_at == cursor and cursor < len(nodes):
        # An earlier runner stopped inside this node: whatever it may have run counts.
        ids = _may_have_run(nodes, cursor, state.on_fallback)
    settled = state._replace(cursor=cursor, call=None, write=None, on_fallback=False)
    return _compensate_after(nodes, settled, (*ids, *event.ids), event.error)


def _may_have_run(nodes: Sequence[Node], cursor: int, on_fallback: bool) -> tuple[str, ...]:
    """The steps an earlier runner that stopped at node ``cursor`` may have run: the node's
    own; at a wait, its timeout step once the timeout was written, else those of the first
    step node after it (a wait is passed without a write when its signal is there or its
    timer is due, and the next write is that node's)."""
    node = nodes[cursor]
    if node.wait is None:
        # A child's own record answers for its steps (the parent cancels it, and compensates
        # those of a child that had completed).
        children = {i for child in node.child_nodes() for i in child.step_ids}
        return tuple(i for i in node.step_ids if i not in children)
    if on_fallback:
        return node.step_ids[1:]
    following = next((later for later in nodes[cursor + 1 :] if later.wait is None), None)
    return () if following is None else following.step_ids


def _signal_of(node: Node) -> str | None:
    """The signal a node waits for (None: not a signal wait)."""
    return None if node.wait is None else node.wait.signal


def _branch_id(nodes: Sequence[Node], cursor: int, on_fallback: bool) -> str | None:
    """The id to store as the step at ``cursor`` when it is not the node's own: the timeout
    step of a wait that timed out."""
    if on_fallback and cursor < len(nodes):
        node = nodes[cursor]
        if node.wait is not None and node.fallback is not None:
            return node.fallback.step_id
    return None


def _with(applied: tuple[str, ...], ids: tuple[str, ...]) -> tuple[str, ...]:
    """``applied`` followed by those of ``ids`` not in it yet (a resumed step may be listed
    already: an earlier runner recorded it before its checkpoint failed)."""
    for step_id in ids:
        if step_id not in applied:
            applied = (*applied, step_id)
    return applied


_Handler = Callable[[Sequence[Node], RunState, Any], RunState]

#: Each event's handler (by signal, or by record type), and whether it applies to a fenced or
#: halted runner too: the outcome of the write in flight does, nothing else does.
_HANDLERS: dict[Any, tuple[_Handler, bool]] = {
    ADVANCE: (_advance, False),
    ACT_COMPLETED: (_act_completed, False),
    ActInvalid: (_act_invalid, False),
    ActFailed: (_act_failed, False),
    COMPENSATION_DONE: (_compensation_done, False),
    CompensationFailed: (_compensation_failed, False),
    CompensationsEnded: (_compensations_ended, False),
    BranchesCompleted: (_branches_completed, False),
    BranchesFailed: (_branches_failed, False),
    ChildCompleted: (_child_completed, False),
    ChildFailed: (_child_failed, False),
    Interrupted: (_hand_back, False),
    WRITTEN: (_written, True),
    WriteFailed: (_write_failed, True),
    WRITE_REFUSED: (_fenced, True),
    LEASE_LOST: (_fenced, True),
    SIGNAL_PENDING: (_signal_pending, False),
    SETTLE: (_settle, False),
    WaitOver: (_wait_over, False),
    Suspend: (_suspend, False),
    TimedOut: (_timed_out, False),
    Aborted: (_aborted, False),
}
