"""``recover_saga``: invariant 8 (stable step identity) and invariant 9 (the same behaviour live
and after recovery: context from storage, resume from the cursor or finish compensation)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import di
import pytest
from di import bind_by_type
from di.dependent import Dependent

from saga_core import (
    CircuitOpenError,
    Container,
    Fallback,
    MemorySagaStorage,
    Saga,
    SagaCompensatedError,
    SagaContext,
    SagaError,
    SagaLeaseHeldError,
    SagaMediator,
    SagaNotFoundError,
    SagaObserver,
    SagaRecoveryError,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    StorageCorruptedError,
    codec_for,
    recover_saga,
)
from saga_core.storage import Checkpoint, NewSaga

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]

LEASE = 30.0
T = TypeVar("T")


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"
    amount: int = 0
    trail: list[str] = dataclasses.field(default_factory=list)


class Crash(BaseException):
    """Stands in for the process dying in the middle of a step."""


def encoded(context: OrderContext) -> str:
    return codec_for(OrderContext).encode(context)


async def stored_saga(
    storage: MemorySagaStorage,
    saga: type[Saga[Any]],
    *,
    status: SagaStatus = SagaStatus.RUNNING,
    cursor: int = 0,
    applied: tuple[str, ...] = (),
    context: str | None = None,
    error: str | None = None,
    lease_owner: str | None = None,
) -> uuid.UUID:
    """Write a saga as an earlier runner would have left it (its lease released, or held by
    ``lease_owner`` for ``LEASE`` seconds)."""
    saga_id = uuid.uuid4()
    text = encoded(OrderContext()) if context is None else context
    await storage.create(NewSaga(saga_id, saga.definition().name, text, "earlier-runner", LEASE))
    await storage.checkpoint(
        Checkpoint(
            saga_id,
            1,
            status,
            cursor,
            applied,
            text,
            [],
            error,
            lease_owner,
            None if lease_owner is None else LEASE,
        )
    )
    return saga_id


def crash_once(step_name: str, ledger: list[str], *, then_fail: bool = False) -> Any:
    """A step whose first act dies with the process; later acts succeed (or fail)."""
    calls: list[int] = []

    class CrashesOnce(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            ledger.append(f"act:{step_name}")
            calls.append(1)
            if len(calls) == 1:
                raise Crash
            if then_fail:
                raise ValueError(f"{step_name}.act failed")

        async def compensate(self, context: OrderContext) -> None:
            ledger.append(f"compensate:{step_name}")

    CrashesOnce.name = CrashesOnce.step_id = step_name
    return CrashesOnce


# --- resuming forward ----------------------------------------------------------------------------


async def test_a_running_saga_resumes_from_its_cursor(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",))
    writes = storage.write_count

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.saga_id == saga_id
    assert outcome.error is None
    assert ledger == ["act:b", "act:c"]  # a is not run again
    assert storage.write_count == writes + 1 + 2  # the claim, then one checkpoint per step
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.lease_owner) == (SagaStatus.COMPLETED, 3, None)


async def test_the_step_in_flight_when_the_runner_died_runs_again(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), crash_once("b", ledger), make_step("c")]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, OrderSaga).run(OrderContext(), saga_id=saga_id)

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:b", "act:b", "act:c"]


async def test_recovery_loads_the_context_from_storage(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    seen: list[OrderContext] = []

    class Adds(SagaStepHandler[OrderContext, None]):
        name = "adds"

        async def act(self, context: OrderContext) -> None:
            context.amount += 5
            context.trail.append("adds")

    class Sees(SagaStepHandler[OrderContext, None]):
        name = "sees"

        async def act(self, context: OrderContext) -> None:
            seen.append(dataclasses.replace(context, trail=list(context.trail)))
            context.trail.append("sees")

    class OrderSaga(Saga[OrderContext]):
        steps = [Adds, crash_once("crash", ledger), Sees]

    saga_id = uuid.uuid4()
    caller_context = OrderContext(order_id="o-7", amount=1)
    with pytest.raises(Crash):
        await make_mediator(OrderContext, OrderSaga).run(caller_context, saga_id=saga_id)
    caller_context.amount = 1000  # the caller's object is not what recovery uses

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert seen == [OrderContext(order_id="o-7", amount=6, trail=["adds"])]
    assert outcome.context == OrderContext(order_id="o-7", amount=6, trail=["adds", "sees"])
    assert outcome.context is not caller_context
    stored = json.loads((await storage.load(saga_id)).context)
    assert stored == {"order_id": "o-7", "amount": 6, "trail": ["adds", "sees"]}


async def test_a_step_failing_after_recovery_rolls_back_what_ran_before_the_crash(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), crash_once("c", ledger, then_fail=True)]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, OrderSaga).run(OrderContext(), saga_id=saga_id)

    with pytest.raises(SagaCompensatedError) as caught:
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value.__cause__, ValueError)
    assert ledger == [
        "act:a",
        "act:b",
        "act:c",
        "act:c",
        "compensate:c",
        "compensate:b",
        "compensate:a",
    ]
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


# --- finishing a rollback ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [SagaStatus.COMPENSATING, SagaStatus.FAILED])
async def test_a_rolling_back_saga_finishes_its_compensation_then_raises(
    status: SagaStatus, make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    saga_id = await stored_saga(
        storage, OrderSaga, status=status, cursor=1, applied=("a", "b"), error="ValueError: x"
    )

    with pytest.raises(SagaCompensatedError) as caught:
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert isinstance(caught.value, RuntimeError)
    assert caught.value.saga_id == saga_id
    assert caught.value.__cause__ is None  # the trigger belonged to the earlier runner
    assert ledger == ["compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert (record.status, record.applied) == (SagaStatus.COMPENSATED, ())


async def test_a_compensating_saga_with_nothing_left_to_undo_ends_compensated(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    saga_id = await stored_saga(storage, OrderSaga, status=SagaStatus.COMPENSATING)

    with pytest.raises(SagaCompensatedError):
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert ledger == []
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("fails", [False, True], ids=["completed", "compensated"])
async def test_a_finished_saga_is_returned_without_running_anything(
    fails: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", change=lambda c: c.trail.append("a")),
            make_step("b", act_fails=int(fails)),
        ]

    live = await make_mediator(OrderContext, OrderSaga).run(OrderContext())
    calls = list(ledger)
    record = await storage.load(live.saga_id)

    outcome = await recover_saga(saga=OrderSaga, saga_id=live.saga_id, storage=storage)

    assert outcome.saga_id == live.saga_id
    assert outcome.status is live.status
    assert outcome.context == OrderContext(trail=["a"])
    assert outcome.error is None
    assert ledger == calls
    assert await storage.load(live.saga_id) == record


# --- refusals ------------------------------------------------------------------------------------


async def test_an_unknown_saga_id_raises_saga_not_found(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    with pytest.raises(SagaNotFoundError):
        await recover_saga(saga=OrderSaga, saga_id=uuid.uuid4(), storage=storage)


async def test_a_saga_leased_to_a_live_runner_is_refused(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",), lease_owner="alive")
    before = await storage.load(saga_id)

    with pytest.raises(SagaLeaseHeldError, match="alive"):
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage, owner="recoverer")

    assert ledger == []
    assert await storage.load(saga_id) == before


async def test_the_lease_owner_itself_may_recover_its_saga(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",), lease_owner="me")

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage, owner="me")

    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:b"]


async def test_a_saga_whose_lease_expired_can_be_recovered(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    advance_clock: Callable[[float], None],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",), lease_owner="dead")
    advance_clock(LEASE + 1)

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:b"]


async def test_recovering_with_a_different_saga_class_is_refused(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    class RefundSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",))

    with pytest.raises(SagaRecoveryError, match="started as") as caught:
        await recover_saga(saga=RefundSaga, saga_id=saga_id, storage=storage)

    assert OrderSaga.definition().name in str(caught.value)
    assert ledger == []
    assert (await storage.load(saga_id)).lease_owner is None  # not even claimed


async def test_recovering_a_finished_saga_with_a_different_saga_class_is_refused(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    class RefundSaga(Saga[OrderContext]):
        steps = [make_step("r")]

    outcome = await make_mediator(OrderContext, OrderSaga).run(OrderContext())

    with pytest.raises(SagaRecoveryError):
        await recover_saga(saga=RefundSaga, saga_id=outcome.saga_id, storage=storage)


# --- stable step identity (invariant 8) ----------------------------------------------------------


def orders_saga(step_list: list[Any]) -> type[Saga[OrderContext]]:
    """A version of the saga stored as ``"orders"``: call it again to get the same saga after a
    code change."""

    class OrderSaga(Saga[OrderContext]):
        name = "orders"
        steps = step_list

    return OrderSaga


async def test_recovery_refuses_a_saga_whose_applied_step_was_renamed(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    a, b, c = make_step("a"), make_step("b"), make_step("c")
    before = orders_saga([a, b, c])
    after = orders_saga([a, make_step("b2"), c])
    saga_id = await stored_saga(storage, before, cursor=2, applied=("a", "b"))

    with pytest.raises(SagaRecoveryError, match=r"\['b'\].*renamed or removed"):
        await recover_saga(saga=after, saga_id=saga_id, storage=storage)
    assert ledger == []


async def test_recovery_refuses_a_saga_whose_applied_step_was_removed(
    make_step: StepFactory, storage: MemorySagaStorage, ledger: list[str]
) -> None:
    a, b, c = make_step("a"), make_step("b"), make_step("c")
    before = orders_saga([a, b, c])
    after = orders_saga([a, c])
    saga_id = await stored_saga(
        storage, before, status=SagaStatus.COMPENSATING, cursor=2, applied=("a", "b")
    )

    with pytest.raises(SagaRecoveryError, match="'b'"):
        await recover_saga(saga=after, saga_id=saga_id, storage=storage)
    assert ledger == []


@pytest.mark.parametrize(
    ("order", "applied", "message"),
    [
        (("b", "a", "c"), ("a",), "reordered or replaced"),
        (("a", "c", "b"), ("a", "b"), "after its cursor"),
    ],
    ids=["done-step-moved-later", "applied-step-moved-past-cursor"],
)
async def test_recovery_refuses_a_saga_whose_steps_were_reordered(
    order: tuple[str, ...],
    applied: tuple[str, ...],
    message: str,
    make_step: StepFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    steps = {name: make_step(name) for name in ("a", "b", "c")}
    before = orders_saga([steps["a"], steps["b"], steps["c"]])
    after = orders_saga([steps[n] for n in order])
    saga_id = await stored_saga(storage, before, cursor=1, applied=applied)

    with pytest.raises(SagaRecoveryError, match=message):
        await recover_saga(saga=after, saga_id=saga_id, storage=storage)
    assert ledger == []


async def test_recovery_refuses_a_cursor_beyond_the_sagas_steps(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    a = make_step("a")
    saga = orders_saga([a])
    saga_id = await stored_saga(storage, saga, cursor=3, applied=("a",))

    with pytest.raises(SagaRecoveryError, match="at step 3"):
        await recover_saga(saga=saga, saga_id=saga_id, storage=storage)


@pytest.mark.parametrize(
    "change",
    ["inserted-before", "renamed", "removed", "moved-earlier"],
)
async def test_recovery_refuses_a_saga_whose_step_in_flight_changed(
    change: str,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    """The process died during ``c``; the code then changed around ``c``. Running whatever step
    is now at that position would be the wrong step, and ``c`` (which may have had an effect)
    would never be compensated."""
    a, b, c = make_step("a"), make_step("b"), crash_once("c", ledger)
    new = make_step("new", act_fails=1)
    after_change = {
        "inserted-before": [a, b, new, c],
        "renamed": [a, b, new],
        "removed": [a, b],
        "moved-earlier": [a, c, b],
    }[change]
    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, orders_saga([a, b, c])).run(
            OrderContext(), saga_id=saga_id
        )
    before = await storage.load(saga_id)

    with pytest.raises(SagaRecoveryError, match=r"'c'|c as step"):
        await recover_saga(saga=orders_saga(after_change), saga_id=saga_id, storage=storage)

    assert ledger == ["act:a", "act:b", "act:c"]
    assert await storage.load(saga_id) == before


# --- corrupted storage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        "{not json",
        "[]",
        '{"order_id": 5, "amount": 0, "trail": []}',
        '{"order_id": "o", "amount": "zero", "trail": []}',
        '{"order_id": "o", "amount": 0, "trail": [], "unknown": 1}',
    ],
    ids=["invalid-json", "not-an-object", "wrong-type-str", "wrong-type-int", "unknown-key"],
)
@pytest.mark.parametrize("builder", ["default", "class", "callable"])
async def test_a_corrupted_stored_context_raises_storage_corrupted(
    context: str, builder: str, make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    def strict_builder(data: Any) -> OrderContext:
        return codec_for(OrderContext).from_jsonable(data)

    builders: dict[str, Any] = {
        "default": None,
        "class": OrderContext,
        "callable": strict_builder,
    }
    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",), context=context)

    with pytest.raises(StorageCorruptedError) as caught:
        await recover_saga(
            saga=OrderSaga, saga_id=saga_id, storage=storage, context_builder=builders[builder]
        )
    assert isinstance(caught.value, SagaError)
    assert isinstance(caught.value, ValueError)


# --- context builders ----------------------------------------------------------------------------


async def test_context_builder_may_be_the_context_class(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    class Untyped(Saga):  # type: ignore[type-arg]
        steps = [make_step("a"), make_step("b")]

    saga_id = await stored_saga(
        storage, Untyped, cursor=1, applied=("a",), context=encoded(OrderContext(amount=3))
    )

    outcome = await recover_saga(
        saga=Untyped, saga_id=saga_id, storage=storage, context_builder=OrderContext
    )

    assert outcome.context == OrderContext(amount=3)


async def test_a_saga_without_a_context_type_needs_a_context_builder(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    class Untyped(Saga):  # type: ignore[type-arg]
        steps = [make_step("a")]

    saga_id = await stored_saga(storage, Untyped)

    with pytest.raises(SagaUsageError, match="context_builder"):
        await recover_saga(saga=Untyped, saga_id=saga_id, storage=storage)


async def test_context_builder_may_be_a_callable_given_the_stored_json(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    received: list[dict[str, Any]] = []

    def build(data: dict[str, Any]) -> OrderContext:
        received.append(data)
        return OrderContext(order_id=data["order_id"].upper(), amount=data["amount"])

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", change=lambda c: c.trail.append("b"))]

    stored = OrderContext(order_id="o-5", amount=2)
    saga_id = await stored_saga(
        storage, OrderSaga, cursor=1, applied=("a",), context=encoded(stored)
    )

    outcome = await recover_saga(
        saga=OrderSaga, saga_id=saga_id, storage=storage, context_builder=build
    )

    assert received == [{"order_id": "o-5", "amount": 2, "trail": []}]
    assert outcome.context == OrderContext(order_id="O-5", amount=2, trail=["b"])


async def test_recover_saga_accepts_a_saga_instance_but_not_something_else(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",))

    with pytest.raises(SagaUsageError, match="needs a Saga class"):
        await recover_saga(saga=OrderContext, saga_id=saga_id, storage=storage)  # type: ignore[arg-type]
    outcome = await recover_saga(saga=OrderSaga(), saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED


async def test_observers_see_a_resumed_saga(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    started: list[bool] = []

    class Observer(SagaObserver):
        def saga_started(self, saga_id: uuid.UUID, saga_name: str, *, resumed: bool) -> None:
            started.append(resumed)

    saga_id = await stored_saga(storage, OrderSaga, cursor=1, applied=("a",))
    await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage, observers=[Observer()])

    assert started == [True]


@dataclasses.dataclass
class RushOrderContext(OrderContext):
    rush: bool = True


async def test_a_saga_started_with_a_context_subclass_asks_for_that_class_as_builder(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    """The default builder is the saga's declared context type; a record stored from a
    subclass is intact, so the error says which builder to pass instead of 'corrupted'."""

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), crash_once("b", ledger)]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, OrderSaga).run(RushOrderContext(), saga_id=saga_id)

    with pytest.raises(SagaRecoveryError, match=r"RushOrderContext.*context_builder") as caught:
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert isinstance(caught.value.__cause__, StorageCorruptedError)


async def test_a_saga_started_with_a_context_subclass_recovers_with_that_class_as_builder(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), crash_once("b", ledger)]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, OrderSaga).run(
            RushOrderContext(rush=False), saga_id=saga_id
        )

    outcome = await recover_saga(
        saga=OrderSaga, saga_id=saga_id, storage=storage, context_builder=RushOrderContext
    )

    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context == RushOrderContext(rush=False)


# --- the same container live and after recovery --------------------------------------------------


class Inventory:
    """A service the steps get from the container."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.users: list[str] = []


