"""Detached runs: ``mediator.start`` stores a saga for a worker and returns a handle at once;
``handle.result()`` and ``watch`` work from any process; a worker that shuts down hands a
claimed WAITING saga back exactly as stored; a suspend resets the saga's attempts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    Saga,
    SagaAlreadyExistsError,
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaEvent,
    SagaHandle,
    SagaNotFoundError,
    SagaOutcome,
    SagaStatus,
    SagaUsageError,
    Sleep,
    SleepUntil,
    StepDirection,
    StepEvent,
    WaitForSignal,
)

from ._wait_sagas import (
    ONE_CALL,
    Gate,
    OrderContext,
    Payment,
    StepFactory,
    add,
    mediator_for,
    order_saga,
)

pytestmark = pytest.mark.anyio


async def poll_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll the storage until ``predicate`` holds (bounded by the caller's ``fail_after``)."""
    while True:
        if await predicate():
            return
        await anyio.sleep(0.005)


async def waiting_for(handle: SagaHandle[Any], name: str) -> None:
    async def waits() -> bool:
        return (await handle.record()).waiting_for == name

    await poll_until(waits)


async def outcome_of_one_worker_pass(saga: type[Saga[Any]]) -> SagaOutcome[Any]:
    """Start ``saga`` detached, let a worker take it once, and read its result by handle."""
    mediator = mediator_for(saga, MemorySagaStorage())
    handle = await mediator.start(OrderContext())
    await mediator.worker().run_once()
    with anyio.fail_after(1):
        return await handle.result()


# --- start, worker, result -------------------------------------------------------------------


async def test_start_stores_the_saga_for_a_worker_and_runs_nothing_in_the_caller(
    make_step: StepFactory, ledger: list[str]
) -> None:
    saga = order_saga(make_step("a", change=add(1)), make_step("b", change=add(10)))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    before = datetime.now(timezone.utc)
    handle = await mediator.start(OrderContext())

    assert ledger == []
    assert storage.write_count == 1  # the create, nothing else
    record = await handle.record()
    assert (record.status, record.cursor, record.lease_owner, record.next_step) == (
        SagaStatus.WAITING,
        0,
        None,
        "a",
    )
    assert record.wake_at is not None and before <= record.wake_at <= datetime.now(timezone.utc)
    assert await handle.status() is SagaStatus.WAITING
    assert [r.saga_id for r in await storage.list_recoverable()] == [handle.saga_id]

    async with anyio.create_task_group() as tg:
        await tg.start(mediator.worker(poll_interval=0.01).run)
        with anyio.fail_after(1):
            outcome = await handle.result(poll_interval=0.01)
        tg.cancel_scope.cancel()

    assert (outcome.saga_id, outcome.status, outcome.error) == (
        handle.saga_id,
        SagaStatus.COMPLETED,
        None,
    )
    assert outcome.context.total == 11
    assert ledger == ["act:a", "act:b"]


async def test_a_detached_run_costs_the_create_the_claim_and_a_write_per_step(
    make_step: StepFactory,
) -> None:
    saga = order_saga(make_step("a"), make_step("b"), make_step("c"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    handle = await mediator.start(OrderContext())
    await mediator.worker().run_once()
    assert (await handle.status()) is SagaStatus.COMPLETED
    assert storage.write_count == 1 + 1 + 3


async def test_result_reports_a_compensated_saga_with_its_error(
    make_step: StepFactory, ledger: list[str]
) -> None:
    saga = order_saga(make_step("a"), make_step("b", act_fails=1))
    outcome = await outcome_of_one_worker_pass(saga)

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaCompensatedError)
    assert "ValueError: b.act failed" in str(outcome.error)
    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]


async def test_result_reports_a_failed_saga(make_step: StepFactory) -> None:
    saga = order_saga(
        make_step("a", compensate_fails=1, compensation_retry=ONE_CALL),
        make_step("b", act_fails=1, failed_act_leaves_no_effect=True),
    )
    outcome = await outcome_of_one_worker_pass(saga)

    assert outcome.status is SagaStatus.FAILED
    assert isinstance(outcome.error, SagaCompensationFailedError)
    assert "compensation of a failed" in str(outcome.error)


