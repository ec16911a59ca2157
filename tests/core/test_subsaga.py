"""``SubSaga``: child sagas started, run in place, waited for, compensated as a unit."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    Parallel,
    RetryPolicy,
    Saga,
    SagaChildError,
    SagaCompensatedError,
    SagaContext,
    SagaDefinitionError,
    SagaMediator,
    SagaNotFoundError,
    SagaNotRegisteredError,
    SagaRecord,
    SagaStatus,
    SagaStepHandler,
    StepDirection,
    StepEvent,
    SubSaga,
    WaitForSignal,
    bootstrap,
    recover_saga,
)
from saga_core._engine.children import child_saga_id
from saga_core.storage import Checkpoint

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Shipping(SagaContext):
    order_id: str
    label: str = ""
    tracking: str = ""


@dataclasses.dataclass
class Order(SagaContext):
    order_id: str = "o-1"
    label: str = ""
    notify_fails: bool = False


LEDGER: list[str] = []


class BookCarrier(SagaStepHandler[Shipping, None]):
    name = "book_carrier"

    async def act(self, context: Shipping) -> None:
        LEDGER.append(f"act:book_carrier:{self.saga_id}")
        context.label = f"label-{context.order_id}"

    async def compensate(self, context: Shipping) -> None:
        # The child's context and the child's idempotency key, as the child would see them.
        LEDGER.append(f"compensate:book_carrier:{context.label}:{self.idempotency_key}")


class PrintLabel(SagaStepHandler[Shipping, None]):
    name = "print_label"

    async def act(self, context: Shipping) -> None:
        LEDGER.append("act:print_label")
        if context.order_id == "no-printer":
            raise RuntimeError("printer jammed")

    async def compensate(self, context: Shipping) -> None:
        LEDGER.append("compensate:print_label")


class ShippingSaga(Saga[Shipping]):
    name = "shipping"
    steps = [BookCarrier, PrintLabel]


class AwaitPickup(Saga[Shipping]):
    name = "await-pickup"
    steps = [BookCarrier, WaitForSignal("picked-up", into="tracking"), PrintLabel]


class Reserve(SagaStepHandler[Order, None]):
    name = "reserve"

    async def act(self, context: Order) -> None:
        LEDGER.append("act:reserve")

    async def compensate(self, context: Order) -> None:
        LEDGER.append("compensate:reserve")


class Notify(SagaStepHandler[Order, None]):
    name = "notify"

    async def act(self, context: Order) -> None:
        LEDGER.append("act:notify")
        if context.notify_fails:
            raise ValueError("mail server down")


def to_shipping(order: Order) -> Shipping:
    return Shipping(order_id=order.order_id)


def copy_label(order: Order, shipping: Shipping) -> None:
    order.label = shipping.label


class OrderSaga(Saga[Order]):
    name = "order"
    steps = [Reserve, SubSaga(ShippingSaga, context=to_shipping, result=copy_label), Notify]


class PickupOrderSaga(Saga[Order]):
    name = "pickup-order"
    steps = [Reserve, SubSaga(AwaitPickup, context=to_shipping, result=copy_label), Notify]


CHILD_NODE = "child:shipping"


class ProcessDied(BaseException):
    """Stands for the process stopping: the run hands the saga back as last written."""


@pytest.fixture(autouse=True)
def clean_ledger() -> None:
    LEDGER.clear()


def mediator_on(storage: MemorySagaStorage, *sagas: type[Saga[Any]]) -> SagaMediator:
    """A mediator binding ``sagas`` (each to its context type) and the children they run."""

    def bind(mapper: Any) -> None:
        for saga in sagas:
            mapper.bind(saga.definition().context_type, saga)

    return bootstrap(sagas_mapper=bind, saga_storage=storage)


# --- definitions -------------------------------------------------------------------------------


def test_a_subsaga_refuses_what_is_not_a_child_saga() -> None:
    with pytest.raises(SagaDefinitionError, match="needs a Saga subclass with steps"):
        SubSaga(Reserve, context=to_shipping)
    with pytest.raises(SagaDefinitionError, match="must be a callable that builds"):
        SubSaga(ShippingSaga, context="Shipping")  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match=r"result=\.\.\.\) must be a callable"):
        SubSaga(ShippingSaga, context=to_shipping, result=1)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="non-empty string"):
        SubSaga(ShippingSaga, context=to_shipping, name="")


def test_two_subsagas_of_one_child_need_distinct_names() -> None:
    with pytest.raises(SagaDefinitionError, match="two SubSagas with the id 'child:shipping'"):

        class Twice(Saga[Order]):
            steps = [SubSaga(ShippingSaga, context=to_shipping)] * 2

    class TwiceNamed(Saga[Order]):
        steps = [
            SubSaga(ShippingSaga, context=to_shipping, name="outbound"),
            SubSaga(ShippingSaga, context=to_shipping, name="return"),
        ]

    assert [n.node_id for n in TwiceNamed.definition().nodes] == ["child:outbound", "child:return"]


def test_the_parent_records_the_childs_steps_under_its_node() -> None:
    definition = OrderSaga.definition()
    assert definition.nodes[1].step_ids == (
        "child:shipping/book_carrier",
        "child:shipping/print_label",
    )
    assert definition.next_step_ids == ("reserve", "child:shipping", "notify", None)


def test_a_child_saga_must_be_bound_with_its_parent(storage: MemorySagaStorage) -> None:
    with pytest.raises(SagaNotRegisteredError, match=r"runs ShippingSaga .* bind it too"):
        bootstrap(sagas_mapper=lambda m: m.bind(Order, OrderSaga), saga_storage=storage)


# --- running -----------------------------------------------------------------------------------


async def test_the_child_runs_in_place_and_its_result_reaches_the_parent(
    storage: MemorySagaStorage,
) -> None:
    mediator = mediator_on(storage, OrderSaga, ShippingSaga)
    context = Order()
    saga_id = uuid.uuid4()
    results = [r async for r in mediator.stream(context, saga_id=saga_id)]
    child_id = child_saga_id(saga_id, CHILD_NODE)

    assert context.label == "label-o-1"
    assert [(r.saga_id, r.step_id) for r in results] == [
        (saga_id, "reserve"),
        (child_id, "book_carrier"),
        (child_id, "print_label"),
        (saga_id, "notify"),
    ]
    parent = await storage.load(saga_id)
    assert parent.status is SagaStatus.COMPLETED
    assert parent.applied == (
        "reserve",
        "child:shipping/book_carrier",
        "child:shipping/print_label",
        "notify",
    )
    child = await storage.load(child_id)
    assert (child.status, child.parent_id, child.saga_name) == (
        SagaStatus.COMPLETED,
        saga_id,
        "shipping",
    )
    # the parent's journal says where its child stood, by id; the child's has its steps
    entries = [(e.step_id, e.event, e.detail) for e in await storage.history(saga_id)]
    assert (CHILD_NODE, StepEvent.COMPLETED, str(child_id)) in entries


async def test_a_completed_child_is_compensated_as_a_unit_by_its_parent(
    storage: MemorySagaStorage,
) -> None:
    mediator = mediator_on(storage, OrderSaga, ShippingSaga)
    saga_id = uuid.uuid4()
    outcome = await mediator.run(Order(notify_fails=True), saga_id)
    child_id = child_saga_id(saga_id, CHILD_NODE)

    assert outcome.status is SagaStatus.COMPENSATED
    compensations = [e for e in LEDGER if e.startswith("compensate:")]
    # every step of the child, in reverse order, once, on the child's context and keys
    assert compensations == [
        "compensate:print_label",
        f"compensate:book_carrier:label-o-1:{child_id}:book_carrier:compensate",
        "compensate:reserve",
    ]
    # the child did complete: its record stays so; the parent's journal tells the rollback
    assert (await storage.load(child_id)).status is SagaStatus.COMPLETED
    journal = await storage.history(saga_id)
    undone = [e.step_id for e in journal if e.direction is StepDirection.COMPENSATE and e.step_id]
    assert "child:shipping/book_carrier" in undone


async def test_a_child_rolled_back_makes_the_parent_compensate(storage: MemorySagaStorage) -> None:
    mediator = mediator_on(storage, OrderSaga, ShippingSaga)
    saga_id = uuid.uuid4()
    outcome = await mediator.run(Order(order_id="no-printer"), saga_id)
    child_id = child_saga_id(saga_id, CHILD_NODE)

    assert outcome.status is SagaStatus.COMPENSATED
    assert f"child saga {child_id} (child:shipping) was rolled back" in str(outcome.error)
    assert "printer jammed" in str(outcome.error)
    # the child compensated its own steps; the parent compensated its own, once each
    assert [e for e in LEDGER if e.startswith("compensate:")] == [
        "compensate:print_label",
        f"compensate:book_carrier:label-no-printer:{child_id}:book_carrier:compensate",
        "compensate:reserve",
    ]
    assert (await storage.load(child_id)).status is SagaStatus.COMPENSATED
    assert (await storage.load(saga_id)).applied == ()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda order: 1 / 0, "raised ZeroDivisionError"),
        (lambda order: Order(), "returned Order, not the child saga's context type Shipping"),
    ],
)
async def test_a_bad_context_function_stops_the_parent_and_writes_no_child(
    storage: MemorySagaStorage, factory: Any, message: str
) -> None:
    class Parent(Saga[Order]):
        name = "bad-factory"
        steps = [Reserve, SubSaga(ShippingSaga, context=factory)]

    mediator = mediator_on(storage, Parent, ShippingSaga)
    saga_id = uuid.uuid4()
    with pytest.raises(SagaChildError, match=message):
        await mediator.run(Order(), saga_id)
    with pytest.raises(SagaNotFoundError):
        await storage.load(child_saga_id(saga_id, CHILD_NODE))
    parent = await storage.load(saga_id)
    assert (parent.status, parent.cursor, parent.lease_owner) == (SagaStatus.RUNNING, 1, None)
    assert "compensate:reserve" not in LEDGER  # a code mistake, not a business rollback


# --- waiting for a child ------------------------------------------------------------------------


async def test_a_parent_waits_for_a_child_that_waits_and_its_end_wakes_it() -> None:
    storage = MemorySagaStorage()  # the real clock: the worker finds sagas due now
    mediator = mediator_on(storage, PickupOrderSaga, AwaitPickup)
    saga_id = uuid.uuid4()
    child_id = child_saga_id(saga_id, "child:await-pickup")

    first = await mediator.run(Order(), saga_id)
    assert first.status is SagaStatus.WAITING
    parent = await storage.load(saga_id)
    assert (parent.status, parent.waiting_for) == (SagaStatus.WAITING, f"child:{child_id}")
    assert parent.wake_at is not None  # the safety net: it looks at its child later anyway
    assert (await storage.load(child_id)).waiting_for == "picked-up"
    started = [e for e in await storage.history(saga_id) if e.step_id == "child:await-pickup"]
    assert [(e.event, e.detail) for e in started] == [(StepEvent.STARTED, str(child_id))]

    await mediator.signal(child_id, "picked-up", "TRK-9", signal_id="evt-1")
    worker = mediator.worker()
    with anyio.fail_after(5):
        await worker.run_once()  # the child: it completes and wakes its parent
        await worker.run_once()  # the parent: it finds its child completed and goes on
        outcome = await mediator.handle(saga_id).result()
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.label == "label-o-1"
    assert LEDGER.count("act:reserve") == 1 and LEDGER.count("act:notify") == 1


# --- recovery ----------------------------------------------------------------------------------


async def test_a_recovered_parent_finds_its_completed_child_and_does_not_run_it_again(
    storage: MemorySagaStorage,
) -> None:
    mediator = mediator_on(storage, OrderSaga, ShippingSaga)
    saga_id = uuid.uuid4()
    write = type(storage).checkpoint

    async def crash_at_the_parents_child_write(checkpoint: Any) -> None:
        if checkpoint.saga_id == saga_id and checkpoint.cursor == 2:
            raise ProcessDied  # the process stops before this write
        await write(storage, checkpoint)

    storage.checkpoint = crash_at_the_parents_child_write  # type: ignore[method-assign]
    with pytest.raises(ProcessDied):
        await mediator.run(Order(), saga_id)
    storage.checkpoint = write.__get__(storage)  # type: ignore[method-assign]
    assert (await storage.load(saga_id)).cursor == 1
    LEDGER.clear()

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.label == "label-o-1"
    assert LEDGER == ["act:notify"]  # the child had completed: nothing of it runs again


# --- a child as a Parallel branch ---------------------------------------------------------------


class Invoice(SagaStepHandler[Order, None]):
    name = "invoice"

    async def act(self, context: Order) -> None:
        LEDGER.append("act:invoice")
        if context.notify_fails:
            await anyio.sleep(0.01)  # the child completes first
            raise ValueError("invoicing down")

    async def compensate(self, context: Order) -> None:
        LEDGER.append("compensate:invoice")


class ParallelOrderSaga(Saga[Order]):
    name = "parallel-order"
    steps = [
        Reserve,
        Parallel(Invoice, SubSaga(ShippingSaga, context=to_shipping, result=copy_label)),
        Notify,
    ]


def test_a_child_that_waits_cannot_be_a_parallel_branch() -> None:
    with pytest.raises(SagaDefinitionError, match="its child saga waits"):

        class Held(Saga[Order]):
            steps = [Parallel(Invoice, SubSaga(AwaitPickup, context=to_shipping))]


async def test_a_child_is_a_branch_of_a_group(storage: MemorySagaStorage) -> None:
    mediator = mediator_on(storage, ParallelOrderSaga, ShippingSaga)
    saga_id = uuid.uuid4()
    context = Order()
    outcome = await mediator.run(context, saga_id)
    assert outcome.status is SagaStatus.COMPLETED
    assert context.label == "label-o-1"  # the child's result, merged like a branch's change
    parent = await storage.load(saga_id)
    assert set(parent.applied[1:4]) == {
        "invoice",
        "child:shipping/book_carrier",
        "child:shipping/print_label",
    }
    assert parent.applied[0] == "reserve" and parent.applied[-1] == "notify"
    child = await storage.load(child_saga_id(saga_id, CHILD_NODE))
    assert (child.status, child.parent_id) == (SagaStatus.COMPLETED, saga_id)


async def test_a_group_that_fails_compensates_its_completed_child_as_a_unit(
    storage: MemorySagaStorage,
) -> None:
    mediator = mediator_on(storage, ParallelOrderSaga, ShippingSaga)
    saga_id = uuid.uuid4()
    outcome = await mediator.run(Order(notify_fails=True), saga_id)
    child_id = child_saga_id(saga_id, CHILD_NODE)
    assert outcome.status is SagaStatus.COMPENSATED
    assert str(outcome.error) == "invoicing down"
    # the child completed before invoice failed: its steps, then invoice, then reserve
    assert [e for e in LEDGER if e.startswith("compensate:")] == [
        "compensate:invoice",
        "compensate:print_label",
        f"compensate:book_carrier:label-o-1:{child_id}:book_carrier:compensate",
        "compensate:reserve",
    ]


# --- cancel and deadline ------------------------------------------------------------------------


class Stuck(SagaStepHandler[Shipping, None]):
    name = "stuck"
    started: anyio.Event | None = None

    async def act(self, context: Shipping) -> None:
        LEDGER.append("act:stuck")
        assert Stuck.started is not None
        Stuck.started.set()
        await anyio.sleep_forever()

    async def compensate(self, context: Shipping) -> None:
        LEDGER.append("compensate:stuck")


class StuckShipping(Saga[Shipping]):
    name = "stuck-shipping"
    steps = [BookCarrier, Stuck]


class StuckOrderSaga(Saga[Order]):
    name = "stuck-order"
    steps = [Reserve, SubSaga(StuckShipping, context=to_shipping)]


class LateOrderSaga(Saga[Order]):
    name = "late-order"
    deadline = 0.2
    steps = [Reserve, SubSaga(StuckShipping, context=to_shipping)]


async def test_a_cancel_of_the_parent_cancels_its_child_and_both_compensate(
    storage: MemorySagaStorage,
) -> None:
    Stuck.started = anyio.Event()
    mediator = mediator_on(storage, StuckOrderSaga, StuckShipping)
    saga_id = uuid.uuid4()
    outcomes = []

    async def run() -> None:
        outcomes.append(await mediator.run(Order(), saga_id))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await Stuck.started.wait()
            await mediator.cancel(saga_id, reason="customer left")
    (outcome,) = outcomes
    child_id = child_saga_id(saga_id, "child:stuck-shipping")
    assert outcome.status is SagaStatus.COMPENSATED
    assert (await storage.load(child_id)).status is SagaStatus.COMPENSATED
    assert [e for e in LEDGER if e.startswith("compensate:")] == [
        "compensate:stuck",
        f"compensate:book_carrier:label-o-1:{child_id}:book_carrier:compensate",
        "compensate:reserve",
    ]


async def test_the_parents_deadline_reaches_its_child(storage: MemorySagaStorage) -> None:
    Stuck.started = anyio.Event()
    mediator = mediator_on(storage, LateOrderSaga, StuckShipping)
    saga_id = uuid.uuid4()
    with anyio.fail_after(5):
        outcome = await mediator.run(Order(), saga_id)
    child_id = child_saga_id(saga_id, "child:stuck-shipping")
    assert outcome.status is SagaStatus.COMPENSATED
    assert "deadline" in str(outcome.error)
    assert (await storage.load(child_id)).status is SagaStatus.COMPENSATED
    assert LEDGER[-1] == "compensate:reserve" and "compensate:stuck" in LEDGER


async def test_a_child_whose_record_is_gone_fails_the_parents_rollback_visibly(
    storage: MemorySagaStorage,
) -> None:
    mediator = mediator_on(storage, OrderSaga, ShippingSaga)
    parent_id = uuid.uuid4()
    child_id = child_saga_id(parent_id, CHILD_NODE)
    load = type(storage).load

    async def retention_removed_the_child(saga_id: uuid.UUID) -> SagaRecord:
        if (
            saga_id == child_id
            and (await load(storage, parent_id)).status is not SagaStatus.RUNNING
        ):
            raise SagaNotFoundError(f"no saga with id {saga_id} in storage")
        return await load(storage, saga_id)

    storage.load = retention_removed_the_child  # type: ignore[method-assign]
    outcome = await mediator.run(Order(notify_fails=True), parent_id)
    assert outcome.status is SagaStatus.FAILED
    assert "cannot compensate child:shipping/print_label: its child saga's record is gone" in str(
        outcome.error
    )
    assert "compensate:reserve" not in LEDGER  # the rollback stops there, retried by recovery


class StuckCarrier(SagaStepHandler[Shipping, None]):
    name = "stuck_carrier"
    compensation_retry = RetryPolicy(attempts=1, initial_delay=0, jitter=0)

    async def act(self, context: Shipping) -> None:
        LEDGER.append("act:stuck_carrier")

    async def compensate(self, context: Shipping) -> None:
        LEDGER.append("compensate:stuck_carrier")
        raise RuntimeError("carrier API down")


class Breaks(SagaStepHandler[Shipping, None]):
    name = "breaks"

    async def act(self, context: Shipping) -> None:
        raise RuntimeError("label printer on fire")


class FailingPickup(Saga[Shipping]):
    name = "failing-pickup"
    steps = [StuckCarrier, WaitForSignal("picked-up"), Breaks]


class FailingPickupOrder(Saga[Order]):
    name = "failing-pickup-order"
    steps = [Reserve, SubSaga(FailingPickup, context=to_shipping)]


async def test_a_child_that_ends_failed_wakes_its_parent_which_compensates() -> None:
    storage = MemorySagaStorage()
    mediator = mediator_on(storage, FailingPickupOrder, FailingPickup)
    saga_id = uuid.uuid4()
    child_id = child_saga_id(saga_id, "child:failing-pickup")
    assert (await mediator.run(Order(), saga_id)).status is SagaStatus.WAITING

    await mediator.signal(child_id, "picked-up", None, signal_id="evt-1")
    worker = mediator.worker()
    with anyio.fail_after(5):
        await worker.run_once()  # the child: Breaks fails, its rollback is exhausted: FAILED
        assert (await storage.load(child_id)).status is SagaStatus.FAILED
        parent = await storage.load(saga_id)
        assert parent.wake_at is not None and parent.wake_at <= datetime.now(timezone.utc)
        await worker.run_once()  # the parent, woken at once: it compensates its own steps
        outcome = await mediator.handle(saga_id).result()
    assert outcome.status is SagaStatus.COMPENSATED
    assert f"child saga {child_id} (child:failing-pickup) failed" in str(outcome.error)
    assert LEDGER[-1] == "compensate:reserve"


async def test_a_cancelled_parent_stopped_mid_group_compensates_the_child_it_had_completed(
    storage: MemorySagaStorage,
) -> None:
    mediator = mediator_on(storage, ParallelOrderSaga, ShippingSaga)
    saga_id = uuid.uuid4()
    child_id = child_saga_id(saga_id, CHILD_NODE)
    write = type(storage).checkpoint

    async def dies_before_recording_the_child(checkpoint: Checkpoint) -> None:
        if checkpoint.saga_id == saga_id and "child:shipping/book_carrier" in checkpoint.applied:
            raise ProcessDied  # the child completed; the parent stops before recording it
        await write(storage, checkpoint)

    storage.checkpoint = dies_before_recording_the_child  # type: ignore[method-assign]
    with pytest.raises(BaseException) as stopped:
        await mediator.run(Order(), saga_id)
    assert stopped.group_contains(ProcessDied) or stopped.type is ProcessDied
    storage.checkpoint = write.__get__(storage)  # type: ignore[method-assign]
    assert (await storage.load(child_id)).status is SagaStatus.COMPLETED
    assert "child:shipping/book_carrier" not in (await storage.load(saga_id)).applied

    await storage.request_cancel(saga_id, reason="customer left")
    LEDGER.clear()
    with pytest.raises(SagaCompensatedError, match="customer left"):
        await recover_saga(saga=ParallelOrderSaga, saga_id=saga_id, storage=storage)
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED
    compensations = [e for e in LEDGER if e.startswith("compensate:")]
    # the group may have run invoice before the stop: undone; the child's steps (completed,
    # found by the cancel) are undone by the parent, in reverse order; reserve last
    assert sorted(compensations[:-1]) == sorted(
        [
            "compensate:invoice",
            "compensate:print_label",
            f"compensate:book_carrier:label-o-1:{child_id}:book_carrier:compensate",
        ]
    )
    assert compensations.index("compensate:print_label") < compensations.index(
        f"compensate:book_carrier:label-o-1:{child_id}:book_carrier:compensate"
    )
    assert compensations[-1] == "compensate:reserve"
    assert not [e for e in LEDGER if e.startswith("act:")]  # nothing ran forward again
