"""``mediator.cancel``: a durable decision to roll back. A step running in this process is
cancelled at once and compensated too; a runner elsewhere compensates at its next checkpoint;
a waiting saga is compensated by a worker; a finished saga refuses; a compensating one is left
alone."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryReport,
    Saga,
    SagaCancelledError,
    SagaFinishedError,
    SagaMediator,
    SagaNotFoundError,
    SagaOutcome,
    SagaSignalRefusedError,
    SagaStatus,
    SagaUsageError,
    WaitForSignal,
)

from ._wait_sagas import (
    Gate,
    MediatorFactory,
    OrderContext,
    StepFactory,
    mediator_for,
    order_saga,
    waiting_saga,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def wait_between_steps(make_step: StepFactory) -> type[Saga[OrderContext]]:
    """Step a, a wait for signal ``paid``, step b."""
    return order_saga(make_step("a"), WaitForSignal("paid"), make_step("b"))


@dataclasses.dataclass
class BackgroundRun:
    """A saga run in this process, in the background; its outcome once the run returned."""

    saga_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)
    outcomes: list[SagaOutcome[Any]] = dataclasses.field(default_factory=list)


@contextlib.asynccontextmanager
async def held_at(gate: Gate, mediator: SagaMediator) -> AsyncIterator[BackgroundRun]:
    """Run a new saga of ``mediator`` in the background, and enter once its step held by
    ``gate`` has started; leave once the run has returned (within 2 s)."""
    run = BackgroundRun()

    async def run_saga() -> None:
        run.outcomes.append(await mediator.run(OrderContext(), run.saga_id))

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_saga)
            await gate.started.wait()
            yield run


async def test_cancel_of_a_saga_running_here_cancels_its_step_at_once_and_compensates_it(
    storage: MemorySagaStorage,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    gate = Gate(forever=True)
    saga = order_saga(make_step("a"), gate.step("b", ledger), make_step("c"))
    mediator = make_mediator(OrderContext, saga)
    async with held_at(gate, mediator) as run:
        await mediator.cancel(run.saga_id, reason="customer changed their mind")

    saga_id = run.saga_id
    (outcome,) = run.outcomes
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaCancelledError)
    assert "customer changed their mind" in str(outcome.error)
    # b was in flight: it may have had an effect, so it is compensated too
    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert record.cancel_reason == "customer changed their mind"
    assert record.error is not None and record.error.startswith("SagaCancelledError: ")


async def test_cancel_of_a_waiting_saga_is_compensated_by_a_worker(
    storage: MemorySagaStorage,
    make_mediator: MediatorFactory,
    wait_between_steps: type[Saga[OrderContext]],
    ledger: list[str],
) -> None:
    mediator = make_mediator(OrderContext, wait_between_steps)
    saga_id = await waiting_saga(mediator)
    assert await storage.list_recoverable() == []

    await mediator.cancel(saga_id, reason="timeout at the shop")

    record = await storage.load(saga_id)
    assert (record.status, record.cancel_reason) == (SagaStatus.WAITING, "timeout at the shop")
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]  # due now
    with pytest.raises(SagaSignalRefusedError, match="it is cancelled"):
        await mediator.signal(saga_id, "paid")

    report = await mediator.worker().run_once()

    assert report == RecoveryReport(claimed=1, compensated=1)
    assert ledger == ["act:a", "compensate:a"]
    outcome = await mediator.handle(saga_id).result()
    assert outcome.status is SagaStatus.COMPENSATED
    assert "SagaCancelledError" in str(outcome.error)
    assert "timeout at the shop" in str(outcome.error)


async def test_cancel_wins_over_a_signal_that_arrived_before_it(
    make_mediator: MediatorFactory, wait_between_steps: type[Saga[OrderContext]], ledger: list[str]
) -> None:
    mediator = make_mediator(OrderContext, wait_between_steps)
    saga_id = await waiting_saga(mediator)
    await mediator.signal(saga_id, "paid")
    await mediator.cancel(saga_id)

    assert await mediator.worker().run_once() == RecoveryReport(claimed=1, compensated=1)
    assert ledger == ["act:a", "compensate:a"]


@pytest.mark.parametrize("last_step", [False, True])
async def test_a_runner_elsewhere_compensates_at_its_next_checkpoint(
    storage: MemorySagaStorage,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
    last_step: bool,
) -> None:
    # The cancel is recorded in storage only (as another process's mediator would): no local
    # hook stops the step, so it completes; its checkpoint is refused, and the saga rolls
    # back, that step included.
    gate = Gate()
    after_b = [] if last_step else [make_step("c")]
    saga = order_saga(make_step("a"), gate.step("b", ledger), *after_b)
    mediator = make_mediator(OrderContext, saga)
    async with held_at(gate, mediator) as run:
        await storage.request_cancel(run.saga_id, reason="by the operator")
        gate.release.set()

    saga_id = run.saga_id
    (outcome,) = run.outcomes
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaCancelledError)
    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert record.error is not None and "by the operator" in record.error


async def test_cancel_of_a_finished_saga_is_refused(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    mediator = make_mediator(OrderContext, order_saga(make_step("a")))
    outcome = await mediator.run(OrderContext())
    with pytest.raises(SagaFinishedError, match="has ended already, so it was not cancelled"):
        await mediator.cancel(outcome.saga_id)


async def test_cancel_of_a_compensating_saga_changes_nothing(
    storage: MemorySagaStorage,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    gate = Gate()
    saga = order_saga(gate.step("a", ledger, on="compensate"), make_step("b", act_fails=1))
    mediator = make_mediator(OrderContext, saga)
    async with held_at(gate, mediator) as run:
        writes = storage.write_count
        await mediator.cancel(run.saga_id, reason="too late")
        assert storage.write_count == writes
        gate.release.set()

    saga_id = run.saga_id
    (outcome,) = run.outcomes
    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, ValueError)  # the original cause, not the cancel
    # (b's failed act may have had an effect: it is compensated too); a's compensation, in
    # flight during the cancel, was not cut short
    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert (record.cancel_reason, record.error) == (None, "ValueError: b.act failed")


async def test_the_first_cancel_reason_wins(
    storage: MemorySagaStorage, make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    mediator = make_mediator(OrderContext, order_saga(WaitForSignal("paid"), make_step("b")))
    saga_id = await waiting_saga(mediator)
    await mediator.cancel(saga_id, reason="first")
    await mediator.cancel(saga_id, reason="second")
    assert (await storage.load(saga_id)).cancel_reason == "first"


async def test_cancel_arguments_are_checked(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    mediator = make_mediator(OrderContext, order_saga(make_step("a")))
    with pytest.raises(SagaNotFoundError):
        await mediator.cancel(uuid.uuid4())
    with pytest.raises(SagaUsageError, match=r"reason=\.\.\.\) must be a non-empty string"):
        await mediator.cancel(uuid.uuid4(), reason="")
    with pytest.raises(SagaUsageError, match=r"saga_id must be a uuid\.UUID"):
        await mediator.cancel("nope")  # type: ignore[arg-type]


async def test_cancel_of_a_detached_saga_not_run_yet_compensates_nothing(
    make_step: StepFactory, ledger: list[str]
) -> None:
    mediator = mediator_for(order_saga(make_step("a")), MemorySagaStorage())
    handle = await mediator.start(OrderContext())
    await mediator.cancel(handle.saga_id, reason="never mind")
    await mediator.worker().run_once()

    outcome = await handle.result()
    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger == []
    assert "never mind" in str(outcome.error)


async def test_cancel_wakes_the_mediators_worker_at_once(
    wait_between_steps: type[Saga[OrderContext]], ledger: list[str]
) -> None:
    mediator = mediator_for(wait_between_steps, MemorySagaStorage())
    saga_id = await waiting_saga(mediator)
    async with anyio.create_task_group() as tg:
        await tg.start(mediator.worker(poll_interval=60).run)
        with anyio.fail_after(1):
            await mediator.cancel(saga_id)
            outcome = await mediator.handle(saga_id).result(poll_interval=0.01)
        tg.cancel_scope.cancel()
    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger == ["act:a", "compensate:a"]