async def test_another_process_can_wait_for_the_result_by_id(make_step: StepFactory) -> None:
    saga = order_saga(make_step("a", change=add(5)), WaitForSignal("paid", into="payment"))
    storage = MemorySagaStorage()
    starter, other = mediator_for(saga, storage), mediator_for(saga, storage)
    handle = await starter.start(OrderContext(order_id="o-9"))
    outcomes: list[Any] = []
    ended = anyio.Event()

    async def wait_elsewhere() -> None:
        outcomes.append(await other.handle(handle.saga_id).result(poll_interval=0.01))
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_elsewhere)
        await tg.start(other.worker(poll_interval=0.01).run)
        with anyio.fail_after(1):
            await waiting_for(handle, "paid")
            assert outcomes == []  # WAITING is not an end
            await starter.signal(handle.saga_id, "paid", {"amount": 42})
            await ended.wait()
        tg.cancel_scope.cancel()

    (outcome,) = outcomes
    assert outcome.status is SagaStatus.COMPLETED
    assert (outcome.context.order_id, outcome.context.total, outcome.context.payment) == (
        "o-9",
        5,
        Payment(amount=42),
    )


async def test_start_refuses_an_id_that_exists_and_handle_an_id_that_is_not_a_uuid(
    make_step: StepFactory,
) -> None:
    saga = order_saga(make_step("a"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = uuid.uuid4()
    await mediator.start(OrderContext(), saga_id)
    with pytest.raises(SagaAlreadyExistsError):
        await mediator.start(OrderContext(), saga_id)
    assert storage.write_count == 1
    with pytest.raises(SagaUsageError):
        mediator.handle(str(saga_id))  # type: ignore[arg-type]
    with pytest.raises(SagaNotFoundError):
        await mediator.handle(uuid.uuid4()).result()


# --- waits at the first node of a detached saga ----------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        Sleep(timedelta(hours=1)),
        SleepUntil(lambda context: datetime.now(timezone.utc) + timedelta(hours=1)),
        WaitForSignal("paid", timeout=timedelta(hours=1)),
    ],
    ids=["sleep", "sleep-until", "signal-with-timeout"],
)
async def test_a_detached_saga_that_starts_with_a_wait_waits_its_full_time(
    make_step: StepFactory, ledger: list[str], first: Any
) -> None:
    # A saga that starts with a sleep is created suspended at it; one that starts with a signal
    # wait is due at once, and its worker starts the wait then: neither takes its creation
    # instant for the wait's timer.
    saga = order_saga(first, make_step("b"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    handle = await mediator.start(OrderContext())
    report = await mediator.worker().run_once()

    if isinstance(first, WaitForSignal):
        assert (report.claimed, report.suspended) == (1, 1)
    else:
        assert report.claimed == 0
        assert storage.write_count == 1  # the create is the suspend
    assert ledger == []
    record = await handle.record()
    assert record.status is SagaStatus.WAITING
    assert record.wake_at is not None
    assert record.wake_at > datetime.now(timezone.utc) + timedelta(minutes=59)
    assert await storage.list_recoverable() == []


# --- watch -----------------------------------------------------------------------------------


async def test_watch_yields_every_event_once_in_order_and_ends_with_the_saga(
    make_step: StepFactory,
) -> None:
    saga = order_saga(
        make_step("a"),
        WaitForSignal("paid"),
        make_step("b", act_fails=1),
    )
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    handle = await mediator.start(OrderContext())
    seen: list[SagaEvent] = []
    watched = anyio.Event()

    async def watch() -> None:
        seen.extend([event async for event in handle.watch(poll_interval=0.01)])
        watched.set()  # it ended by itself, once the saga had ended

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await tg.start(mediator.worker(poll_interval=0.01).run)
            await waiting_for(handle, "paid")
            await mediator.signal(handle.saga_id, "paid")
            await watched.wait()
            tg.cancel_scope.cancel()

    journal = await storage.history(handle.saga_id)
    assert [e.position for e in seen] == list(range(1, len(journal) + 1))
    assert [SagaEvent.of(i + 1, entry) for i, entry in enumerate(journal)] == seen
    assert (seen[-1].event, seen[-1].detail) == (StepEvent.FINISHED, "compensated")
    assert (seen[-2].step_id, seen[-2].direction) == ("a", StepDirection.COMPENSATE)
    claims = [event for event in seen if event.event is StepEvent.CLAIMED]
    assert claims and all(event.detail for event in claims)  # who claimed it


async def test_watch_after_a_position_resumes_without_gaps_or_duplicates(
    make_step: StepFactory,
) -> None:
    saga = order_saga(make_step("a"), WaitForSignal("paid"), make_step("b"), make_step("c"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = (await mediator.run(OrderContext())).saga_id

    first: list[SagaEvent] = []
    with anyio.move_on_after(0.1):  # WAITING has not ended: the watch keeps waiting
        async for event in mediator.watch(saga_id, poll_interval=0.01):
            first.append(event)  # noqa: PERF401 - kept as they come: the loop is cut short
    assert [(e.step_id, e.event) for e in first][-1] == ("signal:paid", StepEvent.STARTED)

    await mediator.signal(saga_id, "paid")
    await mediator.worker().run_once()
    with anyio.fail_after(1):
        rest = [e async for e in mediator.watch(saga_id, after=first[-1].position)]

    positions = [e.position for e in first + rest]
    assert positions == list(range(1, len(positions) + 1))
    assert len(positions) == len(await storage.history(saga_id))
    with anyio.fail_after(1):
        assert [e async for e in mediator.watch(saga_id, after=len(positions))] == []


@pytest.mark.parametrize("after", [-1, 1.5, True, "3"])
async def test_watch_refuses_a_bad_position(make_step: StepFactory, after: Any) -> None:
    saga = order_saga(make_step("a"))
    mediator = mediator_for(saga, MemorySagaStorage())
    saga_id = (await mediator.run(OrderContext())).saga_id
    with pytest.raises(SagaUsageError, match=r"watch\(after=\.\.\.\)"):
        async for _ in mediator.watch(saga_id, after=after):
            pass


# --- shutdown hand-back and attempts ---------------------------------------------------------


async def test_a_worker_shutting_down_hands_a_claimed_waiting_saga_back_as_stored(
    ledger: list[str],
) -> None:
    gate = Gate()

    saga = order_saga(WaitForSignal("paid", into="payment"), gate.step("b", ledger))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = (await mediator.run(OrderContext())).saga_id
    await mediator.signal(saga_id, "paid", {"amount": 7}, signal_id="p")
    due = await storage.load(saga_id)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            await tg.start(mediator.worker(poll_interval=0.01).run)
            await gate.started.wait()  # the signal is taken, b runs
            tg.cancel_scope.cancel()  # shutdown

    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.waiting_for, record.wake_at) == (
        SagaStatus.WAITING,
        0,
        "paid",
        due.wake_at,
    )
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert [s.signal_id for s in record.signals] == ["p"]  # still pending
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]  # still due

    gate.release.set()
    await mediator.worker().run_once()
    record = await storage.load(saga_id)
    assert (record.status, record.signals) == (SagaStatus.COMPLETED, ())
    assert mediator.stored_context(record).payment == Payment(amount=7)
    assert ledger == ["act:b", "act:b"]


async def test_a_worker_shutting_down_hands_a_detached_saga_back_due(
    make_step: StepFactory, ledger: list[str]
) -> None:
    gate = Gate()

    saga = order_saga(gate.step("a", ledger), make_step("b"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    handle = await mediator.start(OrderContext())
    created = await handle.record()

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            await tg.start(mediator.worker(poll_interval=0.01).run)
            await gate.started.wait()
            tg.cancel_scope.cancel()

    record = await handle.record()
    assert (record.status, record.cursor, record.wake_at, record.lease_owner) == (
        SagaStatus.WAITING,
        0,
        created.wake_at,
        None,
    )
    gate.release.set()
    await mediator.worker().run_once()
    assert await handle.status() is SagaStatus.COMPLETED


async def test_a_suspend_resets_the_attempts_so_many_waits_are_never_parked(
    make_step: StepFactory,
) -> None:
    waits = 12
    max_attempts = 10

    saga = order_saga(*(Sleep(0.005) for _ in range(waits)), make_step("a"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    handle = await mediator.start(OrderContext())
    worker = mediator.worker(max_attempts=max_attempts)
    claims = 0
    with anyio.fail_after(2):
        while not (record := await handle.record()).status.is_terminal and not record.parked:
            claims += (await worker.run_once()).claimed
            await anyio.sleep(0.005)

    assert (record.status, record.parked) == (SagaStatus.COMPLETED, False)
    assert claims > max_attempts  # each resume was a claim; none counted against it