class ReserveStock(SagaStepHandler[OrderContext, None]):
    name = "reserve"

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    async def act(self, context: OrderContext) -> None:
        self.inventory.users.append(f"act:{self.step_id}")


class CrashingShip(SagaStepHandler[OrderContext, None]):
    name = "ship"
    crashed: list[int] = []

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    async def act(self, context: OrderContext) -> None:
        self.inventory.users.append(f"act:{self.step_id}")
        if not CrashingShip.crashed:
            CrashingShip.crashed.append(1)
            raise Crash


class ContainerSaga(Saga[OrderContext]):
    steps = [ReserveStock, CrashingShip]


def saga_core_container(inventory: Inventory) -> object:
    container = Container()
    container.register(Inventory, inventory)
    return container


def di_container(inventory: Inventory) -> object:
    container = di.Container()
    container.bind(bind_by_type(Dependent(lambda: inventory, scope="request"), Inventory))
    return container


@pytest.mark.parametrize("make_container", [saga_core_container, di_container])
async def test_the_same_container_builds_steps_live_and_after_recovery(
    make_container: Callable[[Inventory], object],
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
) -> None:
    CrashingShip.crashed = []
    inventory = Inventory("main")
    container = make_container(inventory)
    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, ContainerSaga, di_container=container).run(
            OrderContext(), saga_id=saga_id
        )

    outcome = await recover_saga(
        saga=ContainerSaga, saga_id=saga_id, storage=storage, container=container
    )

    assert outcome.status is SagaStatus.COMPLETED
    assert inventory.users == ["act:reserve", "act:ship", "act:ship"]


