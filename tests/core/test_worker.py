"""``RecoveryWorker``: claims stalled sagas in batches and finishes them, with
backoff, a dead-letter state after ``max_attempts``, graceful shutdown (invariant 5) and
fencing against a runner whose lease was taken over (invariant 3)."""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryReport,
    RecoveryWorker,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    StepDirection,
    StepEvent,
    StorageUnavailableError,
    codec_for,
)
from saga_core.storage import Checkpoint, NewSaga

pytestmark = pytest.mark.anyio

StepClass = type[SagaStepHandler[Any, Any]]
StepFactory = Callable[..., StepClass]
MediatorFactory = Callable[..., SagaMediator]
StalledSagaFactory = Callable[..., Awaitable[uuid.UUID]]
WaitUntil = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]

#: The lease a worker's claim takes, in seconds of the storage's (fake) clock.
LEASE = 30.0
#: Backoff without jitter, so that the pause is exact: 10 s, then 20 s, 40 s ...
BACKOFF = RetryPolicy(attempts=1, initial_delay=10.0, multiplier=2.0, max_delay=1000.0, jitter=0.0)
#: One call, no retry (a compensation's default retries sleep for real).
ONE_CALL = RetryPolicy(attempts=1, initial_delay=0.0)


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


TEXT = codec_for(OrderContext).encode(OrderContext())


def worker_for(saga: type[Saga[Any]], storage: MemorySagaStorage, **options: Any) -> RecoveryWorker:
    """A worker that knows ``saga`` (bound to OrderContext), polling quickly, on ``storage``."""
    sagas = SagaMap()
    sagas.bind(OrderContext, saga)
    options.setdefault("poll_interval", 0.001)
    options.setdefault("lease_seconds", LEASE)
    options.setdefault("backoff", BACKOFF)
    return RecoveryWorker(sagas, storage, **options)


def at(seconds: float) -> datetime:
    """The aware datetime a storage reports for its clock reading ``seconds``."""
    return datetime.fromtimestamp(seconds, timezone.utc)


