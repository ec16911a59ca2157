"""Versioned sagas (invariant 8): a saga runs to its end on the definition version it started
with, or waits, parked with the reason, until that version is deployed.

A ``SagaMap`` binds several versions of one saga name; new sagas start on the highest.
Recovery (``recover_saga``, the worker) looks each stored saga up by name and version and
never runs it on another version.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryWorker,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaDefinitionError,
    SagaMap,
    SagaMediator,
    SagaNotRegisteredError,
    SagaRecoveryError,
    SagaStatus,
    SagaStepHandler,
    codec_for,
    recover_saga,
)
from saga_core.storage import NewSaga, SagaRecord

pytestmark = pytest.mark.anyio

#: Events the next ``Reserve`` calls set and then hang on: a process that dies mid-act.
HANGING: list[anyio.Event] = []
#: Version 1's charge fails, and its refund fails, while these are set.
CHARGE_FAILS: list[bool] = []
REFUNDS_DOWN: list[bool] = []


class CardDeclinedError(Exception):
    """The card was declined."""


class RefundsDownError(Exception):
    """The payment provider does not refund right now."""


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"
    done: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class InvoiceContext(SagaContext):
    number: int = 0


class Reserve(SagaStepHandler[OrderContext, None]):
    name = "reserve"

    async def act(self, context: OrderContext) -> None:
        if HANGING:
            HANGING.pop().set()
            await anyio.sleep_forever()
        context.done.append("reserve")


class ChargeV1(SagaStepHandler[OrderContext, None]):
    name = "charge"
    compensation_retry = RetryPolicy(attempts=1, initial_delay=0.0)

    async def act(self, context: OrderContext) -> None:
        if CHARGE_FAILS:
            raise CardDeclinedError("card declined")
        context.done.append("charge v1")

    async def compensate(self, context: OrderContext) -> None:
        if REFUNDS_DOWN:
            raise RefundsDownError("payment provider unreachable")
        context.done.append("refund v1")


class ChargeV2(SagaStepHandler[OrderContext, None]):
    name = "charge"

    async def act(self, context: OrderContext) -> None:
        context.done.append("charge v2")


class Notify(SagaStepHandler[OrderContext, None]):
    name = "notify"

    async def act(self, context: OrderContext) -> None:
        context.done.append("notify")


class OrderSagaV1(Saga[OrderContext]):
    name = "orders"
    steps = [Reserve, ChargeV1]


class OrderSagaV2(Saga[OrderContext]):
    name = "orders"
    version = 2
    steps = [Reserve, ChargeV2, Notify]


class OrderSagaV3(Saga[OrderContext]):
    name = "orders"
    version = 3
    steps = [Reserve, Notify]


class Invoice(SagaStepHandler[InvoiceContext, None]):
    async def act(self, context: InvoiceContext) -> None:
        context.number += 1


class InvoiceSaga(Saga[InvoiceContext]):
    name = "invoices"
    steps = [Invoice]


V1_STEPS = ["reserve", "charge v1"]
V2_STEPS = ["reserve", "charge v2", "notify"]
V3_STEPS = ["reserve", "notify"]


@pytest.fixture(autouse=True)
def _no_hanging_steps_left() -> Any:
    yield
    HANGING.clear()
    CHARGE_FAILS.clear()
    REFUNDS_DOWN.clear()


def saga_map(*sagas: type[Saga[OrderContext]]) -> SagaMap:
    mapper = SagaMap()
    for saga in sagas:
        mapper.bind(OrderContext, saga)
    return mapper


async def stalled_saga(storage: MemorySagaStorage, saga: type[Saga[OrderContext]]) -> uuid.UUID:
    """A saga of ``saga`` whose process died inside its first act: RUNNING, recoverable."""
    mediator = SagaMediator(saga_map(saga), storage)
    saga_id = uuid.uuid4()
    started = anyio.Event()
    HANGING.append(started)

    async def run() -> None:
        async for _ in mediator.stream(OrderContext(), saga_id=saga_id):
            pass

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(run)
        await started.wait()
        task_group.cancel_scope.cancel()
    record = await storage.load(saga_id)
    assert (record.status, record.saga_version) == (SagaStatus.RUNNING, saga.version)
    return saga_id


def done(record: SagaRecord) -> list[str]:
    decoded: OrderContext = codec_for(OrderContext).decode(record.context)
    return decoded.done


# --- new sagas start on the highest bound version -----------------------------------------------


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
async def test_new_sagas_start_on_the_highest_bound_version(order: str) -> None:
    sagas = (OrderSagaV1, OrderSagaV2) if order == "oldest first" else (OrderSagaV2, OrderSagaV1)
    storage = MemorySagaStorage()
    mediator = SagaMediator(saga_map(*sagas), storage)

    outcome = await mediator.run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.done == V2_STEPS
    record = await storage.load(outcome.saga_id)
    assert (record.saga_name, record.saga_version) == ("orders", 2)


async def test_a_version_bound_after_the_mediator_started_sagas_is_started_from_then_on() -> None:
    storage = MemorySagaStorage()
    mapper = saga_map(OrderSagaV1)
    mediator = SagaMediator(mapper, storage)
    first = await mediator.run(OrderContext())
    mapper.bind(OrderContext, OrderSagaV2)
    streamed = [result.step_id async for result in mediator.stream(OrderContext())]

    assert first.context.done == V1_STEPS
    assert streamed == ["reserve", "charge", "notify"]
    assert (await storage.load(first.saga_id)).saga_version == 1


# --- recovery runs each saga on the version it started with -------------------------------------


async def test_recovery_of_a_v1_saga_after_v2_is_bound_runs_v1s_steps() -> None:
    storage = MemorySagaStorage()
    old = await stalled_saga(storage, OrderSagaV1)
    both = saga_map(OrderSagaV1, OrderSagaV2)
    new = await SagaMediator(both, storage).run(OrderContext(order_id="o-2"))

    report = await RecoveryWorker(both, storage).run_once()

    assert (report.claimed, report.completed, report.parked) == (1, 1, 0)
    recovered = await storage.load(old)
    assert (recovered.status, recovered.saga_version) == (SagaStatus.COMPLETED, 1)
    assert done(recovered) == V1_STEPS
    assert new.context.done == V2_STEPS
    assert (await storage.load(new.saga_id)).saga_version == 2


async def test_recover_saga_runs_the_class_of_the_stored_version() -> None:
    storage = MemorySagaStorage()
    saga_id = await stalled_saga(storage, OrderSagaV1)

    outcome = await recover_saga(saga=OrderSagaV1(), saga_id=saga_id, storage=storage)

    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.done == V1_STEPS


async def test_recover_saga_with_another_version_says_which_it_needs_and_runs_nothing() -> None:
    storage = MemorySagaStorage()
    saga_id = await stalled_saga(storage, OrderSagaV1)
    before = await storage.load(saga_id)

    with pytest.raises(SagaRecoveryError) as caught:
        await recover_saga(saga=OrderSagaV2, saga_id=saga_id, storage=storage)

    message = str(caught.value)
    assert "needs version 1 of saga 'orders'" in message
    assert "OrderSagaV2 is version 2" in message
    assert "nothing was run" in message
    assert await storage.load(saga_id) == before  # not claimed, not written


async def test_a_stored_saga_without_a_version_reads_and_recovers_as_version_1() -> None:
    """A record written before versions were stored (``NewSaga`` without ``saga_version``)."""
    now = [1_000.0]
    storage = MemorySagaStorage(clock=lambda: now[0])
    saga_id = uuid.uuid4()
    await storage.create(
        NewSaga(
            saga_id=saga_id,
            saga_name="orders",
            context=codec_for(OrderContext).encode(OrderContext()),
            lease_owner="a process that died",
            lease_seconds=30.0,
            next_step="reserve",
        )
    )
    now[0] += 31.0  # its lease expires

    assert (await storage.load(saga_id)).saga_version == 1
    report = await RecoveryWorker(saga_map(OrderSagaV2, OrderSagaV1), storage).run_once()

    assert report.completed == 1
    assert done(await storage.load(saga_id)) == V1_STEPS


# --- a version not bound here is parked, never run on another version ---------------------------


async def test_worker_parks_a_saga_of_a_newer_version_and_runs_it_once_deployed() -> None:
    storage = MemorySagaStorage()
    saga_id = await stalled_saga(storage, OrderSagaV3)
    old_worker = RecoveryWorker(saga_map(OrderSagaV1, OrderSagaV2), storage)

    report = await old_worker.run_once()

    assert (report.claimed, report.parked, report.completed, report.errors) == (1, 1, 0, 0)
    parked = await storage.load(saga_id)
    assert parked.parked
    assert parked.status is SagaStatus.RUNNING
    assert parked.error == (
        "saga orders is version 3 but this worker binds versions 1, 2: "
        "deploy version 3 and unpark it"
    )
    assert done(parked) == []  # nothing of another version ran

    deployed = RecoveryWorker(saga_map(OrderSagaV1, OrderSagaV2, OrderSagaV3), storage)
    assert (await deployed.run_once()).claimed == 0  # parked: it waits for an operator
    await storage.unpark(saga_id)
    report = await deployed.run_once()

    assert (report.claimed, report.completed) == (1, 1)
    finished = await storage.load(saga_id)
    assert (finished.status, finished.saga_version) == (SagaStatus.COMPLETED, 3)
    assert done(finished) == V3_STEPS


async def test_worker_parks_a_saga_whose_older_version_was_unbound_too_soon() -> None:
    storage = MemorySagaStorage()
    saga_id = await stalled_saga(storage, OrderSagaV1)

    report = await RecoveryWorker(saga_map(OrderSagaV2), storage).run_once()

    assert report.parked == 1
    parked = await storage.load(saga_id)
    assert parked.error == (
        "saga orders is version 1 but this worker binds version 2: bind version 1 again "
        "(keep it bound until its sagas finish) and unpark it"
    )
    assert done(parked) == []


async def test_a_failed_saga_parked_for_its_version_keeps_its_cause_and_rolls_back_on_it() -> None:
    storage = MemorySagaStorage()
    CHARGE_FAILS.append(True)
    REFUNDS_DOWN.append(True)
    failed = await SagaMediator(saga_map(OrderSagaV1), storage).run(OrderContext())
    assert failed.status is SagaStatus.FAILED

    report = await RecoveryWorker(saga_map(OrderSagaV2), storage).run_once()

    assert report.parked == 1
    parked = await storage.load(failed.saga_id)
    assert parked.status is SagaStatus.FAILED
    assert parked.error is not None
    assert parked.error.startswith(
        "saga orders is version 1 but this worker binds version 2: bind version 1 again "
        "(keep it bound until its sagas finish) and unpark it; last error: "
    )
    assert "RefundsDownError: payment provider unreachable" in parked.error

    REFUNDS_DOWN.clear()
    await storage.unpark(failed.saga_id)
    report = await RecoveryWorker(saga_map(OrderSagaV1, OrderSagaV2), storage).run_once()

    assert report.compensated == 1
    rolled_back = await storage.load(failed.saga_id)
    assert rolled_back.status is SagaStatus.COMPENSATED
    assert done(rolled_back) == ["reserve", "refund v1"]


async def test_worker_recover_refuses_a_version_it_does_not_bind_without_claiming() -> None:
    storage = MemorySagaStorage()
    saga_id = await stalled_saga(storage, OrderSagaV3)
    before = await storage.load(saga_id)
    worker = RecoveryWorker(saga_map(OrderSagaV1, OrderSagaV2), storage)

    with pytest.raises(SagaRecoveryError, match="is version 3 but this worker binds versions 1, 2"):
        await worker.recover(saga_id)

    assert await storage.load(saga_id) == before


async def test_a_saga_name_the_worker_does_not_bind_is_not_parked_at_once() -> None:
    """Another application's workers may share the storage: only after its attempts."""
    storage = MemorySagaStorage()
    saga_id = await stalled_saga(storage, OrderSagaV1)
    mapper = SagaMap()
    mapper.bind(InvoiceContext, InvoiceSaga)

    report = await RecoveryWorker(mapper, storage).run_once()

    assert (report.claimed, report.errors, report.parked) == (1, 1, 0)
    assert not (await storage.load(saga_id)).parked


