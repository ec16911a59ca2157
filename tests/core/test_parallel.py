"""``Parallel`` groups: concurrency, checkpoints, context merge, rollback rules, recovery."""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from saga_core import (
    Container,
    DependencyResolutionError,
    Fallback,
    MemorySagaStorage,
    Parallel,
    RetryPolicy,
    Saga,
    SagaBranchConflictError,
    SagaCancelledError,
    SagaConcurrencyError,
    SagaContext,
    SagaDeadlineExceededError,
    SagaDefinitionError,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaVersionConflictError,
    Sleep,
    StepDirection,
    bootstrap,
    recover_saga,
)
from saga_core.storage import Checkpoint

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]


@dataclasses.dataclass
class Order(SagaContext):
    stock: str = ""
    courier: str = ""
    note: str = ""


def saga_of(*steps: Any, **attributes: Any) -> type[Saga[Order]]:
    """A saga class over ``Order`` with ``steps``."""
    namespace = {"steps": list(steps), **attributes}
    return types.new_class("OrderSaga", (Saga[Order],), exec_body=lambda ns: ns.update(namespace))


class Meeting:
    """Steps that wait for each other: they can only complete if they run concurrently."""

    def __init__(self, ledger: list[str], *names: str) -> None:
        self.ledger = ledger
        self.started = {name: anyio.Event() for name in names}

    def step(
        self, step_name: str, *, field: str | None = None, fails: bool = False
    ) -> type[SagaStepHandler[Order, None]]:
        meeting = self

        class Step(SagaStepHandler[Order, None]):
            name = step_name

            async def act(self, context: Order) -> None:
                meeting.ledger.append(f"act:{step_name}")
                meeting.started[step_name].set()
                for event in meeting.started.values():
                    await event.wait()  # every branch is running at once
                if fails:
                    raise ValueError(f"{step_name} failed")
                if field is not None:
                    setattr(context, field, step_name)

            async def compensate(self, context: Order) -> None:
                meeting.ledger.append(f"compensate:{step_name}")

        return Step


class Service:
    """A dependency a step needs."""


class NeedsService(SagaStepHandler[Order, None]):
    name = "needs-service"

    def __init__(self, service: Service) -> None:
        self.service = service

    async def act(self, context: Order) -> None:
        pass


def group_writes(checkpoints: list[Checkpoint]) -> list[tuple[int, tuple[str, ...]]]:
    """(cursor, applied) of every RUNNING checkpoint."""
    return [(c.cursor, c.applied) for c in checkpoints if c.status is SagaStatus.RUNNING]


# --- definitions -------------------------------------------------------------------------------


def test_a_parallel_needs_two_branches(make_step: StepFactory) -> None:
    with pytest.raises(SagaDefinitionError, match="no branches"):
        Parallel()
    with pytest.raises(SagaDefinitionError, match="one branch, so nothing runs beside it"):
        Parallel(make_step("a"))


@pytest.mark.parametrize(
    ("branch", "hint"),
    [
        (Sleep(1), "a wait suspends the whole saga"),
        ("not a step", "got 'not a step'"),
        (SagaStepHandler, "does not implement act"),
    ],
)
def test_a_parallel_refuses_what_is_not_a_branch(
    make_step: StepFactory, branch: Any, hint: str
) -> None:
    with pytest.raises(SagaDefinitionError, match=hint):
        Parallel(make_step("a"), branch)


def test_a_parallel_refuses_a_step_instance_an_unknown_mode_and_a_blank_name(
    make_step: StepFactory,
) -> None:
    a, b = make_step("a"), make_step("b")
    with pytest.raises(SagaDefinitionError, match="pass the class, not an instance"):
        Parallel(a, b())  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match='must be "fast"'):
        Parallel(a, b, fail="first")  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="compensate_parallel"):
        Parallel(a, b, compensate_parallel=1)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="non-empty string"):
        Parallel(a, b, name=" ")


def test_a_step_id_is_used_once_across_branches(make_step: StepFactory) -> None:
    a, b = make_step("a"), make_step("b")
    with pytest.raises(SagaDefinitionError, match="two steps with the id 'a'"):
        saga_of(a, Parallel(b, a))
    with pytest.raises(SagaDefinitionError, match="two steps with the id 'b'"):
        saga_of(Parallel(a, Parallel(b, make_step("c")), Fallback(make_step("d"), b)))
    with pytest.raises(SagaDefinitionError, match="two Parallel nodes with the id 'parallel:x'"):
        saga_of(Parallel(a, b, name="x"), Parallel(make_step("c"), make_step("d"), name="x"))


