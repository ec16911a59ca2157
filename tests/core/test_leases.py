"""``LeaseKeeper`` and ``async with mediator:``: a running saga renews its lease, so a step longer
than the lease is not taken over by recovery; a runner whose lease was taken over
is fenced off (invariant 3)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryWorker,
    Saga,
    SagaConcurrencyError,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    StorageUnavailableError,
    codec_for,
    make_step_resolver,
)
from saga_core._engine.executor import SagaRun
from saga_core._engine.hooks import Hooks
from saga_core._runtime.leases import LeaseKeeper

pytestmark = pytest.mark.anyio

StepClass = type[SagaStepHandler[Any, Any]]
StepFactory = Callable[..., StepClass]
MediatorFactory = Callable[..., SagaMediator]
WaitUntil = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]

#: A short lease on the storage's fake clock: the keeper renews it every 0.01 s (real time).
LEASE = 0.03


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


class KeeperStorage(MemorySagaStorage):
    """Memory storage on the fake clock that counts lease renewals and can fail some."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.renewals: list[uuid.UUID] = []
        """Saga ids of every renew_lease call, failed ones included."""
        self.failing_renewals = 0
        """How many of the next renew_lease calls raise StorageUnavailableError."""

    async def renew_lease(self, saga_id: uuid.UUID, *, owner: str, lease_seconds: float) -> None:
        self.renewals.append(saga_id)
        if self.failing_renewals:
            self.failing_renewals -= 1
            raise StorageUnavailableError("connection reset")
        await super().renew_lease(saga_id, owner=owner, lease_seconds=lease_seconds)


@pytest.fixture
def keeper_storage(fake_clock: Callable[[], float]) -> KeeperStorage:
    return KeeperStorage(fake_clock)


def at(seconds: float) -> datetime:
    """The aware datetime a storage reports for its clock reading ``seconds``."""
    return datetime.fromtimestamp(seconds, timezone.utc)


async def start_run(
    storage: MemorySagaStorage, saga: type[Saga[Any]], *, owner: str = "runner"
) -> SagaRun:
    """Store a new saga leased to ``owner`` and return its runner (no step run yet)."""
    return await SagaRun.start(
        definition=saga.definition(),
        saga_id=uuid.uuid4(),
        context=OrderContext(),
        codec=codec_for(OrderContext),
        storage=storage,
        resolver=make_step_resolver(None),
        hooks=Hooks([]),
        owner=owner,
        lease_seconds=LEASE,
    )


def worker_for(saga: type[Saga[Any]], storage: MemorySagaStorage) -> RecoveryWorker:
    sagas = SagaMap()
    sagas.bind(OrderContext, saga)
    return RecoveryWorker(sagas, storage, owner="worker", poll_interval=0.001, lease_seconds=30.0)


# --- LeaseKeeper --------------------------------------------------------------------------------