# --- SagaMap lookups ----------------------------------------------------------------------------


def test_saga_map_looks_sagas_up_by_name_and_version() -> None:
    mapper = saga_map(OrderSagaV2, OrderSagaV1)

    assert mapper.saga_for(OrderContext) is OrderSagaV2
    assert mapper.saga_named("orders") is OrderSagaV2
    assert mapper.saga_named("orders", 1) is OrderSagaV1
    assert mapper.versions_of("orders") == (1, 2)
    assert mapper.versions_of("invoices") == ()
    assert mapper.names() == ("orders",)
    assert mapper.context_types_of("orders") == (OrderContext,)
    assert len(mapper) == 2
    assert list(mapper) == [(OrderContext, OrderSagaV1), (OrderContext, OrderSagaV2)]
    with pytest.raises(SagaNotRegisteredError, match=r"version 3 is not bound \(bound: versions"):
        mapper.saga_named("orders", 3)


# --- bad input ----------------------------------------------------------------------------------


def test_binding_one_saga_name_and_version_twice_is_refused() -> None:
    mapper = saga_map(OrderSagaV1)
    with pytest.raises(SagaDefinitionError, match=r"bound already, to OrderSagaV1 .*bind each"):
        mapper.bind(OrderContext, OrderSagaV1)


class AlsoVersion2(Saga[OrderContext]):
    name = "orders"
    version = 2
    steps = [Reserve]


