"""A process that runs under a fixed owner name takes back the sagas it held when it died at
once: their leases are its own. ``bootstrap(owner=...)`` names the process for the runners
built after it; ``claim(force=True)`` lets an operator take over from a runner they know is
dead."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryReport,
    RecoveryWorker,
    Saga,
    SagaContext,
    SagaLeaseHeldError,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    bootstrap,
    codec_for,
    recover_saga,
)
from saga_core._runtime.owner import default_owner, is_made_up_here
from saga_core.storage import NewSaga

pytestmark = pytest.mark.anyio

StepClass = type[SagaStepHandler[Any, Any]]

OWNER = "orders-7"
#: Longer than any test: only the owner's own claims (or a forced one) can take these sagas.
LONG_LEASE = 600.0


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


TEXT = codec_for(OrderContext).encode(OrderContext())


def saga_of(make_step: Callable[..., StepClass]) -> type[Saga[OrderContext]]:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("reserve"), make_step("charge")]

    return OrderSaga


def worker(saga: type[Saga[Any]], storage: MemorySagaStorage, **options: Any) -> RecoveryWorker:
    sagas = SagaMap()
    sagas.bind(OrderContext, saga)
    return RecoveryWorker(sagas, storage, poll_interval=0.001, **options)


async def left_by_a_dead_process(
    storage: MemorySagaStorage, saga: type[Saga[Any]], owner: str = OWNER
) -> uuid.UUID:
    """A saga as a process named ``owner`` left it when it was killed inside its first step:
    RUNNING, its lease live for 10 minutes."""
    definition = saga.definition()
    saga_id = uuid.uuid4()
    first = definition.next_step_ids[0]
    await storage.create(
        NewSaga(saga_id, definition.name, TEXT, owner, LONG_LEASE, next_step=first)
    )
    return saga_id


async def test_a_worker_under_the_dead_process_name_takes_back_its_sagas_at_once(
    make_step: Callable[..., StepClass],
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    saga = saga_of(make_step)
    mine = [await left_by_a_dead_process(storage, saga) for _ in range(3)]
    theirs = await left_by_a_dead_process(storage, saga, owner="orders-8")

    assert await worker(saga, storage).run_once() == RecoveryReport()  # leases are live
    report = await worker(saga, storage, owner=OWNER, batch_size=2).recover_own()

    assert report == RecoveryReport(claimed=3, completed=3)
    for saga_id in mine:
        record = await storage.load(saga_id)
        assert (record.status, record.lease_owner, record.attempts) == (
            SagaStatus.COMPLETED,
            None,
            1,
        )
    assert (await storage.load(theirs)).status is SagaStatus.RUNNING  # not its name
    assert ledger.count("act:reserve") == 3


async def test_run_takes_back_the_sagas_leased_to_its_name_when_it_starts(
    make_step: Callable[..., StepClass],
    storage: MemorySagaStorage,
    wait_until: Callable[[Callable[[], Any]], Any],
) -> None:
    saga = saga_of(make_step)
    saga_id = await left_by_a_dead_process(storage, saga)

    async def completed() -> bool:
        return (await storage.load(saga_id)).status is SagaStatus.COMPLETED

    with anyio.fail_after(20):  # a safety net: the worker stops when cancelled
        async with anyio.create_task_group() as task_group:
            await task_group.start(worker(saga, storage, owner=OWNER).run)
            await wait_until(completed)
            task_group.cancel_scope.cancel()


async def test_sagas_this_process_started_since_are_not_taken_back(
    make_step: Callable[..., StepClass],
    make_mediator: Callable[..., SagaMediator],
    storage: MemorySagaStorage,
) -> None:
    saga = saga_of(make_step)
    release = anyio.Event()
    entered = anyio.Event()

    class Slow(SagaStepHandler[OrderContext, None]):
        name = "reserve"

        async def act(self, context: OrderContext) -> None:
            entered.set()
            await release.wait()

    class SlowSaga(Saga[OrderContext]):
        name = saga.definition().name
        steps = [Slow]

    mediator = make_mediator(OrderContext, SlowSaga, owner=OWNER, lease_seconds=LONG_LEASE)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(mediator.run, OrderContext())
        await entered.wait()
        # Leased to the same name, but run by this process: left to its runner.
        report = await worker(SlowSaga, storage, owner=OWNER).recover_own()
        release.set()

    assert report == RecoveryReport()
    [record] = await storage.list_sagas()
    assert (record.status, record.attempts) == (SagaStatus.COMPLETED, 0)


async def test_bootstrap_names_the_process_for_recover_saga_and_workers(
    make_step: Callable[..., StepClass], storage: MemorySagaStorage
) -> None:
    saga = saga_of(make_step)
    saga_id = await left_by_a_dead_process(storage, saga)
    with pytest.raises(SagaLeaseHeldError):
        await recover_saga(saga=saga, saga_id=saga_id, storage=storage)

    async def restarted_process() -> None:
        bootstrap(sagas_mapper=lambda m: m.bind(OrderContext, saga), owner=OWNER)
        assert worker(saga, storage).owner == OWNER
        # The seed's recovery call, as written: no owner, the process's name is used.
        outcome = await recover_saga(
            saga=saga,
            saga_id=saga_id,
            context_builder=OrderContext,
            container=None,
            storage=storage,
        )
        assert outcome.status is SagaStatus.COMPLETED

    # In a task of its own, so the name stays in that task's context.
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(restarted_process)
    assert worker(saga, storage).owner != OWNER


async def test_a_forced_recovery_takes_over_a_live_lease(
    make_step: Callable[..., StepClass], storage: MemorySagaStorage, ledger: list[str]
) -> None:
    saga = saga_of(make_step)
    saga_id = await left_by_a_dead_process(storage, saga, owner="hung-process")
    with pytest.raises(SagaLeaseHeldError):
        await worker(saga, storage).recover(saga_id)

    outcome = await worker(saga, storage, owner="operator").recover(saga_id, force=True)

    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:reserve", "act:charge"]
    assert (await storage.load(saga_id)).attempts == 1


@pytest.mark.parametrize("owner", ["", 7])
async def test_an_owner_that_is_not_a_name_is_refused(owner: object) -> None:
    with pytest.raises(SagaUsageError, match="owner must be a non-empty string"):
        bootstrap(sagas_mapper=SagaMap(), owner=owner)  # type: ignore[arg-type]


class ListingRecorder(MemorySagaStorage):
    """Memory storage that records the lease owners its listings were filtered by, and tells
    when the first claim of due work came (a worker's loop is then running)."""

    def __init__(self) -> None:
        super().__init__()
        self.listed_owners: list[str | None] = []
        self.claimed = anyio.Event()

    async def list_sagas(self, **filters: Any) -> list[Any]:
        self.listed_owners.append(filters.get("lease_owner"))
        return await super().list_sagas(**filters)

    async def claim_recoverable(self, **options: Any) -> list[Any]:
        self.claimed.set()
        return await super().claim_recoverable(**options)


@pytest.mark.parametrize(
    ("owner", "listed"), [(None, []), (OWNER, [OWNER])], ids=["made-up name", "given name"]
)
async def test_run_lists_the_owner_leases_only_under_a_name_given_to_it(
    make_step: Callable[..., StepClass], owner: str | None, listed: list[str]
) -> None:
    # A made-up name is new with this process: no lease of a dead process can name it, so
    # the worker skips the listing (on Redis, it reads every saga).
    storage = ListingRecorder()
    with anyio.fail_after(20):  # a safety net: the worker stops when cancelled
        async with anyio.create_task_group() as task_group:
            await task_group.start(worker(saga_of(make_step), storage, owner=owner).run)
            await storage.claimed.wait()
            task_group.cancel_scope.cancel()
    assert storage.listed_owners == listed


def test_only_names_made_up_in_this_process_are_known_as_made_up_here() -> None:
    made_up = default_owner()
    host, pid, suffix = made_up.split(":")
    token, number = suffix.split("-")
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert is_made_up_here(made_up)
    assert default_owner() != made_up
    assert not is_made_up_here(OWNER)
    assert not is_made_up_here(f"{host}:{pid}:{token}-{number}x")
    assert not is_made_up_here(f"{host}:{int(pid) + 1}:{token}-{number}")
    other_token = "0" * 8 if token != "0" * 8 else "1" * 8
    assert not is_made_up_here(f"{host}:{pid}:{other_token}-{number}")