async def test_the_keeper_renews_every_held_lease_every_third_of_a_lease(
    make_step: StepFactory,
    keeper_storage: KeeperStorage,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    wait_until: WaitUntil,
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    storage = keeper_storage
    runs = [await start_run(storage, OrderSaga) for _ in range(2)]
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    assert keeper.interval == pytest.approx(LEASE / 3)
    for run in runs:
        keeper.hold(run)

    async def renewed() -> bool:
        records = [await storage.load(run.saga_id) for run in runs]
        return all(r.lease_expires_at == at(fake_clock() + LEASE) for r in records)

    async with anyio.create_task_group() as tg:
        tg.start_soon(keeper.run)
        for _ in range(6):  # 0.12 s of storage time: four leases' worth
            advance_clock(LEASE * 2 / 3)
            await wait_until(renewed)
            assert await storage.list_recoverable() == []
        tg.cancel_scope.cancel()

    for run in runs:
        record = await storage.load(run.saga_id)
        assert (record.lease_owner, record.version) == ("runner", 1)  # nothing else changed


@pytest.mark.parametrize("keeper_runs", [True, False], ids=["keeper", "no-keeper"])
async def test_a_step_longer_than_the_lease_is_not_recoverable_while_the_keeper_runs(
    keeper_runs: bool,
    keeper_storage: KeeperStorage,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    wait_until: WaitUntil,
) -> None:
    storage = keeper_storage
    listed: list[bool] = []

    class Long(SagaStepHandler[OrderContext, None]):
        name = "long"

        async def act(self, context: OrderContext) -> None:
            async def renewed() -> bool:
                record = await storage.load(self.saga_id)
                return record.lease_expires_at == at(fake_clock() + LEASE)

            for _ in range(4):  # the step lasts 0.08 s of storage time: more than a lease
                advance_clock(LEASE * 2 / 3)
                if keeper_runs:
                    await wait_until(renewed)
                listed.append(bool(await storage.list_recoverable()))

    class OrderSaga(Saga[OrderContext]):
        steps = [Long]

    run = await start_run(storage, OrderSaga)
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    keeper.hold(run)
    async with anyio.create_task_group() as tg:
        if keeper_runs:
            tg.start_soon(keeper.run)
        await run.run_to_end()
        tg.cancel_scope.cancel()

    if keeper_runs:
        assert listed == [False, False, False, False]
    else:  # the lease expires halfway through the step
        assert listed == [False, True, True, True]
    assert run.status is SagaStatus.COMPLETED


async def test_a_dropped_run_is_not_renewed(
    make_step: StepFactory, keeper_storage: KeeperStorage, advance_clock: Callable[[float], None]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    storage = keeper_storage
    kept, dropped = await start_run(storage, OrderSaga), await start_run(storage, OrderSaga)
    expiry = (await storage.load(dropped.saga_id)).lease_expires_at
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    keeper.hold(kept)
    keeper.hold(dropped)
    keeper.drop(dropped)
    advance_clock(LEASE / 2)

    await keeper.renew_all()

    assert storage.renewals == [kept.saga_id]
    assert (await storage.load(dropped.saga_id)).lease_expires_at == expiry


async def test_a_finished_saga_is_dropped_by_the_keeper(
    make_step: StepFactory, keeper_storage: KeeperStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    storage = keeper_storage
    run = await start_run(storage, OrderSaga)
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    keeper.hold(run)
    await run.run_to_end()  # COMPLETED, still held (its runner forgot to drop it)

    await keeper.renew_all()  # the run says it is finished: dropped without a renewal
    await keeper.renew_all()

    assert storage.renewals == []
    assert not run.fenced
    record = await storage.load(run.saga_id)
    assert (record.status, record.lease_owner) == (SagaStatus.COMPLETED, None)


async def test_a_storage_error_during_renewal_is_logged_and_retried_next_round(
    make_step: StepFactory,
    keeper_storage: KeeperStorage,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    caplog.set_level(logging.WARNING, logger="saga_core.leases")
    storage = keeper_storage
    run = await start_run(storage, OrderSaga)
    expiry = (await storage.load(run.saga_id)).lease_expires_at
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    keeper.hold(run)
    storage.failing_renewals = 1
    advance_clock(LEASE / 3)

    await keeper.renew_all()  # does not raise

    assert (await storage.load(run.saga_id)).lease_expires_at == expiry
    assert any(
        "could not renew the lease" in r.getMessage() and str(run.saga_id) in r.getMessage()
        for r in caplog.records
    )
    assert not run.fenced

    advance_clock(LEASE / 3)
    await keeper.renew_all()  # still held: the next round renews it

    assert storage.renewals == [run.saga_id, run.saga_id]
    assert (await storage.load(run.saga_id)).lease_expires_at == at(fake_clock() + LEASE)
    assert not run.fenced


async def test_a_renewal_that_finds_the_lease_taken_over_fences_the_run(
    make_step: StepFactory,
    keeper_storage: KeeperStorage,
    advance_clock: Callable[[float], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    caplog.set_level(logging.WARNING, logger="saga_core.leases")
    storage = keeper_storage
    run = await start_run(storage, OrderSaga)
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    keeper.hold(run)
    advance_clock(LEASE)  # the runner froze past its lease ...
    taken = await storage.claim(run.saga_id, owner="successor", lease_seconds=30.0)

    await keeper.renew_all()  # ... and its keeper learns it lost the saga
    await keeper.renew_all()  # a fenced run is dropped: no second renewal

    assert run.fenced
    assert storage.renewals == [run.saga_id]
    assert any("taken over by another runner" in r.getMessage() for r in caplog.records)
    writes = storage.write_count
    with pytest.raises(SagaConcurrencyError):
        await run.run_to_end()  # its checkpoint is refused
    assert storage.write_count == writes
    assert await storage.load(run.saga_id) == taken


async def test_a_fenced_run_starts_no_further_step(
    make_step: StepFactory,
    keeper_storage: KeeperStorage,
    advance_clock: Callable[[float], None],
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    storage = keeper_storage
    run = await start_run(storage, OrderSaga)
    keeper = LeaseKeeper(storage, owner="runner", lease_seconds=LEASE)
    keeper.hold(run)
    advance_clock(LEASE)
    await storage.claim(run.saga_id, owner="successor", lease_seconds=30.0)
    await keeper.renew_all()
    assert run.fenced

    with pytest.raises(SagaConcurrencyError):
        await run.run_to_end()

    assert ledger == []


# --- the mediator as an async context manager ---------------------------------------------------


async def test_inside_async_with_mediator_a_long_step_is_never_taken_over_by_a_worker(
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    wait_until: WaitUntil,
) -> None:
    acts: list[uuid.UUID] = []

    class Long(SagaStepHandler[OrderContext, None]):
        name = "long"

        async def act(self, context: OrderContext) -> None:
            acts.append(self.saga_id)

            async def renewed() -> bool:
                record = await storage.load(self.saga_id)
                return record.lease_expires_at == at(fake_clock() + LEASE)

            for _ in range(6):  # 0.12 s of storage time: four leases
                advance_clock(LEASE * 2 / 3)
                await anyio.sleep(0.002)  # the worker polls meanwhile
                await wait_until(renewed)

    class OrderSaga(Saga[OrderContext]):
        steps = [Long]

    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    worker = worker_for(OrderSaga, storage)
    saga_id = uuid.uuid4()
    async with mediator, anyio.create_task_group() as tg:
        await tg.start(worker.run)
        async for _ in mediator.stream(OrderContext(), saga_id=saga_id):
            pass
        tg.cancel_scope.cancel()

    assert acts == [saga_id]
    record = await storage.load(saga_id)
    assert (record.status, record.attempts) == (SagaStatus.COMPLETED, 0)  # never claimed


async def test_outside_async_with_a_long_step_is_taken_over_as_before(
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    advance_clock: Callable[[float], None],
    wait_until: WaitUntil,
) -> None:
    acts: list[uuid.UUID] = []

    class Long(SagaStepHandler[OrderContext, None]):
        name = "long"

        async def act(self, context: OrderContext) -> None:
            acts.append(self.saga_id)
            if len(acts) == 1:  # the live run: it outlives its lease, nobody renews it

                async def claimed() -> bool:
                    return (await storage.load(self.saga_id)).attempts == 1

                advance_clock(LEASE * 2)
                await wait_until(claimed)

    class OrderSaga(Saga[OrderContext]):
        steps = [Long]

    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    worker = worker_for(OrderSaga, storage)
    saga_id = uuid.uuid4()

    async def completed() -> bool:
        return (await storage.load(saga_id)).status is SagaStatus.COMPLETED

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with pytest.raises(SagaConcurrencyError):  # the live run is fenced off
            await mediator.run(OrderContext(), saga_id=saga_id)
        await wait_until(completed)
        tg.cancel_scope.cancel()

    assert acts == [saga_id, saga_id]  # the old behaviour: the step ran twice


async def test_mediator_run_inside_async_with_renews_the_lease_too(
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    wait_until: WaitUntil,
) -> None:
    class Long(SagaStepHandler[OrderContext, None]):
        name = "long"

        async def act(self, context: OrderContext) -> None:
            async def renewed() -> bool:
                record = await storage.load(self.saga_id)
                return record.lease_expires_at == at(fake_clock() + LEASE)

            for _ in range(3):
                advance_clock(LEASE * 2 / 3)
                await wait_until(renewed)
                assert await storage.list_recoverable() == []

    class OrderSaga(Saga[OrderContext]):
        steps = [Long]

    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    async with mediator as entered:
        assert entered is mediator
        outcome = await mediator.run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED


async def test_entering_a_mediator_twice_raises_and_it_can_be_entered_again_after_exit(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    mediator = make_mediator(OrderContext, OrderSaga)
    async with mediator:
        with pytest.raises(SagaUsageError, match="already entered"):
            async with mediator:
                pass
        assert (await mediator.run(OrderContext())).status is SagaStatus.COMPLETED

    async with mediator:
        assert (await mediator.run(OrderContext())).status is SagaStatus.COMPLETED