def test_a_group_compiles_to_one_node_with_its_branches(make_step: StepFactory) -> None:
    a, b, c, d = (make_step(n) for n in "abcd")
    saga = saga_of(a, Parallel(b, Parallel(c, d, fail="all")), name="compiled")
    node = saga.definition().nodes[1]
    assert node.node_id == "parallel:b,parallel:c,d"
    assert node.step_ids == ("b", "c", "d")
    assert node.group is not None and node.group.fail_fast
    nested = node.group.branches[1].group
    assert nested is not None and not nested.fail_fast
    assert saga.definition().next_step_ids == ("a", "parallel:b,parallel:c,d", None)


# --- running -----------------------------------------------------------------------------------


async def test_branches_run_concurrently_and_their_changes_are_merged(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
    checkpoints: list[Checkpoint],
) -> None:
    meeting = Meeting(ledger, "stock", "courier")
    saga = saga_of(
        make_step("first"),
        Parallel(meeting.step("stock", field="stock"), meeting.step("courier", field="courier")),
        make_step("last"),
    )
    context = Order()
    with anyio.fail_after(5):  # a sequential run would never meet
        outcome = await make_mediator(Order, saga).run(context)

    assert outcome.status is SagaStatus.COMPLETED
    assert (context.stock, context.courier) == ("stock", "courier")
    assert ledger[0] == "act:first" and ledger[-1] == "act:last"
    # each branch completion is a write (at most two for the group: they may share one),
    # and the last one moves the cursor on
    writes = group_writes(checkpoints)
    assert writes[0] == (1, ("first",))
    assert writes[-1][0] == 2 and set(writes[-1][1][1:]) == {"stock", "courier"}
    assert len(writes) in (2, 3)
    assert all(cursor == 1 for cursor, _ in writes[1:-1])