class Pause:
    """Makes one call of a step wait: ``started`` is set when it begins, and it returns once
    ``release`` is set (or never, until cancelled)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    async def hold(self) -> None:
        self.started.set()
        await self.release.wait()


def pausing_step(
    step_name: str, ledger: list[str], pause: Pause, *, direction: str = "act", call: int = 1
) -> StepClass:
    """A step whose ``call``-th ``act`` (or ``compensate``) waits on ``pause``; every call
    appends ``"<direction>:<step_name>"`` to ``ledger``."""
    calls = {"act": 0, "compensate": 0}

    class Pausing(SagaStepHandler[OrderContext, None]):
        name = step_name
        compensation_retry = ONE_CALL

        async def act(self, context: OrderContext) -> None:
            calls["act"] += 1
            ledger.append(f"act:{step_name}")
            if direction == "act" and calls["act"] == call:
                await pause.hold()

        async def compensate(self, context: OrderContext) -> None:
            calls["compensate"] += 1
            ledger.append(f"compensate:{step_name}")
            if direction == "compensate" and calls["compensate"] == call:
                await pause.hold()

    return Pausing


async def recoverable_ids(storage: MemorySagaStorage) -> list[uuid.UUID]:
    return [record.saga_id for record in await storage.list_recoverable()]


# --- one round: what run_once claims and how each saga ends -------------------------------------


async def test_run_once_completes_a_saga_a_cancelled_run_left_running(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    pause = Pause()

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), pausing_step("b", ledger, pause), make_step("c")]

    saga_id = uuid.uuid4()
    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    async with anyio.create_task_group() as tg:
        tg.start_soon(mediator.run, OrderContext(), saga_id)
        await pause.started.wait()
        tg.cancel_scope.cancel()
    left = await storage.load(saga_id)
    assert (left.status, left.cursor, left.lease_owner) == (SagaStatus.RUNNING, 1, None)

    worker = worker_for(OrderSaga, storage)
    report = await worker.run_once()

    assert report == RecoveryReport(claimed=1, completed=1)
    assert ledger == ["act:a", "act:b", "act:b", "act:c"]  # b was in flight: it runs again
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.lease_owner) == (SagaStatus.COMPLETED, 3, None)
    assert record.attempts == 1


async def test_run_once_finishes_the_compensation_of_a_compensating_saga(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    saga_id = await stalled_saga(
        OrderSaga,
        TEXT,
        status=SagaStatus.COMPENSATING,
        cursor=1,
        applied=("a", "b"),
        error="ValueError: b.act failed",
    )

    report = await worker_for(OrderSaga, storage).run_once()

    assert report == RecoveryReport(claimed=1, compensated=1)
    assert ledger == ["compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert (record.status, record.applied) == (SagaStatus.COMPENSATED, ())
    assert record.error == "ValueError: b.act failed"
    assert record.lease_owner is None


async def test_run_once_retries_a_failed_saga_and_compensates_it_when_compensation_now_works(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    saga_id = await stalled_saga(
        OrderSaga,
        TEXT,
        status=SagaStatus.FAILED,
        cursor=1,
        applied=("a",),
        error="ValueError: b.act failed\ncompensation of a failed: ValueError: a.compensate failed",
    )

    report = await worker_for(OrderSaga, storage).run_once()

    assert report == RecoveryReport(claimed=1, compensated=1)
    assert ledger == ["compensate:a"]
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert record.error == "ValueError: b.act failed"  # the original cause is kept


async def test_run_once_leaves_a_saga_with_a_live_lease_alone(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    pause = Pause()

    class OrderSaga(Saga[OrderContext]):
        steps = [pausing_step("a", ledger, pause), make_step("b")]

    saga_id = uuid.uuid4()
    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    worker = worker_for(OrderSaga, storage)
    async with anyio.create_task_group() as tg:
        tg.start_soon(mediator.run, OrderContext(), saga_id)
        await pause.started.wait()
        before = await storage.load(saga_id)

        report = await worker.run_once()

        assert report == RecoveryReport()
        assert await storage.load(saga_id) == before  # not even claimed
        pause.release.set()

    assert ledger == ["act:a", "act:b"]
    record = await storage.load(saga_id)
    assert (record.status, record.attempts) == (SagaStatus.COMPLETED, 0)


async def test_run_once_reports_how_each_claimed_saga_ended(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
) -> None:
    refusing = make_step("refusing", compensate_fails=math.inf, compensation_retry=ONE_CALL)

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), refusing, make_step("c")]

    running = await stalled_saga(OrderSaga, TEXT)
    compensating = await stalled_saga(
        OrderSaga, TEXT, status=SagaStatus.COMPENSATING, cursor=1, applied=("a",), error="E: x"
    )
    failing_again = await stalled_saga(
        OrderSaga,
        TEXT,
        status=SagaStatus.FAILED,
        cursor=2,
        applied=("a", "refusing"),
        error="E: x\ncompensation of refusing failed: ValueError: refusing.compensate failed",
    )
    unknown = await stalled_saga(OrderSaga, TEXT, saga_name="a-saga-nobody-knows")

    report = await worker_for(OrderSaga, storage).run_once()

    assert report == RecoveryReport(claimed=4, completed=1, compensated=1, failed=1, errors=1)
    statuses = {saga_id: (await storage.load(saga_id)).status for saga_id in (running, unknown)}
    assert statuses == {running: SagaStatus.COMPLETED, unknown: SagaStatus.RUNNING}
    assert (await storage.load(compensating)).status is SagaStatus.COMPENSATED
    assert (await storage.load(failing_again)).status is SagaStatus.FAILED


async def test_run_once_claims_at_most_batch_size_sagas(
    make_step: StepFactory, storage: MemorySagaStorage, stalled_saga: StalledSagaFactory
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    ids = [await stalled_saga(OrderSaga, TEXT) for _ in range(5)]
    worker = worker_for(OrderSaga, storage, batch_size=2)

    claimed = [(await worker.run_once()).claimed for _ in range(4)]

    assert claimed == [2, 2, 1, 0]
    assert {(await storage.load(saga_id)).status for saga_id in ids} == {SagaStatus.COMPLETED}


async def test_run_once_recovers_up_to_concurrency_sagas_at_the_same_time(
    storage: MemorySagaStorage, stalled_saga: StalledSagaFactory
) -> None:
    active: list[uuid.UUID] = []
    peak = [0]
    all_in = anyio.Event()
    gate = anyio.Event()

    class Gated(SagaStepHandler[OrderContext, None]):
        name = "gated"

        async def act(self, context: OrderContext) -> None:
            active.append(self.saga_id)
            peak[0] = max(peak[0], len(active))
            if len(active) == 2:
                all_in.set()
            await gate.wait()
            active.remove(self.saga_id)

    class OrderSaga(Saga[OrderContext]):
        steps = [Gated]

    ids = [await stalled_saga(OrderSaga, TEXT) for _ in range(5)]
    worker = worker_for(OrderSaga, storage, concurrency=2)
    reports: list[RecoveryReport] = []

    async def one_round() -> None:
        reports.append(await worker.run_once())

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_round)
        await all_in.wait()  # two sagas are inside their step at the same time
        for _ in range(50):  # give the other three every chance to start too
            await anyio.lowlevel.checkpoint()
        assert len(active) == 2
        gate.set()

    assert peak[0] == 2
    assert reports == [RecoveryReport(claimed=5, completed=5)]
    assert {(await storage.load(saga_id)).status for saga_id in ids} == {SagaStatus.COMPLETED}


# --- backoff: a failed attempt is retried only after a pause ------------------------------------


async def test_a_saga_whose_compensation_fails_again_is_not_claimed_before_the_backoff_pause(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", compensate_fails=math.inf, compensation_retry=ONE_CALL),
            make_step("b"),
        ]

    saga_id = await stalled_saga(
        OrderSaga, TEXT, status=SagaStatus.COMPENSATING, cursor=1, applied=("a",), error="E: b"
    )
    worker = worker_for(OrderSaga, storage)

    assert await worker.run_once() == RecoveryReport(claimed=1, failed=1)
    record = await storage.load(saga_id)
    assert (record.status, record.attempts) == (SagaStatus.FAILED, 1)
    # Held by the worker for backoff.delay_before(attempts + 1) = 10 s, not released.
    assert record.lease_owner == worker.owner
    assert record.lease_expires_at == at(fake_clock() + 10.0)

    assert await worker.run_once() == RecoveryReport()
    advance_clock(9.5)
    assert await recoverable_ids(storage) == []
    assert await worker.run_once() == RecoveryReport()
    advance_clock(0.5)
    assert await worker.run_once() == RecoveryReport(claimed=1, failed=1)
    # The second pause is delay_before(3) = 20 s.
    record = await storage.load(saga_id)
    assert (record.attempts, record.lease_owner) == (2, worker.owner)
    assert record.lease_expires_at == at(fake_clock() + 20.0)
    advance_clock(19.0)
    assert await worker.run_once() == RecoveryReport()

    assert ledger == ["compensate:a", "compensate:a"]


async def test_an_attempt_that_hits_a_storage_error_is_retried_only_after_the_pause(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    fail_checkpoint: Callable[[int], None],
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    saga_id = await stalled_saga(OrderSaga, TEXT)  # checkpoint call 1
    # The worker's checkpoint after a's act (call 2) and the decision to compensate that
    # follows it (call 3) both fail: the attempt ends with the storage error.
    fail_checkpoint(2)
    fail_checkpoint(3)
    worker = worker_for(OrderSaga, storage)

    assert await worker.run_once() == RecoveryReport(claimed=1, errors=1)
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.RUNNING
    assert record.lease_owner == worker.owner
    assert record.lease_expires_at == at(fake_clock() + 10.0)
    assert await worker.run_once() == RecoveryReport()

    advance_clock(10.0)
    assert await worker.run_once() == RecoveryReport(claimed=1, completed=1)
    assert ledger == ["act:a", "act:a"]
    assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED


async def test_the_backoff_pause_survives_a_lease_renewal_during_a_slow_write(
    fake_clock: Callable[[], float], wait_until: WaitUntil
) -> None:
    class SlowWrites(MemorySagaStorage):
        """A FAILED checkpoint is applied at once, but its round trip takes a while."""

        def __init__(self) -> None:
            super().__init__(clock=fake_clock)
            self.wrote_failed = False
            self.renewed_after_failed = anyio.Event()
            self.returned = False

        async def checkpoint(self, checkpoint: Any) -> None:
            await super().checkpoint(checkpoint)
            if checkpoint.status is SagaStatus.FAILED:
                self.wrote_failed = True
                # The reply is slow: long enough for the keeper's next round (or, if the
                # keeper leaves this saga alone, a moment more than 20 of its rounds).
                with anyio.move_on_after(0.2):
                    await self.renewed_after_failed.wait()
                self.returned = True

        async def renew_lease(
            self, saga_id: uuid.UUID, *, owner: str, lease_seconds: float
        ) -> None:
            await super().renew_lease(saga_id, owner=owner, lease_seconds=lease_seconds)
            if self.wrote_failed:
                self.renewed_after_failed.set()

    class Refusing(SagaStepHandler[OrderContext, None]):
        name = "refusing"
        compensation_retry = ONE_CALL

        async def act(self, context: OrderContext) -> None:
            pass

        async def compensate(self, context: OrderContext) -> None:
            raise ValueError("still down")

    class OrderSaga(Saga[OrderContext]):
        steps = [Refusing]

    storage = SlowWrites()
    saga_id = uuid.uuid4()
    text = TEXT
    await storage.create(NewSaga(saga_id, OrderSaga.definition().name, text, "gone", 0.0))
    await storage.checkpoint(
        Checkpoint(saga_id, 1, SagaStatus.COMPENSATING, 1, ("refusing",), text, [], "E")
    )
    # The keeper renews a 0.03 s lease every 0.01 s; the backoff pause is 10 s.
    worker = worker_for(OrderSaga, storage, lease_seconds=0.03)

    async def failed_again() -> bool:
        return storage.returned

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await wait_until(failed_again)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        record = await storage.load(saga_id)
        tg.cancel_scope.cancel()

    assert (record.status, record.lease_owner) == (SagaStatus.FAILED, worker.owner)
    assert record.lease_expires_at == at(fake_clock() + 10.0)


# --- max_attempts: the dead-letter state ---------------------------------------------------------


async def test_a_saga_still_failing_after_max_attempts_is_parked_until_unparked(
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    advance_clock: Callable[[float], None],
    ledger: list[str],
) -> None:
    refund_works = [False]

    class Refund(SagaStepHandler[OrderContext, None]):
        name = "refund"
        compensation_retry = ONE_CALL

        async def act(self, context: OrderContext) -> None:
            ledger.append("act:refund")

        async def compensate(self, context: OrderContext) -> None:
            ledger.append("compensate:refund")
            if not refund_works[0]:
                raise ValueError("payment provider down")

    class OrderSaga(Saga[OrderContext]):
        steps = [Refund]

    saga_id = await stalled_saga(
        OrderSaga, TEXT, status=SagaStatus.COMPENSATING, cursor=0, applied=("refund",), error="E"
    )
    worker = worker_for(OrderSaga, storage, max_attempts=2)

    reports = []
    for _ in range(3):
        reports.append(await worker.run_once())
        advance_clock(1000.0)  # past any pause

    assert reports == [
        RecoveryReport(claimed=1, failed=1),
        RecoveryReport(claimed=1, failed=1),
        RecoveryReport(claimed=1, parked=1),  # the third claim is more than max_attempts
    ]
    assert ledger == ["compensate:refund", "compensate:refund"]
    record = await storage.load(saga_id)
    assert record.parked
    assert record.status is SagaStatus.FAILED  # parking keeps the status
    assert record.lease_owner is None
    assert record.error is not None
    assert "gave up after 2 attempts" in record.error
    assert "payment provider down" in record.error  # the last error says why
    assert [r.saga_id for r in await storage.list_sagas(parked=True)] == [saga_id]
    assert await recoverable_ids(storage) == []
    advance_clock(10_000.0)
    assert await worker.run_once() == RecoveryReport()  # never claimed again

    refund_works[0] = True
    unparked = await storage.unpark(saga_id)
    assert (unparked.parked, unparked.attempts) == (False, 0)
    assert await worker.run_once() == RecoveryReport(claimed=1, compensated=1)
    record = await storage.load(saga_id)
    assert (record.status, record.parked) == (SagaStatus.COMPENSATED, False)
    assert await storage.list_sagas(parked=True) == []


async def test_a_saga_no_worker_knows_is_an_error_held_for_the_pause_then_parked(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    fake_clock: Callable[[], float],
    advance_clock: Callable[[float], None],
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    saga_id = await stalled_saga(OrderSaga, TEXT, saga_name="retired-saga")
    worker = worker_for(OrderSaga, storage, max_attempts=2)

    assert await worker.run_once() == RecoveryReport(claimed=1, errors=1)
    record = await storage.load(saga_id)
    assert (record.status, record.version) == (SagaStatus.RUNNING, 3)  # only the claim wrote
    assert record.lease_owner == worker.owner
    assert record.lease_expires_at == at(fake_clock() + 10.0)  # held for the pause
    advance_clock(9.0)
    assert await worker.run_once() == RecoveryReport()

    advance_clock(1.0)
    assert await worker.run_once() == RecoveryReport(claimed=1, errors=1)
    advance_clock(20.0)
    assert await worker.run_once() == RecoveryReport(claimed=1, parked=1)

    assert ledger == []  # nothing was ever run
    record = await storage.load(saga_id)
    assert record.parked
    assert record.status is SagaStatus.RUNNING
    assert [r.saga_id for r in await storage.list_sagas(parked=True)] == [saga_id]


async def test_a_saga_whose_steps_changed_is_never_run_and_ends_parked(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    advance_clock: Callable[[float], None],
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("inserted"), make_step("b")]

    # Stored by the old code, whose steps were [a, b]: it was running b as step 1.
    saga_id = await stalled_saga(OrderSaga, TEXT, cursor=1, applied=("a",), next_step="b")
    worker = worker_for(OrderSaga, storage, max_attempts=1)

    assert await worker.run_once() == RecoveryReport(claimed=1, errors=1)
    advance_clock(1000.0)
    assert await worker.run_once() == RecoveryReport(claimed=1, parked=1)

    assert ledger == []
    record = await storage.load(saga_id)
    assert record.parked
    assert (record.status, record.cursor, record.applied) == (SagaStatus.RUNNING, 1, ("a",))


async def test_a_saga_parked_because_it_cannot_be_run_says_why(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    advance_clock: Callable[[float], None],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    saga_id = await stalled_saga(OrderSaga, TEXT, saga_name="retired-saga")
    worker = worker_for(OrderSaga, storage, max_attempts=1)
    await worker.run_once()
    advance_clock(1000.0)
    assert await worker.run_once() == RecoveryReport(claimed=1, parked=1)

    record = await storage.load(saga_id)
    assert record.error is not None
    assert "retired-saga" in record.error


# --- graceful shutdown ---------------------------------------------------------------------------


async def test_cancelling_the_worker_during_an_act_hands_the_saga_back_running(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    ledger: list[str],
) -> None:
    pause = Pause()

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), pausing_step("b", ledger, pause), make_step("c")]

    saga_id = await stalled_saga(OrderSaga, TEXT)
    worker = worker_for(OrderSaga, storage)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await pause.started.wait()
        tg.cancel_scope.cancel()  # shutdown while b's act runs

    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.applied) == (SagaStatus.RUNNING, 1, ("a",))
    assert record.lease_owner is None  # released, not left to expire
    assert await recoverable_ids(storage) == [saga_id]
    assert ledger == ["act:a", "act:b"]

    next_worker = worker_for(OrderSaga, storage)
    assert await next_worker.run_once() == RecoveryReport(claimed=1, completed=1)
    assert ledger == ["act:a", "act:b", "act:b", "act:c"]


async def test_shutting_down_hands_back_the_claimed_sagas_that_never_started(
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    ledger: list[str],
) -> None:
    pause = Pause()

    class OrderSaga(Saga[OrderContext]):
        steps = [pausing_step("a", ledger, pause)]

    ids = [await stalled_saga(OrderSaga, TEXT) for _ in range(3)]
    worker = worker_for(OrderSaga, storage, owner="w", batch_size=3, concurrency=1)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await pause.started.wait()
        tg.cancel_scope.cancel()  # one runs, two wait for the slot

    # All three are recoverable at once (the clock did not move): the running one was
    # released, the waiting ones' leases made to expire now.
    assert sorted(await recoverable_ids(storage)) == sorted(ids)
    assert ledger == ["act:a"]


async def test_cancelling_the_worker_during_a_compensation_lets_it_finish_and_checkpoint(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    ledger: list[str],
) -> None:
    pause = Pause()

    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a"),
            pausing_step("b", ledger, pause, direction="compensate"),
            make_step("c"),
        ]

    saga_id = await stalled_saga(
        OrderSaga,
        TEXT,
        status=SagaStatus.COMPENSATING,
        cursor=2,
        applied=("a", "b"),
        error="ValueError: c.act failed",
    )
    worker = worker_for(OrderSaga, storage)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await pause.started.wait()
        tg.cancel_scope.cancel()  # shutdown while b's compensation runs
        pause.release.set()  # ... which is shielded: it finishes

    record = await storage.load(saga_id)
    assert (record.status, record.applied) == (SagaStatus.COMPENSATING, ("a",))
    assert record.lease_owner is None
    assert record.error == "ValueError: c.act failed"
    assert ledger == ["compensate:b"]  # a's compensation was not started
    journal = [(e.step_id, e.direction, e.event) for e in await storage.history(saga_id)]
    assert journal[-2:] == [
        ("b", StepDirection.COMPENSATE, StepEvent.STARTED),
        ("b", StepDirection.COMPENSATE, StepEvent.COMPLETED),
    ]
    assert await recoverable_ids(storage) == [saga_id]

    assert await worker_for(OrderSaga, storage).run_once() == RecoveryReport(
        claimed=1, compensated=1
    )
    assert ledger == ["compensate:b", "compensate:a"]
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


async def test_the_worker_keeps_polling_after_the_storage_was_briefly_unreachable(
    make_step: StepFactory, wait_until: WaitUntil
) -> None:
    class Blinking(MemorySagaStorage):
        outages = 1

        async def claim_recoverable(
            self, *, owner: str, lease_seconds: float, limit: int = 100
        ) -> list[Any]:
            if self.outages:
                self.outages -= 1
                raise StorageUnavailableError("connection refused")
            return await super().claim_recoverable(
                owner=owner, lease_seconds=lease_seconds, limit=limit
            )

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    storage = Blinking()
    saga_id = uuid.uuid4()
    await storage.create(
        # Created with no time left on its lease: stalled at once.
        NewSaga(saga_id, OrderSaga.definition().name, TEXT, "gone", 0.0)
    )
    worker = worker_for(OrderSaga, storage)

    async def completed() -> bool:
        return (await storage.load(saga_id)).status is SagaStatus.COMPLETED

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await wait_until(completed)
        tg.cancel_scope.cancel()


# --- run: claiming as slots free up -------------------------------------------------------------


async def test_run_goes_on_with_other_sagas_while_one_saga_of_its_batch_is_slow(
    storage: MemorySagaStorage, stalled_saga: StalledSagaFactory, wait_until: WaitUntil
) -> None:
    gate = anyio.Event()
    ids: list[uuid.UUID] = []

    class FirstIsSlow(SagaStepHandler[OrderContext, None]):
        name = "first-is-slow"

        async def act(self, context: OrderContext) -> None:
            if self.saga_id == ids[0]:
                await gate.wait()

    class OrderSaga(Saga[OrderContext]):
        steps = [FirstIsSlow]

    ids.extend([await stalled_saga(OrderSaga, TEXT) for _ in range(6)])
    worker = worker_for(OrderSaga, storage, batch_size=2, concurrency=2)

    async def all_but_the_first_completed() -> bool:
        records = [await storage.load(saga_id) for saga_id in ids[1:]]
        return all(record.status is SagaStatus.COMPLETED for record in records)

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        # The first batch is [slow, quick]: the slot the quick one frees runs the next ones.
        await wait_until(all_but_the_first_completed)
        assert (await storage.load(ids[0])).status is SagaStatus.RUNNING
        gate.set()
        await wait_until(lambda: _completed(storage, ids[0]))
        tg.cancel_scope.cancel()


async def _completed(storage: MemorySagaStorage, saga_id: uuid.UUID) -> bool:
    return (await storage.load(saga_id)).status is SagaStatus.COMPLETED


async def test_run_runs_concurrency_sagas_and_holds_at_most_batch_size_more_claimed(
    storage: MemorySagaStorage, stalled_saga: StalledSagaFactory, wait_until: WaitUntil
) -> None:
    active: set[uuid.UUID] = set()
    peak = [0]
    gate = anyio.Event()

    class Gated(SagaStepHandler[OrderContext, None]):
        name = "gated"

        async def act(self, context: OrderContext) -> None:
            active.add(self.saga_id)
            peak[0] = max(peak[0], len(active))
            await gate.wait()
            active.discard(self.saga_id)

    class OrderSaga(Saga[OrderContext]):
        steps = [Gated]

    ids = [await stalled_saga(OrderSaga, TEXT) for _ in range(10)]
    worker = worker_for(OrderSaga, storage, owner="w", batch_size=2, concurrency=3)

    async def claimed() -> list[uuid.UUID]:
        return [record.saga_id for record in await storage.list_sagas(lease_owner="w")]

    async def three_running() -> bool:
        return len(active) == 3

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await wait_until(three_running)
        for _ in range(50):  # give it every chance to claim or start more
            await anyio.lowlevel.checkpoint()
        # Batches of 2: the first two run, the second batch fills the third slot and its
        # other saga waits, claimed ahead of a free slot; no more is claimed meanwhile.
        held = await claimed()
        assert len(held) == 4
        assert active < set(held)
        gate.set()
        await wait_until(lambda: _all_completed(storage, ids))
        tg.cancel_scope.cancel()

    assert peak[0] == 3


async def test_a_claimed_saga_waiting_for_a_slot_keeps_its_lease(
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    advance_clock: Callable[[float], None],
    fake_clock: Any,
    ledger: list[str],
    wait_until: WaitUntil,
) -> None:
    pause = Pause()

    class OrderSaga(Saga[OrderContext]):
        steps = [pausing_step("a", ledger, pause)]

    first = await stalled_saga(OrderSaga, TEXT)
    second = await stalled_saga(OrderSaga, TEXT)
    # One slot, both claimed; the keeper renews every 0.01 s (real) a lease of 0.03 s.
    worker = worker_for(
        OrderSaga, storage, owner="w", batch_size=2, concurrency=1, lease_seconds=0.03
    )

    async def both_leases_live() -> bool:
        now = at(fake_clock.now)
        records = [await storage.load(saga_id) for saga_id in (first, second)]
        return all(r.lease_expires_at is not None and r.lease_expires_at > now for r in records)

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await pause.started.wait()
        advance_clock(1.0)  # both leases expired: only renewals make them live again
        await wait_until(both_leases_live)
        assert await storage.claim_recoverable(owner="other", lease_seconds=LEASE) == []
        pause.release.set()
        await wait_until(lambda: _all_completed(storage, [first, second]))
        tg.cancel_scope.cancel()
    assert ledger == ["act:a", "act:a"]


async def test_a_claimed_saga_taken_over_while_it_waited_for_a_slot_is_not_started(
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    advance_clock: Callable[[float], None],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="saga_core")
    started: list[uuid.UUID] = []
    release = anyio.Event()

    class Held(SagaStepHandler[OrderContext, None]):
        name = "held"

        async def act(self, context: OrderContext) -> None:
            started.append(self.saga_id)
            await release.wait()

    class OrderSaga(Saga[OrderContext]):
        steps = [Held]

    ids = {await stalled_saga(OrderSaga, TEXT) for _ in range(2)}
    zombie = worker_for(
        OrderSaga, storage, owner="zombie", batch_size=2, concurrency=1, lease_seconds=0.03
    )

    async def one_started() -> bool:
        return bool(started)

    async with anyio.create_task_group() as tg:
        await tg.start(zombie.run)
        await wait_until(one_started)  # the other one waits for the slot
        (waiting,) = ids - {started[0]}
        # Its lease expires and, with no renewal in between, another worker takes it.
        advance_clock(1.0)
        await storage.claim(waiting, owner="successor", lease_seconds=LEASE)
        await wait_until(logged(caplog, "was taken over by another runner"))
        release.set()
        await wait_until(logged(caplog, "taken over before it started"))
        await wait_until(lambda: _completed(storage, started[0]))
        tg.cancel_scope.cancel()
    assert len(started) == 1  # the waiting one was never run by the zombie
    record = await storage.load(waiting)
    assert (record.status, record.lease_owner) == (SagaStatus.RUNNING, "successor")


def logged(caplog: pytest.LogCaptureFixture, fragment: str) -> Callable[[], Awaitable[bool]]:
    """A predicate for ``wait_until``: a log record containing ``fragment`` was captured."""

    async def check() -> bool:
        return any(fragment in record.getMessage() for record in caplog.records)

    return check


async def _all_completed(storage: MemorySagaStorage, ids: list[uuid.UUID]) -> bool:
    return all([await _completed(storage, saga_id) for saga_id in ids])


async def test_run_logs_a_saga_whose_park_write_failed_and_goes_on(
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    make_step: StepFactory,
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class OldOrderSaga(Saga[OrderContext]):
        name = "orders"
        steps = [make_step("a")]

    class OrderSaga(Saga[OrderContext]):
        name = "orders"
        version = 2
        steps = [make_step("a")]

    class ParkBreaks(RuntimeError):
        pass

    async def broken_park(saga_id: uuid.UUID, *, owner: str, reason: str) -> None:
        raise ParkBreaks("the park write broke")

    storage.park = broken_park  # type: ignore[method-assign]
    old = await stalled_saga(OldOrderSaga, TEXT)  # parked at once: version 1 is not bound
    current = uuid.uuid4()
    first_step = OrderSaga.definition().next_step_ids[0]
    await storage.create(  # no time left on its lease: stalled at once
        NewSaga(current, "orders", TEXT, "gone", 0.0, next_step=first_step, saga_version=2)
    )
    worker = worker_for(OrderSaga, storage)

    with caplog.at_level(logging.WARNING, logger="saga_core.worker"):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await wait_until(lambda: _completed(storage, current))
            tg.cancel_scope.cancel()

    assert f"recovery of saga {old} failed: ParkBreaks: the park write broke" in caplog.text
    assert (await storage.load(old)).status is SagaStatus.RUNNING


# --- many workers on one storage ----------------------------------------------------------------


async def test_two_workers_racing_on_stalled_sagas_run_each_step_exactly_once(
    storage: MemorySagaStorage, stalled_saga: StalledSagaFactory, wait_until: WaitUntil
) -> None:
    acts: list[tuple[uuid.UUID, str]] = []

    def counted(step_name: str) -> StepClass:
        class Counted(SagaStepHandler[OrderContext, None]):
            name = step_name

            async def act(self, context: OrderContext) -> None:
                acts.append((self.saga_id, step_name))
                await anyio.lowlevel.checkpoint()  # let the other worker in

        return Counted

    class OrderSaga(Saga[OrderContext]):
        steps = [counted("a"), counted("b"), counted("c")]

    ids = [await stalled_saga(OrderSaga, TEXT) for _ in range(24)]
    workers = [
        worker_for(OrderSaga, storage, owner=f"worker-{n}", batch_size=3, concurrency=2)
        for n in (1, 2)
    ]

    async def all_completed() -> bool:
        records = [await storage.load(saga_id) for saga_id in ids]
        return all(record.status is SagaStatus.COMPLETED for record in records)

    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        await wait_until(all_completed)
        tg.cancel_scope.cancel()

    assert Counter(acts) == Counter({(saga_id, s): 1 for saga_id in ids for s in "abc"})
    assert {(await storage.load(saga_id)).attempts for saga_id in ids} == {1}


async def test_a_worker_whose_lease_was_taken_over_is_fenced_and_writes_nothing_more(
    storage: MemorySagaStorage,
    stalled_saga: StalledSagaFactory,
    advance_clock: Callable[[float], None],
    checkpoints: list[Any],
    ledger: list[str],
    wait_until: WaitUntil,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="saga_core")
    first_call, second_call = Pause(), Pause()
    calls = [0]

    class Slow(SagaStepHandler[OrderContext, None]):
        name = "slow"

        async def act(self, context: OrderContext) -> None:
            calls[0] += 1
            ledger.append(f"act:slow#{calls[0]}")
            await (first_call if calls[0] == 1 else second_call).hold()

    class After(SagaStepHandler[OrderContext, None]):
        name = "after"

        async def act(self, context: OrderContext) -> None:
            ledger.append("act:after")

    class OrderSaga(Saga[OrderContext]):
        steps = [Slow, After]

    saga_id = await stalled_saga(OrderSaga, TEXT)
    # The zombie renews every 0.01 s (real) a lease of 0.03 s on the storage's fake clock.
    zombie = worker_for(OrderSaga, storage, owner="zombie", lease_seconds=0.03)
    successor = worker_for(OrderSaga, storage, owner="successor")
    successor_reports: list[RecoveryReport] = []

    async def take_over() -> None:
        # The zombie's lease expires (say its host froze), and in the same instant, with no
        # renewal in between, the successor claims the saga.
        advance_clock(1.0)
        successor_reports.append(await successor.run_once())

    async def finished() -> bool:
        return bool(successor_reports)

    async with anyio.create_task_group() as tg:
        await tg.start(zombie.run)
        await first_call.started.wait()
        tg.start_soon(take_over)
        await second_call.started.wait()
        assert (await storage.load(saga_id)).lease_owner == "successor"

        # The zombie's keeper finds the lease is not its own any more: it fences its runner.
        await wait_until(logged(caplog, "was taken over by another runner; this one stops"))
        written = len(checkpoints)
        state = await storage.load(saga_id)

        first_call.release.set()  # the zombie's step returns; its checkpoint is refused
        await wait_until(logged(caplog, "was taken over while recovering"))
        assert len(checkpoints) == written
        assert await storage.load(saga_id) == state

        second_call.release.set()  # the successor finishes the saga
        await wait_until(finished)
        tg.cancel_scope.cancel()

    assert successor_reports == [RecoveryReport(claimed=1, completed=1)]
    assert ledger == ["act:slow#1", "act:slow#2", "act:after"]
    record = await storage.load(saga_id)
    assert (record.status, record.lease_owner) == (SagaStatus.COMPLETED, None)
