"""The engine's state machine (``saga_core._engine.transitions``), exhaustively and by example.

A Hypothesis state machine drives the pure transition function with every event a runner can
see — acts that complete, fail (called or not, refused by a breaker, invalid results),
compensations that complete or are exhausted, writes that are durable, fail or are refused,
lost leases, interruptions and recovery by a new runner — over random saga shapes (plain
steps, ``Fallback`` nodes, steps whose failed act leaves no effect), and checks the rules the
engine keeps after every event.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from saga_core import SagaStatus, SagaStepHandler, SagaWaitTimedOutError, Sleep, WaitForSignal
from saga_core._engine import states
from saga_core._engine import transitions as machine
from saga_core._engine.states import (
    Aborted,
    Act,
    ActFailed,
    ActInvalid,
    Await,
    Compensate,
    CompensationFailed,
    Interrupted,
    RunState,
    Suspend,
    TimedOut,
    WaitOver,
    Wake,
    Write,
    WriteFailed,
)
from saga_core._model.policy import DEFAULT_COMPENSATION_RETRY, NO_RETRY
from saga_core._model.saga import Node, StepSpec
from saga_core._model.waits import WaitSpec

#: Every durable status change the state machine may make (a hand-back rewrites the same).
ALLOWED = {
    (SagaStatus.RUNNING, SagaStatus.RUNNING),
    (SagaStatus.RUNNING, SagaStatus.COMPLETED),
    (SagaStatus.RUNNING, SagaStatus.COMPENSATING),
    (SagaStatus.RUNNING, SagaStatus.COMPENSATED),
    (SagaStatus.COMPENSATING, SagaStatus.COMPENSATING),
    (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED),
    (SagaStatus.COMPENSATING, SagaStatus.FAILED),
    (SagaStatus.FAILED, SagaStatus.COMPENSATING),
    (SagaStatus.FAILED, SagaStatus.COMPENSATED),
    (SagaStatus.FAILED, SagaStatus.FAILED),
}


class _Step(SagaStepHandler[Any, Any]):
    async def act(self, context: Any) -> None:
        return None


def spec(step_id: str, *, no_effect: bool = False) -> StepSpec:
    return StepSpec(_Step, step_id, NO_RETRY, DEFAULT_COMPENSATION_RETRY, None, no_effect)


def plain(step_id: str, *, no_effect: bool = False) -> Node:
    return Node(spec(step_id, no_effect=no_effect))


def fallback(
    primary: str,
    other: str,
    *,
    no_effect: bool = False,
    only: tuple[type[Exception], ...] = (),
) -> Node:
    return Node(spec(primary, no_effect=no_effect), spec(other), None, only)


@st.composite
def saga_shapes(draw: st.DrawFn) -> tuple[Node, ...]:
    nodes: list[Node] = []
    for index in range(draw(st.integers(1, 4))):
        no_effect = draw(st.booleans())
        if draw(st.booleans()):
            only = draw(st.sampled_from([(), (ValueError,)]))
            nodes.append(fallback(f"p{index}", f"f{index}", no_effect=no_effect, only=only))
        else:
            nodes.append(plain(f"s{index}", no_effect=no_effect))
    return tuple(nodes)


class SagaRunner(RuleBasedStateMachine):
    """One saga, its stored record and its runners, driven event by event."""

    @initialize(nodes=saga_shapes())
    def create(self, nodes: tuple[Node, ...]) -> None:
        self.nodes = nodes
        created = machine.start(nodes)
        assert created.write is not None and created.write.kind == "create"
        self.state = created
        self.stored: Write = created.write
        self.writes: list[Write] = []  # durable, in order (the creation first)
        self.compensations: list[str] = []  # compensations called, in order
        self.applied_at_decision: tuple[str, ...] | None = None
        self.effects: set[str] = set()  # steps whose act may have had an effect
        self.clean = True  # no failure, interruption, conflict or recovery so far
        self.fenced_seen = False
        self.handed_back = False
        self.feed(states.WRITTEN)

    # --- helpers ---------------------------------------------------------------------------

    def feed(self, event: states.Event) -> RunState:
        before = self.state
        after = machine.transition(self.nodes, before, event)
        write = before.write
        if self.handed_back:
            assert after.call is None and after.write is None  # this runner is done
        if event is states.WRITTEN and write is not None and not before.status.is_terminal:
            assert (self.stored.status, write.status) in ALLOWED, (self.stored, write)
            self.stored = write
            self.writes.append(write)
            if write.kind == "decision":
                self.applied_at_decision = write.applied
            self.handed_back = write.kind == "hand_back"
        call = after.call
        if isinstance(call, Compensate) and call != before.call:
            # Durable before any compensation: the decision (or an earlier FAILED).
            assert self.stored.status in (SagaStatus.COMPENSATING, SagaStatus.FAILED), self.stored
            # Last applied first.
            assert call.step_id == after.applied[-1]
            self.compensations.append(call.step_id)
        self.state = after
        return after

    def running_act(self) -> Act | None:
        call = self.state.call
        return call if isinstance(call, Act) else None

    def act_spec(self) -> StepSpec:
        call = self.running_act()
        assert call is not None
        node = self.nodes[call.node]
        chosen = node.fallback if call.fallback else node.primary
        assert chosen is not None
        return chosen

    # --- events ----------------------------------------------------------------------------

    @rule(events=st.integers(1, 8))
    def proceeds_without_trouble(self, events: int) -> None:
        """What a healthy run sees next, ``events`` times: acts and compensations complete,
        writes are durable."""
        for _ in range(events):
            state = self.state
            if state.write is not None:
                self.write_is_durable()
            elif isinstance(state.call, Act):
                self.act_completes()
            elif isinstance(state.call, Compensate):
                self.compensation_completes()
            elif not (state.status.is_terminal or state.halted or state.fenced):
                self.advance()

    @precondition(lambda self: self.state.call is None and self.state.write is None)
    @rule()
    def advance(self) -> None:
        self.feed(states.ADVANCE)

    @precondition(lambda self: isinstance(self.state.call, Act))
    @rule()
    def act_completes(self) -> None:
        self.effects.add(self.act_spec().step_id)
        self.feed(states.ACT_COMPLETED)

    @precondition(lambda self: isinstance(self.state.call, Act))
    @rule(called=st.booleans(), refused=st.booleans(), value_error=st.booleans())
    def act_fails(self, called: bool, refused: bool, value_error: bool) -> None:
        self.clean = False
        chosen = self.act_spec()
        called = called and not refused  # a breaker that refused did not call the step
        if called and not chosen.failed_act_leaves_no_effect:
            self.effects.add(chosen.step_id)
        error = ValueError("boom") if value_error else RuntimeError("boom")
        self.feed(ActFailed(error, called=called, refused=refused))

    @precondition(lambda self: isinstance(self.state.call, Act))
    @rule()
    def act_returns_garbage(self) -> None:
        self.clean = False
        self.effects.add(self.act_spec().step_id)
        self.feed(ActInvalid(TypeError("not a result")))

    @precondition(lambda self: isinstance(self.state.call, Compensate))
    @rule()
    def compensation_completes(self) -> None:
        self.feed(states.COMPENSATION_DONE)

    @precondition(lambda self: isinstance(self.state.call, Compensate))
    @rule()
    def compensation_is_exhausted(self) -> None:
        self.clean = False
        self.feed(CompensationFailed(RuntimeError("refund refused")))

    @precondition(lambda self: self.state.write is not None)
    @rule()
    def write_is_durable(self) -> None:
        self.feed(states.WRITTEN)

    @precondition(lambda self: self.state.write is not None)
    @rule()
    def write_fails(self) -> None:
        self.clean = False
        self.feed(WriteFailed(ConnectionError("storage down")))

    @precondition(lambda self: self.state.write is not None)
    @rule()
    def write_is_refused(self) -> None:
        self.clean = False
        self.fenced_seen = not self.state.status.is_terminal
        self.feed(states.WRITE_REFUSED)

    @rule()
    def lease_is_lost(self) -> None:
        self.clean = False
        self.fenced_seen = not self.state.status.is_terminal
        self.feed(states.LEASE_LOST)

    @rule(pause=st.booleans())
    def interrupted(self, pause: bool) -> None:
        self.clean = False
        self.feed(Interrupted(pause=pause))

    @precondition(lambda self: not self.stored.status.is_terminal)
    @rule()
    def recovered_by_a_new_runner(self) -> None:
        # The old runner is gone; a new one claims the saga as it is stored.
        self.clean = False
        self.fenced_seen = False
        self.handed_back = False
        stored = self.stored
        self.state = machine.resumed(stored.status, stored.cursor, stored.applied, stored.error)
        self.effects = set(stored.applied)
        self.applied_at_decision = None
        self.compensations = []

    @rule(
        event=st.sampled_from(
            [
                states.ADVANCE,
                states.ACT_COMPLETED,
                states.COMPENSATION_DONE,
                states.WRITTEN,
                states.WRITE_REFUSED,
                states.LEASE_LOST,
                ActFailed(RuntimeError("x")),
                ActInvalid(TypeError("x")),
                CompensationFailed(RuntimeError("x")),
                WriteFailed(ConnectionError("x")),
                Interrupted(),
            ]
        )
    )
    def any_event_on_a_finished_or_fenced_runner(self, event: states.Event) -> None:
        state = self.state
        assume(state.status.is_terminal or (state.fenced and state.write is None))
        after = machine.transition(self.nodes, state, event)
        if state.status.is_terminal:
            assert after is state  # terminal states absorb every event
        else:
            assert after.write is None and after.call is None  # a fenced runner is done

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def waits_for_one_thing_at_a_time(self) -> None:
        assert self.state.call is None or self.state.write is None

    @invariant()
    def a_fenced_runner_writes_and_calls_nothing(self) -> None:
        if self.state.fenced:
            assert self.state.write is None and self.state.call is None

    @invariant()
    def nothing_applied_is_forgotten(self) -> None:
        state = self.state
        if state.status.is_terminal and state.status is SagaStatus.COMPLETED:
            return
        kept = set(state.applied) | set(state.node_applied)
        compensated = set(self.compensations) - set(state.applied)
        # A recovered runner counts the node it resumes inside when that node ends.
        if state.resumed_at is not None and state.resumed_at == state.cursor:
            kept |= set(self.nodes[state.cursor].step_ids)
        # A runner that hands a RUNNING saga back leaves the node at its cursor to recovery,
        # which resumes inside it and counts what that node may have applied.
        if state.halted and state.status is SagaStatus.RUNNING and state.cursor < len(self.nodes):
            kept |= set(self.nodes[state.cursor].step_ids)
        assert self.effects <= kept | compensated, (self.effects, state)

    @invariant()
    def applied_steps_are_the_sagas_own_and_unique(self) -> None:
        ids = [step_id for node in self.nodes for step_id in node.step_ids]
        assert set(self.state.applied) <= set(ids)
        assert len(set(self.state.applied)) == len(self.state.applied)

    @invariant()
    def a_clean_success_costs_one_write_per_node_plus_the_creation(self) -> None:
        if self.stored.status is SagaStatus.COMPLETED and self.clean:
            assert len(self.writes) == len(self.nodes) + 1
            assert [w.kind for w in self.writes] == ["create"] + ["step"] * len(self.nodes)

    @invariant()
    def a_full_rollback_compensates_each_applied_step_once_last_first(self) -> None:
        decided = self.applied_at_decision
        if (
            self.stored.status is SagaStatus.COMPENSATED
            and decided is not None
            and not any(w.kind == "hand_back" for w in self.writes)
        ):
            assert self.compensations == list(reversed(decided))

    @invariant()
    def the_write_in_flight_holds_the_state(self) -> None:
        write = self.state.write
        if write is not None and write.kind not in ("hand_back", "compensation"):
            assert write.applied == self.state.applied
            assert write.cursor == self.state.cursor


SagaRunner.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestStateMachine = SagaRunner.TestCase


# --- single transitions ----------------------------------------------------------------------


def content(write: Write | None) -> tuple[object, ...]:
    """What ``write`` stores of a step's checkpoint: kind to strict_context (not the state it
    leads to, nor the wait fields, which are checked where waits are)."""
    assert write is not None
    return tuple(write)[:7]


def run_to(nodes: tuple[Node, ...], *events: states.Event) -> RunState:
    state = machine.written(machine.start(nodes))
    for event in events:
        state = machine.transition(nodes, state, event)
    return state


def test_a_new_saga_is_written_running_at_its_first_node_then_calls_it() -> None:
    nodes = (plain("a"),)
    created = machine.start(nodes)
    assert content(created.write) == ("create", SagaStatus.RUNNING, 0, (), None, "keep", True)
    assert run_to(nodes).call == Act(0)


def test_the_last_node_completes_the_saga_in_its_own_write() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED)
    assert content(state.write) == ("step", SagaStatus.RUNNING, 1, ("a",), None, "keep", True)
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, states.ACT_COMPLETED)
    assert content(state.write) == (
        "step",
        SagaStatus.COMPLETED,
        2,
        ("a", "b"),
        None,
        "release",
        True,
    )
    done = machine.transition(nodes, state, states.WRITTEN)
    assert (done.status, done.call, done.write) == (SagaStatus.COMPLETED, None, None)


def test_a_write_names_the_state_it_leads_to() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED)
    assert state.write is not None
    after = machine.written(state)
    assert after is state.write.then
    assert (after.status, after.cursor, after.call, after.write) == (
        SagaStatus.RUNNING,
        1,
        Act(1),
        None,
    )
    assert machine.transition(nodes, state, states.WRITTEN) is after
    deciding = machine.transition(nodes, after, ActFailed(RuntimeError("x")))
    assert machine.written(deciding).call == Compensate("b")


def test_a_failed_act_is_applied_and_the_decision_is_written_before_compensating() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, ActFailed(RuntimeError("declined")))
    assert content(state.write) == (
        "decision",
        SagaStatus.COMPENSATING,
        1,
        ("a", "b"),
        "RuntimeError: declined",
        "keep",
        False,
    )
    assert state.call is None
    state = machine.transition(nodes, state, states.WRITTEN)
    assert state.call == Compensate("b")


def test_a_failed_act_that_leaves_no_effect_is_not_compensated() -> None:
    nodes = (plain("a"), plain("b", no_effect=True))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, ActFailed(RuntimeError("x")))
    assert state.write is not None and state.write.applied == ("a",)


def test_a_first_step_that_fails_without_effect_ends_compensated_at_once() -> None:
    state = run_to((plain("a"),), ActFailed(RuntimeError("x"), called=False))
    assert state.write is not None
    assert (state.write.status, state.write.applied, state.write.lease) == (
        SagaStatus.COMPENSATED,
        (),
        "release",
    )


def test_a_checkpoint_that_fails_rolls_back_its_step_too() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, WriteFailed(ConnectionError("down")))
    assert content(state.write) == (
        "decision",
        SagaStatus.COMPENSATING,
        0,
        ("a",),
        "ConnectionError: down",
        "keep",
        False,
    )


def test_compensations_run_last_applied_first() -> None:
    nodes = (plain("a"), plain("b"), plain("c"))
    state = run_to(
        nodes,
        *[states.ACT_COMPLETED, states.WRITTEN] * 2,
        ActFailed(RuntimeError("x")),
        states.WRITTEN,
    )
    called = []
    while isinstance(state.call, Compensate):
        called.append(state.call.step_id)
        state = machine.transition(nodes, state, states.COMPENSATION_DONE)
        state = machine.transition(nodes, state, states.WRITTEN)
    assert called == ["c", "b", "a"]
    assert state.status is SagaStatus.COMPENSATED


def test_an_exhausted_compensation_ends_failed_with_the_cause_first() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(
        nodes,
        states.ACT_COMPLETED,
        states.WRITTEN,
        ActFailed(RuntimeError("declined")),
        states.WRITTEN,
        CompensationFailed(TimeoutError("bank down")),
    )
    assert content(state.write) == (
        "compensation",
        SagaStatus.FAILED,
        1,
        ("a", "b"),
        "RuntimeError: declined\ncompensation of b failed: TimeoutError: bank down",
        "pause",
        False,
    )
    assert state.halted
    assert machine.transition(nodes, state, states.WRITTEN).call is None


def test_a_recovered_failed_saga_keeps_only_its_cause_and_compensates_again() -> None:
    state = machine.resumed(SagaStatus.FAILED, 1, ("a",), "E: x\ncompensation of a failed: F: y")
    assert state.error == "E: x"
    assert machine.transition((plain("a"),), state, states.ADVANCE).call == Compensate("a")


def test_a_fallback_runs_when_its_primary_fails_and_both_may_be_applied() -> None:
    nodes = (fallback("p", "f"),)
    state = run_to(nodes, ActFailed(RuntimeError("x")))
    assert state.call == Act(0, fallback=True)
    done = machine.transition(nodes, state, states.ACT_COMPLETED)
    assert done.write is not None and done.write.applied == ("p", "f")


def test_a_fallback_is_not_run_for_an_error_it_does_not_cover() -> None:
    nodes = (fallback("p", "f", only=(ValueError,)),)
    state = run_to(nodes, ActFailed(RuntimeError("x")))
    assert state.call is None
    assert state.write is not None and state.write.kind == "decision"
    refused = run_to(nodes, ActFailed(RuntimeError("open"), called=False, refused=True))
    assert refused.call == Act(0, fallback=True)  # an open circuit always falls back


def test_a_resumed_fallback_node_counts_both_branches() -> None:
    nodes = (fallback("p", "f", no_effect=True),)
    resumed = machine.resumed(SagaStatus.RUNNING, 0, (), None)
    state = machine.transition(nodes, resumed, states.ADVANCE)
    done = machine.transition(nodes, state, states.ACT_COMPLETED)
    assert done.write is not None and done.write.applied == ("p", "f")


@pytest.mark.parametrize("event", [states.WRITE_REFUSED, states.LEASE_LOST])
def test_after_a_conflict_nothing_more_is_written(event: states.Event) -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, event)
    assert state.fenced and state.write is None
    for later in (states.ADVANCE, states.ACT_COMPLETED, Interrupted(), states.WRITTEN):
        state = machine.transition(nodes, state, later)
        assert state.write is None and state.call is None


def test_an_interrupted_step_write_hands_the_saga_back_before_that_step() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, Interrupted(pause=True))
    assert content(state.write) == (
        "hand_back",
        SagaStatus.RUNNING,
        0,
        ("a",),
        None,
        "pause",
        False,
    )
    assert state.halted


def test_a_finished_saga_absorbs_every_event() -> None:
    nodes = (plain("a"),)
    done = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN)
    assert done.status is SagaStatus.COMPLETED
    for event in (states.ADVANCE, states.LEASE_LOST, Interrupted(), ActFailed(ValueError())):
        assert machine.transition(nodes, done, event) is done


# --- waits: Await, WaitOver, Suspend, TimedOut, SIGNAL_PENDING, SETTLE, Aborted -----------------

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def signal_wait(name: str, *, timeout_step: str | None = None) -> Node:
    """The node of ``WaitForSignal(name)``, with a timeout step of id ``timeout_step``."""
    timeout = None if timeout_step is None else 5.0
    wait = WaitSpec(f"signal:{name}", WaitForSignal(name, timeout=timeout), name, None, timeout)
    return Node(None, None if timeout_step is None else spec(timeout_step), wait=wait)


def sleep(name: str) -> Node:
    return Node(None, wait=WaitSpec(f"sleep:{name}", Sleep(1, name=name), None, None, None))


def feed(nodes: tuple[Node, ...], state: RunState, *events: states.Event) -> RunState:
    for event in events:
        state = machine.transition(nodes, state, event)
    return state


WAIT_SAGA = (plain("a"), signal_wait("paid"), plain("b"))


def at_the_wait() -> RunState:
    """WAIT_SAGA run live up to its wait: ``a`` written, the wait being evaluated."""
    state = run_to(WAIT_SAGA, states.ACT_COMPLETED, states.WRITTEN)
    assert state.call == Await(1)  # a wait is evaluated by the driver, never acted
    return state


def test_a_suspend_is_one_waiting_write_that_releases_the_lease_and_yields_to_its_signal() -> None:
    wake = Wake(AT, "paid", 1, ("a",))
    state = feed(WAIT_SAGA, at_the_wait(), Suspend(wake))
    write = state.write
    assert write is not None and state.call is None
    assert content(write) == ("suspend", SagaStatus.WAITING, 1, ("a",), None, "release", True)
    assert (write.wake, write.unless_signal, write.consume_signal) == (wake, "paid", None)
    suspended = feed(WAIT_SAGA, state, states.WRITTEN)
    assert (suspended.status, suspended.halted, suspended.call, suspended.write) == (
        SagaStatus.WAITING,
        True,
        None,
        None,
    )
    assert feed(WAIT_SAGA, suspended, states.ADVANCE) is suspended  # this runner is done


def test_a_suspend_refused_by_a_pending_signal_evaluates_the_wait_again() -> None:
    state = feed(WAIT_SAGA, at_the_wait(), Suspend(Wake(None, "paid", 1, ("a",))))
    again = feed(WAIT_SAGA, state, states.SIGNAL_PENDING)
    assert (again.call, again.write, again.status) == (Await(1), None, SagaStatus.RUNNING)
    # a write that does not yield to a signal ignores it
    stepping = run_to(WAIT_SAGA, states.ACT_COMPLETED)
    assert feed(WAIT_SAGA, stepping, states.SIGNAL_PENDING) is stepping


def test_a_wait_that_is_over_writes_nothing_and_the_next_write_consumes_its_signal() -> None:
    over = feed(WAIT_SAGA, at_the_wait(), WaitOver("evt-1"))
    assert (over.write, over.call, over.cursor, over.consume) == (None, Act(2), 2, "evt-1")
    stepping = feed(WAIT_SAGA, over, states.ACT_COMPLETED)
    assert stepping.write is not None
    assert content(stepping.write) == (
        "step",
        SagaStatus.COMPLETED,
        3,
        ("a", "b"),
        None,
        "release",
        True,
    )
    assert stepping.write.consume_signal == "evt-1"
    assert feed(WAIT_SAGA, stepping, states.WRITTEN).consume is None


def test_a_wait_over_at_the_last_node_is_recorded_by_the_finish_write() -> None:
    nodes = (plain("a"), signal_wait("paid"))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, WaitOver("evt-1"))
    assert state.write is not None
    assert (state.write.kind, state.write.status, state.write.consume_signal) == (
        "finish",
        SagaStatus.COMPLETED,
        "evt-1",
    )


def test_a_taken_signal_rides_on_the_decision_when_the_next_step_fails() -> None:
    state = feed(WAIT_SAGA, at_the_wait(), WaitOver("evt-1"), ActFailed(RuntimeError("x")))
    assert state.write is not None and state.write.kind == "decision"
    assert (state.write.applied, state.write.consume_signal) == (("a", "b"), "evt-1")


def test_a_taken_signal_rides_on_the_next_suspend() -> None:
    nodes = (signal_wait("paid"), signal_wait("shipped"))
    state = run_to(nodes, WaitOver("evt-1"))
    assert state.call == Await(1)
    state = feed(nodes, state, Suspend(Wake(None, "shipped", 1, ())))
    assert state.write is not None
    assert (state.write.kind, state.write.consume_signal, state.write.unless_signal) == (
        "suspend",
        "evt-1",
        "shipped",
    )


def test_a_second_signal_waits_until_the_first_one_is_written() -> None:
    # One write consumes one signal: SETTLE writes the progress (consuming the first), then
    # the second wait is evaluated again.
    nodes = (signal_wait("paid"), signal_wait("shipped"), plain("b"))
    taken = run_to(nodes, WaitOver("evt-1"))
    settling = feed(nodes, taken, states.SETTLE)
    assert settling.write is not None and settling.call is None
    assert content(settling.write) == ("progress", SagaStatus.RUNNING, 1, (), None, "keep", True)
    assert settling.write.consume_signal == "evt-1"
    settled = feed(nodes, settling, states.WRITTEN)
    assert (settled.call, settled.consume, settled.cursor) == (Await(1), None, 1)
    over = feed(nodes, settled, WaitOver("evt-2"))
    assert (over.call, over.consume) == (Act(2), "evt-2")
    # nothing to settle when no signal is pending consumption
    assert feed(nodes, settled, states.SETTLE) is settled


@pytest.mark.parametrize(
    ("applied_first", "status"), [(True, SagaStatus.COMPENSATING), (False, SagaStatus.COMPENSATED)]
)
def test_a_timeout_without_a_timeout_step_decides_to_compensate_unless_the_signal_came(
    applied_first: bool, status: SagaStatus
) -> None:
    nodes = (plain("a"), signal_wait("paid")) if applied_first else (signal_wait("paid"),)
    cursor = len(nodes) - 1
    before = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN) if applied_first else run_to(nodes)
    assert before.call == Await(cursor)
    state = feed(nodes, before, TimedOut(SagaWaitTimedOutError("paid did not arrive")))
    assert state.write is not None
    assert (state.write.kind, state.write.status, state.write.unless_signal) == (
        "decision",
        status,
        "paid",
    )
    assert state.write.error == "SagaWaitTimedOutError: paid did not arrive"
    # the signal arrived first: the wait is evaluated again, the timeout forgotten
    again = feed(nodes, state, states.SIGNAL_PENDING)
    assert (again.call, again.write, again.error) == (Await(cursor), None, None)


def test_a_timeout_step_runs_after_a_durable_timeout_write_and_is_applied() -> None:
    nodes = (plain("a"), signal_wait("paid", timeout_step="remind"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, TimedOut(RuntimeError("late")))
    write = state.write
    assert write is not None and state.call is None
    assert content(write) == ("timeout", SagaStatus.RUNNING, 1, ("a",), None, "keep", True)
    assert (write.next_step, write.unless_signal) == ("remind", "paid")
    running = feed(nodes, state, states.WRITTEN)
    assert (running.call, running.on_fallback) == (Act(1, fallback=True), True)
    done = feed(nodes, running, states.ACT_COMPLETED)
    assert done.write is not None
    assert (done.write.cursor, done.write.applied) == (2, ("a", "remind"))
    failed = feed(nodes, running, ActFailed(RuntimeError("x")))
    assert failed.write is not None and failed.write.applied == ("a", "remind")


def test_a_recovered_timeout_step_runs_again_and_counts_as_applied() -> None:
    nodes = (signal_wait("paid", timeout_step="remind"), plain("b"))
    state = machine.resumed(SagaStatus.RUNNING, 0, (), None, on_fallback=True)
    assert feed(nodes, state, states.ADVANCE).call == Act(0, fallback=True)
    aborted = feed(nodes, state, Aborted(RuntimeError("cancelled")))
    assert aborted.write is not None and aborted.write.applied == ("remind",)


def test_an_act_cancelled_in_flight_is_compensated_too() -> None:
    nodes = (plain("a"), plain("b"), plain("c", no_effect=True))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN)
    aborted = feed(nodes, state, Aborted(RuntimeError("cancel"), in_flight=True))
    assert aborted.write is not None
    assert content(aborted.write) == (
        "decision",
        SagaStatus.COMPENSATING,
        1,
        ("a", "b"),
        "RuntimeError: cancel",
        "keep",
        False,
    )
    # stopped before the next act started: only what was applied
    before = feed(nodes, state, Aborted(RuntimeError("cancel")))
    assert before.write is not None and before.write.applied == ("a",)
    # a step whose failed act leaves no effect is not compensated when cut short
    at_c = run_to(nodes, *[states.ACT_COMPLETED, states.WRITTEN] * 2)
    cut = feed(nodes, at_c, Aborted(RuntimeError("cancel"), in_flight=True))
    assert cut.write is not None and cut.write.applied == ("a", "b")


def test_a_step_whose_checkpoint_was_refused_by_a_cancel_is_compensated() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, states.ACT_COMPLETED)
    aborted = feed(nodes, state, Aborted(RuntimeError("cancelled elsewhere")))
    assert aborted.write is not None
    assert (aborted.write.kind, aborted.write.cursor, aborted.write.applied) == (
        "decision",
        1,
        ("a", "b"),
    )


def test_a_compensation_is_never_aborted() -> None:
    nodes = (plain("a"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, ActFailed(RuntimeError("x")))
    compensating = feed(nodes, state, states.WRITTEN)
    assert isinstance(compensating.call, Compensate)
    assert feed(nodes, compensating, Aborted(RuntimeError("cancel"))) is compensating


def test_a_waiting_saga_resumes_with_its_stored_wake_and_nothing_in_flight() -> None:
    wake = Wake(AT, "paid", 1, ("a",))
    state = machine.resumed(SagaStatus.WAITING, 1, ("a",), None, wake=wake)
    assert (state.wake, state.resumed_at) == (wake, None)
    assert feed(WAIT_SAGA, state, states.ADVANCE).call == Await(1)
    running = machine.resumed(SagaStatus.RUNNING, 1, ("a",), None, wake=wake)
    assert running.wake is None


def claimed_waiting() -> RunState:
    wake = Wake(AT, "paid", 1, ("a",))
    return feed(
        WAIT_SAGA, machine.resumed(SagaStatus.WAITING, 1, ("a",), None, wake=wake), states.ADVANCE
    )


@pytest.mark.parametrize(
    "events",
    [
        (),  # the wait being evaluated
        (WaitOver("evt-1"),),  # the signal taken, the next step running
        (WaitOver("evt-1"), states.ACT_COMPLETED),  # the next step's checkpoint in flight
        (TimedOut(RuntimeError("late")),),  # the timeout decision in flight
        (Suspend(Wake(AT, "paid", 1, ("a",))),),  # suspending again
    ],
)
@pytest.mark.parametrize("pause", [False, True])
def test_a_claimed_waiting_saga_is_handed_back_exactly_as_stored(
    events: tuple[states.Event, ...], pause: bool
) -> None:
    state = feed(WAIT_SAGA, claimed_waiting(), *events, Interrupted(pause=pause))
    write = state.write
    assert write is not None and state.halted
    assert content(write) == (
        "hand_back",
        SagaStatus.WAITING,
        1,
        ("a",),
        None,
        "pause" if pause else "release",
        False,
    )
    # same wake; the signal taken meanwhile stays pending (not consumed)
    assert (write.wake, write.consume_signal) == (Wake(AT, "paid", 1, ("a",)), None)


def test_once_a_claimed_waiting_saga_wrote_it_is_handed_back_as_running() -> None:
    nodes = (plain("a"), signal_wait("paid"), plain("b"), plain("c"))
    wake = Wake(AT, "paid", 1, ("a",))
    state = machine.resumed(SagaStatus.WAITING, 1, ("a",), None, wake=wake)
    state = feed(nodes, state, states.ADVANCE, WaitOver("e"), states.ACT_COMPLETED)
    assert state.write is not None and state.write.status is SagaStatus.RUNNING
    state = feed(nodes, state, states.WRITTEN)
    assert state.wake is None
    back = feed(nodes, state, Interrupted())
    assert back.write is not None
    assert (back.write.status, back.write.cursor, back.write.wake) == (SagaStatus.RUNNING, 3, None)


def test_a_run_that_took_a_signal_not_yet_written_is_handed_back_at_that_wait() -> None:
    # Handed back with the last written context, which lacks the payload: the saga must take
    # the (still pending) signal again, so it goes back to the wait that took it.
    nodes = (plain("a"), signal_wait("paid"), sleep("s"), plain("b"))
    state = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN, WaitOver("evt-1"), WaitOver())
    assert state.call == Act(3)
    for extra in ((), (states.ACT_COMPLETED,)):
        back = feed(nodes, state, *extra, Interrupted())
        assert back.write is not None
        assert (back.write.kind, back.write.status, back.write.cursor) == (
            "hand_back",
            SagaStatus.RUNNING,
            1,
        )
        assert (back.write.next_step, back.write.consume_signal) == (None, None)
    # a sleep that is over needs nothing taken again: handed back where the run is
    slept = run_to(nodes[2:], WaitOver())
    back = feed(nodes[2:], slept, Interrupted())
    assert back.write is not None and back.write.cursor == 1


def test_a_finished_saga_absorbs_the_wait_events() -> None:
    nodes = (plain("a"),)
    done = run_to(nodes, states.ACT_COMPLETED, states.WRITTEN)
    for event in (
        WaitOver("x"),
        Suspend(Wake(AT, "x", 0, ())),
        TimedOut(RuntimeError("x")),
        Aborted(RuntimeError("x")),
        states.SIGNAL_PENDING,
        states.SETTLE,
    ):
        assert machine.transition(nodes, done, event) is done


def test_wait_events_apply_only_to_a_wait_being_evaluated() -> None:
    nodes = (plain("a"), signal_wait("paid"))
    acting = run_to(nodes)
    assert acting.call == Act(0)
    for event in (WaitOver("x"), Suspend(Wake(AT, "paid", 0, ())), TimedOut(RuntimeError("x"))):
        assert machine.transition(nodes, acting, event) is acting