async def test_the_stream_yields_one_result_per_branch(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    saga = saga_of(Parallel(make_step("b"), make_step("c")), make_step("d"))
    results = [r async for r in make_mediator(Order, saga).stream(Order())]
    assert sorted(r.step_id for r in results[:2]) == ["b", "c"]
    assert results[2].step_id == "d"
    assert all(r.error is None and r.direction is StepDirection.ACT for r in results)


async def test_completions_during_a_write_share_the_next_one(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
) -> None:
    released = anyio.Event()
    others_done = anyio.Event()
    order: list[str] = []
    write = type(storage).checkpoint

    async def held_checkpoint(checkpoint: Checkpoint) -> None:
        if checkpoint.applied == ("fast",):
            released.set()
            await others_done.wait()  # the first branch write is slow to land
        await write(storage, checkpoint)

    storage.checkpoint = held_checkpoint  # type: ignore[method-assign]

    def slow(step_name: str) -> type[SagaStepHandler[Order, None]]:
        class Step(SagaStepHandler[Order, None]):
            name = step_name

            async def act(self, context: Order) -> None:
                await released.wait()
                order.append(step_name)
                if len(order) == 2:
                    others_done.set()

        return Step

    saga = saga_of(Parallel(make_step("fast"), slow("b"), slow("c")))
    with anyio.fail_after(5):
        outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPLETED
    # three branches, two writes: b and c completed while fast's write was in flight
    assert group_writes(checkpoints) == [(0, ("fast",))]
    assert checkpoints[-1].status is SagaStatus.COMPLETED
    assert checkpoints[-1].applied == ("fast", *order)


async def test_a_branch_sees_its_own_changes_only(make_mediator: MediatorFactory) -> None:
    seen: dict[str, str] = {}
    first_done = anyio.Event()

    class Writes(SagaStepHandler[Order, None]):
        name = "writes"

        async def act(self, context: Order) -> None:
            context.stock = "reserved"
            first_done.set()

    class Reads(SagaStepHandler[Order, None]):
        name = "reads"

        async def act(self, context: Order) -> None:
            await first_done.wait()
            await anyio.sleep(0.01)  # the other branch has completed and been merged
            seen["stock"] = context.stock
            context.note = "read"

    context = Order()
    outcome = await make_mediator(Order, saga_of(Parallel(Writes, Reads))).run(context)
    assert outcome.status is SagaStatus.COMPLETED
    assert seen == {"stock": ""}
    assert (context.stock, context.note) == ("reserved", "read")


async def test_two_branches_changing_one_field_are_refused_and_compensated(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    def set_note(value: str) -> Callable[[Any], None]:
        return lambda context: setattr(context, "note", value)

    saga = saga_of(
        make_step("a"),
        Parallel(make_step("b", change=set_note("b")), make_step("c", change=set_note("c"))),
    )
    context = Order()
    outcome = await make_mediator(Order, saga).run(context)
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaBranchConflictError)
    assert "both changed the context field 'note'" in str(outcome.error)
    assert ledger[-3:] in (
        ["compensate:c", "compensate:b", "compensate:a"],
        ["compensate:b", "compensate:c", "compensate:a"],
    )


async def test_retry_and_fallback_apply_per_branch(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    saga = saga_of(
        Parallel(
            make_step(
                "flaky", act_fails=2, retry=RetryPolicy(attempts=3, initial_delay=0, jitter=0)
            ),
            Fallback(make_step("primary", act_fails=math.inf), make_step("backup")),
        )
    )
    outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPLETED
    assert sorted(ledger) == sorted(
        ["act:flaky", "act:flaky", "act:flaky", "act:primary", "act:backup"]
    )


# --- rollback ----------------------------------------------------------------------------------


async def test_fail_fast_cancels_the_other_branches_and_compensates_them(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
    storage: MemorySagaStorage,
) -> None:
    started = anyio.Event()

    class Forever(SagaStepHandler[Order, None]):
        name = "forever"

        async def act(self, context: Order) -> None:
            ledger.append("act:forever")
            started.set()
            await anyio.sleep_forever()

        async def compensate(self, context: Order) -> None:
            ledger.append("compensate:forever")

    class FailsOnceStarted(SagaStepHandler[Order, None]):
        name = "fails"

        async def act(self, context: Order) -> None:
            await started.wait()
            ledger.append("act:fails")
            raise ValueError("no stock")

        async def compensate(self, context: Order) -> None:
            ledger.append("compensate:fails")

    saga = saga_of(make_step("a"), Parallel(Forever, FailsOnceStarted, make_step("quick")))
    saga_id = uuid.uuid4()
    with anyio.fail_after(5):
        outcome = await make_mediator(Order, saga).run(Order(), saga_id)
    assert outcome.status is SagaStatus.COMPENSATED
    assert str(outcome.error) == "no stock"
    # quick completed first, then fails failed, then forever was cancelled mid-act: the
    # rollback runs in reverse of that order
    assert ledger[-4:] == [
        "compensate:forever",
        "compensate:fails",
        "compensate:quick",
        "compensate:a",
    ]
    journal = await storage.history(saga_id)
    cancelled = [e for e in journal if e.step_id == "forever" and e.error]
    assert cancelled and "cancelled because branch fails" in (cancelled[0].error or "")


async def test_fail_all_lets_the_other_branches_finish_first(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    meeting = Meeting(ledger, "ok", "bad")
    saga = saga_of(
        Parallel(meeting.step("ok"), meeting.step("bad", fails=True), fail="all"),
    )
    outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    assert sorted(ledger) == ["act:bad", "act:ok", "compensate:bad", "compensate:ok"]


async def test_a_failed_branch_declared_effect_free_is_not_compensated(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    meeting = Meeting(ledger, "ok", "bad")
    bad = meeting.step("bad", fails=True)
    bad.failed_act_leaves_no_effect = True
    outcome = await make_mediator(Order, saga_of(Parallel(meeting.step("ok"), bad))).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    assert "compensate:bad" not in ledger and "compensate:ok" in ledger


async def test_a_nested_group_fails_as_one_branch_of_its_parent(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    saga = saga_of(
        Parallel(
            make_step("outer"),
            Parallel(make_step("inner-ok"), make_step("inner-bad", act_fails=math.inf)),
            fail="all",
        )
    )
    outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    assert {e for e in ledger if e.startswith("compensate:")} == {
        "compensate:outer",
        "compensate:inner-ok",
        "compensate:inner-bad",
    }


async def test_compensate_parallel_compensates_the_group_concurrently_in_one_write(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
    checkpoints: list[Checkpoint],
) -> None:
    met = {name: anyio.Event() for name in ("b", "c")}

    def branch(step_name: str) -> type[SagaStepHandler[Order, None]]:
        class Step(SagaStepHandler[Order, None]):
            name = step_name

            async def act(self, context: Order) -> None:
                pass

            async def compensate(self, context: Order) -> None:
                met[step_name].set()
                for event in met.values():
                    await event.wait()  # both compensations run at once
                ledger.append(f"compensate:{step_name}")

        return Step

    saga = saga_of(
        make_step("a"),
        Parallel(branch("b"), branch("c"), compensate_parallel=True),
        make_step("d", act_fails=math.inf),
    )
    with anyio.fail_after(5):
        outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger[-1] == "compensate:a"
    compensating = [c.applied for c in checkpoints if c.status is not SagaStatus.RUNNING]
    # the decision, d's compensation, then b and c together in one write, then a's
    assert compensating[-3:] == [("a", *compensating[-3][1:3]), ("a",), ()]


async def test_a_cancel_stops_the_running_branches_and_compensates_them(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    meeting = Meeting(ledger, "b", "c", "never")
    saga = saga_of(make_step("a"), Parallel(meeting.step("b"), meeting.step("c")))
    mediator = make_mediator(Order, saga)
    saga_id = uuid.uuid4()
    outcomes = []

    async def run() -> None:
        outcomes.append(await mediator.run(Order(), saga_id))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await meeting.started["b"].wait()
            await meeting.started["c"].wait()
            await mediator.cancel(saga_id, reason="customer left")
    (outcome,) = outcomes
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaCancelledError)
    assert sorted(ledger[-3:-1]) == ["compensate:b", "compensate:c"]
    assert ledger[-1] == "compensate:a"


async def test_the_deadline_stops_the_running_branches(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    meeting = Meeting(ledger, "b", "c", "never")
    saga = saga_of(Parallel(meeting.step("b"), meeting.step("c")), deadline=0.2)
    with anyio.fail_after(5):
        outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaDeadlineExceededError)
    assert sorted(e for e in ledger if e.startswith("compensate:")) == [
        "compensate:b",
        "compensate:c",
    ]


# --- recovery ----------------------------------------------------------------------------------


async def test_recovery_runs_only_the_branches_that_did_not_complete(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    stalled_saga: Callable[..., Any],
) -> None:
    saga = saga_of(make_step("a"), Parallel(make_step("b"), make_step("c")), make_step("d"))
    saga_id = await stalled_saga(
        saga, '{"stock":"b","courier":"","note":""}', cursor=1, applied=("a", "b")
    )
    outcome = await recover_saga(saga=saga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:c", "act:d"]
    assert outcome.context.stock == "b"
    record = await storage.load(saga_id)
    assert record.applied == ("a", "b", "c", "d")


async def test_an_interrupted_group_hands_back_only_its_written_branches(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    meeting = Meeting(ledger, "slow", "never")
    saga = saga_of(Parallel(make_step("quick"), meeting.step("slow")), make_step("after"))
    saga_id = uuid.uuid4()
    quick_written = anyio.Event()
    write = type(storage).checkpoint

    async def noted_checkpoint(checkpoint: Checkpoint) -> None:
        await write(storage, checkpoint)
        if checkpoint.applied == ("quick",):
            quick_written.set()

    storage.checkpoint = noted_checkpoint  # type: ignore[method-assign]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(make_mediator(Order, saga).run, Order(), saga_id)
            await meeting.started["slow"].wait()
            await quick_written.wait()
            tasks.cancel_scope.cancel()  # the process shuts down mid-group
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.applied) == (SagaStatus.RUNNING, 0, ("quick",))
    assert record.lease_owner is None  # handed back
    # a shutdown is not a failure of the branch in flight: nothing journals one
    assert not [e for e in await storage.history(saga_id) if e.error is not None]

    ledger.clear()
    meeting.started["never"].set()
    outcome = await recover_saga(saga=saga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:slow", "act:after"]


async def test_a_failed_branch_write_stops_the_group_and_compensates_it(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
    fail_checkpoint: Callable[[int], None],
) -> None:
    meeting = Meeting(ledger, "slow", "never")
    fail_checkpoint(1)  # the first branch completion's write
    saga = saga_of(Parallel(make_step("quick"), meeting.step("slow")))
    with anyio.fail_after(5):
        outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    assert "injected failure of checkpoint call 1" in str(outcome.error)
    # quick ran (its write failed, not its act) and slow was cancelled mid-act: both undone
    assert sorted(ledger[:2]) == ["act:quick", "act:slow"]
    assert ledger[2:] == ["compensate:slow", "compensate:quick"]


async def test_each_branch_has_its_own_idempotency_key(make_mediator: MediatorFactory) -> None:
    keys: list[str] = []

    def keyed(step_name: str) -> type[SagaStepHandler[Order, None]]:
        class Step(SagaStepHandler[Order, None]):
            name = step_name

            async def act(self, context: Order) -> None:
                keys.append(self.idempotency_key)

        return Step

    saga_id = uuid.uuid4()
    await make_mediator(Order, saga_of(Parallel(keyed("b"), keyed("c")))).run(Order(), saga_id)
    assert sorted(keys) == [f"{saga_id}:b:act", f"{saga_id}:c:act"]


async def test_a_branch_that_cannot_be_built_stops_the_run_without_a_rollback(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    def service_down() -> Service:
        raise RuntimeError("service registry unreachable")

    container = Container()
    container.register_factory(Service, service_down)  # fails only when a step is built
    saga_id = uuid.uuid4()
    saga = saga_of(make_step("a"), Parallel(make_step("b"), NeedsService))
    mediator = make_mediator(Order, saga, di_container=container)
    with pytest.raises(DependencyResolutionError, match="needs-service"):
        await mediator.run(Order(), saga_id)
    # a wiring mistake, not a business failure: nothing is compensated, the saga is handed
    # back RUNNING at the group, for recovery once the wiring is fixed
    assert not [entry for entry in ledger if entry.startswith("compensate:")]
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.lease_owner) == (SagaStatus.RUNNING, 1, None)


async def test_a_worker_runs_a_detached_saga_with_a_group(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    saga = saga_of(Parallel(make_step("b"), make_step("c")), make_step("d"))
    # a storage on the real clock: the worker finds the saga due now
    mediator = bootstrap(
        sagas_mapper=lambda mapper: mapper.bind(Order, saga), saga_storage=MemorySagaStorage()
    )
    handle = await mediator.start(Order())
    await mediator.worker().run_once()
    with anyio.fail_after(2):
        outcome = await handle.result()
    assert outcome.status is SagaStatus.COMPLETED
    assert sorted(ledger[:2]) == ["act:b", "act:c"] and ledger[2] == "act:d"
    events = [(e.step_id, e.event.value) async for e in mediator.watch(handle.saga_id)]
    assert ("b", "completed") in events and ("c", "completed") in events


async def test_compensate_parallel_of_a_nested_group_applies_to_its_steps_only(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    checkpoints: list[Checkpoint],
) -> None:
    class Outer(SagaStepHandler[Order, None]):
        name = "outer"

        async def act(self, context: Order) -> None:
            await anyio.sleep(0.02)  # ends after x and y

    saga = saga_of(
        Parallel(Outer, Parallel(make_step("x"), make_step("y"), compensate_parallel=True)),
        make_step("fails", act_fails=math.inf),
    )
    outcome = await make_mediator(Order, saga).run(Order())
    assert outcome.status is SagaStatus.COMPENSATED
    rollback = [c.applied for c in checkpoints if c.status is not SagaStatus.RUNNING]
    assert set(rollback[0][:2]) == {"x", "y"} and rollback[0][2:] == ("outer", "fails")
    # each write removes the steps compensated together: fails, outer (its group is not
    # compensate_parallel), then x and y at once
    removed = [set(before) - set(after) for before, after in itertools.pairwise(rollback)]
    assert removed == [{"fails"}, {"outer"}, {"x", "y"}]


async def test_a_runner_taken_over_mid_group_stops_its_branches_and_writes_nothing_more(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    meeting = Meeting(ledger, "slow", "never")
    write = type(storage).checkpoint

    async def refused_checkpoint(checkpoint: Checkpoint) -> None:
        if checkpoint.applied == ("quick",):
            raise SagaVersionConflictError("another runner wrote version 2")
        await write(storage, checkpoint)

    storage.checkpoint = refused_checkpoint  # type: ignore[method-assign]
    saga_id = uuid.uuid4()
    saga = saga_of(Parallel(make_step("quick"), meeting.step("slow")))
    with anyio.fail_after(5), pytest.raises(SagaConcurrencyError, match="taken over"):
        await make_mediator(Order, saga).run(Order(), saga_id)
    # slow was cancelled at once (it would wait forever), and nothing was compensated: the
    # saga belongs to the other runner
    assert sorted(ledger) == ["act:quick", "act:slow"]
    record = await storage.load(saga_id)
    assert (record.status, record.version, record.applied) == (SagaStatus.RUNNING, 1, ())


async def test_a_failed_attempt_of_a_branch_leaves_its_copy_as_it_was(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    seen: list[str] = []

    class Flaky(SagaStepHandler[Order, None]):
        name = "flaky"
        retry = RetryPolicy(attempts=2, initial_delay=0, jitter=0)

        async def act(self, context: Order) -> None:
            seen.append(context.note)
            context.note = "half-done"
            if self.attempt == 1:
                raise ValueError("timeout talking to the warehouse")
            context.stock = "reserved"

    context = Order()
    outcome = await make_mediator(Order, saga_of(Parallel(Flaky, make_step("b")))).run(context)
    assert outcome.status is SagaStatus.COMPLETED
    assert seen == ["", ""]  # the retry starts from the copy as the group found it
    assert (context.stock, context.note) == ("reserved", "half-done")
