"""``Saga.deadline``: a saga not finished by then is compensated — a live step is cancelled at
the deadline (and compensated: it may have had an effect), a waiting saga is woken at its
deadline by a worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    Saga,
    SagaContext,
    SagaDeadlineExceededError,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    Sleep,
    WaitForSignal,
    bootstrap,
)

pytestmark = pytest.mark.anyio

StepClass = type[SagaStepHandler[Any, Any]]
StepFactory = Callable[..., StepClass]

#: A deadline short enough to pass in a test, long enough not to pass before a test checks
#: that a saga is not due yet.
DEADLINE = 0.25


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


def mediator_for(saga: type[Saga[Any]], storage: MemorySagaStorage) -> SagaMediator:
    return bootstrap(sagas_mapper=lambda m: m.bind(OrderContext, saga), saga_storage=storage)


async def until_compensated(mediator: SagaMediator) -> None:
    """Let a worker poll (for at most 2 s) until one of its rounds compensated a saga."""
    worker = mediator.worker()
    with anyio.fail_after(2):
        while True:
            if (await worker.run_once()).compensated:
                return
            await anyio.sleep(0.01)


def endless_step(step_name: str, ledger: list[str]) -> StepClass:
    class Endless(SagaStepHandler[OrderContext, None]):
        name = step_name

        async def act(self, context: OrderContext) -> None:
            ledger.append(f"act:{step_name}")
            await anyio.sleep_forever()

        async def compensate(self, context: OrderContext) -> None:
            ledger.append(f"compensate:{step_name}")

    return Endless


async def test_a_step_running_past_the_deadline_is_cancelled_and_compensated(
    make_step: StepFactory, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = DEADLINE
        steps = [make_step("a"), endless_step("b", ledger), make_step("c")]

    storage = MemorySagaStorage()
    with anyio.fail_after(2):
        outcome = await mediator_for(OrderSaga, storage).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaDeadlineExceededError)
    assert "was not finished by its deadline" in str(outcome.error)
    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    record = await storage.load(outcome.saga_id)
    assert record.error is not None and record.error.startswith("SagaDeadlineExceededError: ")


async def test_the_deadline_is_stored_at_creation(make_step: StepFactory) -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = timedelta(hours=2)
        steps = [make_step("a"), WaitForSignal("paid")]

    storage = MemorySagaStorage()
    before = datetime.now(timezone.utc)
    outcome = await mediator_for(OrderSaga, storage).run(OrderContext())
    after = datetime.now(timezone.utc)

    record = await storage.load(outcome.saga_id)
    assert record.deadline_at is not None
    assert before + timedelta(hours=2) <= record.deadline_at <= after + timedelta(hours=2)
    # a wait without a timer of its own wakes at the deadline
    assert record.wake_at == record.deadline_at


@pytest.mark.parametrize(
    ("wait_timeout", "wakes_at_timeout"),
    [(timedelta(minutes=5), True), (timedelta(days=1), False)],
)
async def test_a_wait_wakes_at_its_timeout_or_the_deadline_whichever_comes_first(
    make_step: StepFactory, wait_timeout: timedelta, wakes_at_timeout: bool
) -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = timedelta(hours=2)
        steps = [WaitForSignal("paid", timeout=wait_timeout), make_step("b")]

    storage = MemorySagaStorage()
    before = datetime.now(timezone.utc)
    outcome = await mediator_for(OrderSaga, storage).run(OrderContext())
    record = await storage.load(outcome.saga_id)
    assert record.wake_at is not None and record.deadline_at is not None
    if wakes_at_timeout:
        assert before + wait_timeout <= record.wake_at < record.deadline_at
    else:
        assert record.wake_at == record.deadline_at


async def test_a_waiting_saga_past_its_deadline_is_compensated_by_a_worker(
    make_step: StepFactory, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = DEADLINE
        steps = [make_step("a"), WaitForSignal("paid"), make_step("b")]

    storage = MemorySagaStorage()
    mediator = mediator_for(OrderSaga, storage)
    saga_id = (await mediator.run(OrderContext())).saga_id
    worker = mediator.worker()
    assert (await worker.run_once()).claimed == 0  # not due before its deadline

    await until_compensated(mediator)
    with anyio.fail_after(1):
        outcome = await mediator.handle(saga_id).result()

    assert outcome.status is SagaStatus.COMPENSATED
    assert "SagaDeadlineExceededError" in str(outcome.error)
    assert ledger == ["act:a", "compensate:a"]


async def test_the_deadline_wins_over_a_signal_that_arrived_after_it(
    make_step: StepFactory, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = DEADLINE
        steps = [make_step("a"), Sleep(timedelta(hours=1)), WaitForSignal("paid"), make_step("b")]

    storage = MemorySagaStorage()
    mediator = mediator_for(OrderSaga, storage)
    saga_id = (await mediator.run(OrderContext())).saga_id
    await anyio.sleep(DEADLINE * 1.5)
    await mediator.signal(saga_id, "paid")  # still accepted: the saga has not reached it

    await until_compensated(mediator)
    assert ledger == ["act:a", "compensate:a"]


async def test_a_detached_saga_counts_its_deadline_from_its_start(
    make_step: StepFactory, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        deadline = DEADLINE
        steps = [make_step("a")]

    storage = MemorySagaStorage()
    mediator = mediator_for(OrderSaga, storage)
    handle = await mediator.start(OrderContext())
    await anyio.sleep(DEADLINE * 1.5)  # nobody ran it in time
    await mediator.worker().run_once()

    outcome = await handle.result()
    assert outcome.status is SagaStatus.COMPENSATED
    assert "SagaDeadlineExceededError" in str(outcome.error)
    assert ledger == []