# --- Fallback branches after recovery ------------------------------------------------------------


@pytest.mark.parametrize("primary_leaves_no_effect", [False, True])
async def test_recovery_compensates_the_fallback_branch_that_ran_and_the_failed_primary(
    primary_leaves_no_effect: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    primary = make_step(
        "primary", act_fails=1, failed_act_leaves_no_effect=primary_leaves_no_effect
    )
    fallback = make_step("fallback")

    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a"),
            Fallback(step=primary, fallback=fallback),
            crash_once("c", ledger, then_fail=True),
        ]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, OrderSaga).run(OrderContext(), saga_id=saga_id)
    record = await storage.load(saga_id)
    assert record.cursor == 2
    expected_applied = (
        ("a", "fallback") if primary_leaves_no_effect else ("a", "primary", "fallback")
    )
    assert record.applied == expected_applied

    with pytest.raises(SagaCompensatedError):
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    undone = [entry for entry in ledger if entry.startswith("compensate:")]
    expected = ["compensate:c", "compensate:fallback"]
    if not primary_leaves_no_effect:
        expected.append("compensate:primary")
    expected.append("compensate:a")
    assert undone == expected
    assert ledger.count("act:primary") == 1 and ledger.count("act:fallback") == 1


async def test_a_primary_in_flight_at_the_crash_is_compensated_even_if_recovery_falls_back(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OpenAfterCrash:
        """A breaker that is closed for the first run and open once the process restarted."""

        def __init__(self) -> None:
            self.is_open = False

        async def call(self, step_id: str, action: Callable[[], Awaitable[T]]) -> T:
            if self.is_open:
                raise CircuitOpenError(step_id)
            return await action()

    breaker = OpenAfterCrash()

    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(
                step=crash_once("primary", ledger),
                fallback=make_step("fallback"),
                circuit_breaker=breaker,
            ),
            make_step("c", act_fails=1),
        ]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, ShipSaga).run(OrderContext(), saga_id=saga_id)
    breaker.is_open = True

    with pytest.raises(SagaCompensatedError):
        await recover_saga(saga=ShipSaga, saga_id=saga_id, storage=storage)

    assert ledger == [
        "act:primary",
        "act:fallback",
        "act:c",
        "compensate:c",
        "compensate:fallback",
        "compensate:primary",  # it may have had an effect before the crash
    ]


async def test_a_fallback_in_flight_at_the_crash_is_compensated_even_if_the_primary_then_succeeds(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(
                step=make_step("primary", act_fails=1),  # fails live, succeeds after recovery
                fallback=crash_once("fallback", ledger),  # the process dies during it
            ),
            make_step("c", act_fails=1),
        ]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, ShipSaga).run(OrderContext(), saga_id=saga_id)

    with pytest.raises(SagaCompensatedError):
        await recover_saga(saga=ShipSaga, saga_id=saga_id, storage=storage)

    assert ledger[:4] == ["act:primary", "act:fallback", "act:primary", "act:c"]
    undone = [entry for entry in ledger if entry.startswith("compensate:")]
    assert sorted(undone) == ["compensate:c", "compensate:fallback", "compensate:primary"]