def test_two_classes_with_one_saga_name_and_version_are_refused_with_the_next_version() -> None:
    mapper = saga_map(OrderSagaV1, OrderSagaV2)
    with pytest.raises(SagaDefinitionError) as caught:
        mapper.bind(OrderContext, AlsoVersion2)
    message = str(caught.value)
    assert "two sagas are named 'orders' with version 2: OrderSagaV2 and AlsoVersion2" in message
    assert "the next `version` (3)" in message


def test_two_saga_names_on_one_context_type_are_refused() -> None:
    class RenamedOrders(Saga[OrderContext]):
        name = "orders-renamed"
        version = 2
        steps = [Reserve]

    mapper = saga_map(OrderSagaV1)
    with pytest.raises(SagaDefinitionError) as caught:
        mapper.bind(OrderContext, RenamedOrders)
    message = str(caught.value)
    assert "OrderContext is bound already, to saga 'orders'" in message
    assert "RenamedOrders is named 'orders-renamed'" in message
    assert "give every version of that saga the same `name`" in message
    assert mapper.versions_of("orders-renamed") == ()  # nothing half-bound


@dataclasses.dataclass
class RushOrder(OrderContext):
    rush: bool = True


class RushOnly(Saga[RushOrder]):
    name = "orders"
    version = 2
    steps = [Reserve]


def test_a_version_that_cannot_run_on_the_names_context_types_is_refused() -> None:
    mapper = saga_map(OrderSagaV1)
    with pytest.raises(
        SagaDefinitionError,
        match=r"RushOnly .*runs on RushOrder, but saga 'orders' is bound to OrderContext too",
    ):
        mapper.bind(RushOrder, RushOnly)


def test_one_saga_may_serve_a_context_type_and_its_subclass_in_every_version() -> None:
    mapper = saga_map(OrderSagaV1)
    mapper.bind(RushOrder, OrderSagaV1)
    mapper.bind(OrderContext, OrderSagaV2)

    assert mapper.saga_for(RushOrder) is OrderSagaV2
    assert mapper.context_types_of("orders") == (OrderContext, RushOrder)


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.0, None])
def test_a_version_that_is_not_a_positive_int_is_refused_at_class_creation(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError) as caught:

        class BadVersion(Saga[OrderContext]):
            name = "orders"
            version = bad
            steps = [Reserve]

    message = str(caught.value)
    assert f"BadVersion.version must be a positive int (1, 2, ...), got {bad!r}" in message
    assert "number the versions of one saga 1, 2, 3" in message
