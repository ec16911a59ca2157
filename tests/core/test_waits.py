"""Durable waits (``WaitForSignal``, ``Sleep``, ``SleepUntil``) on the memory storage: a wait
suspends the saga in one write (WAITING, no lease, its timer and signal stored), a signal or a
timer resumes it through a worker, and the consumption of a signal rides on the next write."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryReport,
    SagaDefinitionError,
    SagaMediator,
    SagaSignalRefusedError,
    SagaStatus,
    SagaWaitTimedOutError,
    Sleep,
    SleepUntil,
    StepDirection,
    StepEvent,
    WaitForSignal,
)
from saga_core.storage import Checkpoint, SagaSignalPendingError

from ._wait_sagas import (
    Gate,
    MediatorFactory,
    OrderContext,
    Payment,
    StepFactory,
    mediator_for,
    order_saga,
    waiting_saga,
)

pytestmark = pytest.mark.anyio

#: A timer short enough to wait for in a test, long enough to be in the future when stored.
SHORT = 0.05
#: A timer still in the future right after the saga suspends, even on a slow machine.
NOT_DUE_AT_ONCE = 0.3


async def run_worker_until_ended(mediator: SagaMediator, saga_id: uuid.UUID) -> RecoveryReport:
    """Let a worker of ``mediator`` take the saga (polling) until it ends; the reports summed."""
    worker = mediator.worker(poll_interval=0.005)
    total = RecoveryReport()
    with anyio.fail_after(2):
        while not (await mediator.storage.load(saga_id)).status.is_terminal:
            report = await worker.run_once()
            for field in dataclasses.fields(report):
                name = field.name
                setattr(total, name, getattr(total, name) + getattr(report, name))
            await anyio.sleep(0.005)
    return total


def wait_events(journal: list[Any], wait_id: str) -> list[StepEvent]:
    """The wait's own events (a claim of the saga at the wait is journaled under its id too)."""
    return [
        entry.event
        for entry in journal
        if entry.step_id == wait_id and entry.event is not StepEvent.CLAIMED
    ]


@pytest.fixture
async def at_the_first_of_two_waits(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> tuple[SagaMediator, uuid.UUID]:
    """A saga waiting at the first of two waits in a row (``paid`` into the payment, then
    ``shipped``) before step b; its mediator and id."""
    saga = order_saga(
        WaitForSignal("paid", into="payment"), WaitForSignal("shipped"), make_step("b")
    )
    mediator = make_mediator(OrderContext, saga)
    return mediator, await waiting_saga(mediator)


# --- suspending ------------------------------------------------------------------------------


async def test_a_wait_suspends_the_saga_in_one_write_without_a_lease(
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    saga = order_saga(
        make_step("a"),
        WaitForSignal("paid", into="payment", timeout=timedelta(hours=1)),
        make_step("b"),
    )
    mediator = make_mediator(OrderContext, saga)
    before = storage.write_count
    started = datetime.now(timezone.utc)
    outcome = await mediator.run(OrderContext())
    finished = datetime.now(timezone.utc)

    assert (outcome.status, outcome.error) == (SagaStatus.WAITING, None)
    assert ledger == ["act:a"]
    # create, a's checkpoint, and ONE write to suspend
    assert storage.write_count - before == 3
    assert [c.status for c in checkpoints] == [SagaStatus.RUNNING, SagaStatus.WAITING]
    record = await storage.load(outcome.saga_id)
    assert (record.status, record.cursor, record.applied) == (SagaStatus.WAITING, 1, ("a",))
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert (record.waiting_for, record.next_step) == ("paid", "signal:paid")
    assert record.wake_at is not None
    assert started + timedelta(hours=1) <= record.wake_at <= finished + timedelta(hours=1)
    assert record.attempts == 0
    assert wait_events(await storage.history(outcome.saga_id), "signal:paid") == [StepEvent.STARTED]


async def test_a_signal_wait_without_a_timeout_stores_no_timer(
    storage: MemorySagaStorage, make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    saga = order_saga(WaitForSignal("paid"), make_step("b"))
    before = storage.write_count
    outcome = await make_mediator(OrderContext, saga).run(OrderContext())
    assert storage.write_count - before == 2  # create, suspend
    record = await storage.load(outcome.saga_id)
    assert (record.status, record.wake_at, record.waiting_for) == (
        SagaStatus.WAITING,
        None,
        "paid",
    )
    assert await storage.list_recoverable() == []  # nothing is due until the signal


async def test_stream_ends_at_the_first_wait_without_raising(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    saga = order_saga(make_step("a"), Sleep(timedelta(days=1)), make_step("b"))
    results = [r async for r in make_mediator(OrderContext, saga).stream(OrderContext())]
    assert [r.step_id for r in results] == ["a"]


# --- signals resume a waiting saga ---------------------------------------------------------


async def test_a_signal_resumes_the_saga_through_a_worker_and_the_next_write_consumes_it(
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    payments: list[Payment | None] = []
    saga = order_saga(
        make_step("a"),
        WaitForSignal("paid", into="payment"),
        make_step("b", change=lambda context: payments.append(context.payment)),
    )
    mediator = make_mediator(OrderContext, saga)
    saga_id = await waiting_saga(mediator)
    assert await mediator.signal(saga_id, "paid", {"amount": 12}, signal_id="evt-1") is True
    waiting = await storage.load(saga_id)
    assert [(s.signal_id, s.name) for s in waiting.signals] == [("evt-1", "paid")]
    assert waiting.status is SagaStatus.WAITING and waiting.wake_at is not None  # due now

    before_writes, before_checkpoints = storage.write_count, len(checkpoints)
    report = await mediator.worker(poll_interval=0.01).run_once()

    assert report == RecoveryReport(claimed=1, completed=1)
    assert ledger == ["act:a", "act:b"]
    assert payments == [Payment(amount=12)]  # decoded as the field's dataclass type
    # the claim, then b's own write (the last: COMPLETED), which carries the consumption
    assert storage.write_count - before_writes == 2
    (resumed,) = checkpoints[before_checkpoints:]
    assert (resumed.status, resumed.consume_signal) == (SagaStatus.COMPLETED, "evt-1")
    record = await storage.load(saga_id)
    assert (record.status, record.signals) == (SagaStatus.COMPLETED, ())
    assert mediator.stored_context(record).payment == Payment(amount=12)
    assert wait_events(await storage.history(saga_id), "signal:paid") == [
        StepEvent.STARTED,
        StepEvent.COMPLETED,
    ]


async def test_a_signal_taken_by_a_wait_is_consumed_by_the_next_suspend(
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
    at_the_first_of_two_waits: tuple[SagaMediator, uuid.UUID],
) -> None:
    mediator, saga_id = at_the_first_of_two_waits
    await mediator.signal(saga_id, "paid", Payment(amount=3), signal_id="evt-1")
    before = len(checkpoints)
    report = await mediator.worker(poll_interval=0.01).run_once()

    assert report == RecoveryReport(claimed=1, suspended=1)
    (suspend,) = checkpoints[before:]
    assert (suspend.status, suspend.waiting_for, suspend.consume_signal) == (
        SagaStatus.WAITING,
        "shipped",
        "evt-1",
    )
    record = await storage.load(saga_id)
    assert (record.cursor, record.signals) == (1, ())
    assert mediator.stored_context(record).payment == Payment(amount=3)  # stored with it


async def test_a_signal_sent_before_the_saga_waits_is_kept_and_taken_without_suspending(
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    gate = Gate()
    saga = order_saga(gate.step("a", ledger), WaitForSignal("paid", into="payment"), make_step("b"))
    mediator = make_mediator(OrderContext, saga)
    saga_id = uuid.uuid4()
    async with anyio.create_task_group() as tg:
        tg.start_soon(mediator.run, OrderContext(), saga_id)
        await gate.started.wait()
        assert await mediator.signal(saga_id, "paid", {"amount": 7}, signal_id="early")
        gate.release.set()

    record = await storage.load(saga_id)
    assert (record.status, record.signals) == (SagaStatus.COMPLETED, ())
    assert mediator.stored_context(record).payment == Payment(amount=7)
    assert SagaStatus.WAITING not in [c.status for c in checkpoints]  # no suspend write at all
    assert [c.consume_signal for c in checkpoints] == [None, "early"]
    assert ledger == ["act:a", "act:b"]


async def test_two_signals_pending_for_two_waits_in_a_row_are_both_consumed(
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
    at_the_first_of_two_waits: tuple[SagaMediator, uuid.UUID],
) -> None:
    # A saga resumed by a worker reads its pending signals with the claim: the second wait's
    # signal, sent while the saga waited for the first, is taken without a suspend.
    mediator, saga_id = at_the_first_of_two_waits
    assert await mediator.signal(saga_id, "shipped", None, signal_id="s")
    assert (await storage.load(saga_id)).status is SagaStatus.WAITING
    assert await storage.list_recoverable() == []  # not the signal it waits for: not due
    assert await mediator.signal(saga_id, "paid", {"amount": 1}, signal_id="p")
    before = len(checkpoints)
    report = await mediator.worker(poll_interval=0.01).run_once()

    assert report == RecoveryReport(claimed=1, completed=1)
    # Each signal taken is consumed by a write: neither is left pending.
    consumed = [c.consume_signal for c in checkpoints[before:] if c.consume_signal]
    assert sorted(consumed) == ["p", "s"]
    record = await storage.load(saga_id)
    assert (record.status, record.signals) == (SagaStatus.COMPLETED, ())


# --- sleeps ----------------------------------------------------------------------------------


async def test_a_zero_sleep_and_a_past_instant_do_not_suspend(
    storage: MemorySagaStorage,
    checkpoints: list[Checkpoint],
    make_step: StepFactory,
    make_mediator: MediatorFactory,
) -> None:
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    saga = order_saga(make_step("a"), Sleep(0), SleepUntil(lambda context: past), make_step("b"))
    before = storage.write_count
    outcome = await make_mediator(OrderContext, saga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert storage.write_count - before == 3  # create, a, b: the sleeps cost nothing
    assert SagaStatus.WAITING not in [c.status for c in checkpoints]
    journal = await storage.history(outcome.saga_id)
    assert wait_events(journal, "sleep:sleep-1") == [StepEvent.COMPLETED]
    assert wait_events(journal, "sleep:sleep-2") == [StepEvent.COMPLETED]


async def test_sleep_until_a_naive_datetime_compensates_with_a_clear_error(
    storage: MemorySagaStorage,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    saga = order_saga(make_step("a"), SleepUntil(lambda context: datetime.now()), make_step("b"))
    outcome = await make_mediator(OrderContext, saga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, SagaDefinitionError)
    assert "timezone-aware datetime" in str(outcome.error)
    assert ledger == ["act:a", "compensate:a"]
    record = await storage.load(outcome.saga_id)
    assert record.error is not None and "timezone-aware" in record.error
    assert wait_events(await storage.history(outcome.saga_id), "sleep:sleep-1") == [
        StepEvent.FAILED
    ]


async def test_a_sleep_suspends_until_its_timer_then_a_worker_resumes_it(
    make_step: StepFactory, ledger: list[str]
) -> None:
    saga = order_saga(make_step("a"), Sleep(NOT_DUE_AT_ONCE), make_step("b"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    outcome = await mediator.run(OrderContext())
    record = await storage.load(outcome.saga_id)
    assert (record.status, record.waiting_for, record.next_step) == (
        SagaStatus.WAITING,
        None,
        "sleep:sleep-1",
    )
    assert await mediator.worker().run_once() == RecoveryReport()  # not due yet

    await run_worker_until_ended(mediator, outcome.saga_id)

    assert (await storage.load(outcome.saga_id)).status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:b"]
    assert wait_events(await storage.history(outcome.saga_id), "sleep:sleep-1") == [
        StepEvent.STARTED,
        StepEvent.COMPLETED,
    ]


# --- timeouts --------------------------------------------------------------------------------


async def test_a_wait_that_times_out_compensates_with_a_wait_timed_out_error(
    make_step: StepFactory, ledger: list[str]
) -> None:
    saga = order_saga(make_step("a"), WaitForSignal("paid", timeout=SHORT), make_step("b"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = await waiting_saga(mediator)

    report = await run_worker_until_ended(mediator, saga_id)

    assert report.compensated == 1
    assert ledger == ["act:a", "compensate:a"]
    with anyio.fail_after(1):
        outcome = await mediator.handle(saga_id).result()
    assert outcome.status is SagaStatus.COMPENSATED
    record = await storage.load(saga_id)
    assert record.error is not None
    assert record.error.startswith(f"{SagaWaitTimedOutError.__name__}: ")
    assert "signal 'paid' did not arrive by" in record.error
    journal = await storage.history(saga_id)
    assert wait_events(journal, "signal:paid") == [StepEvent.STARTED, StepEvent.FAILED]


async def test_a_timeout_step_runs_in_place_of_the_signal_and_is_compensated_later(
    make_step: StepFactory, ledger: list[str]
) -> None:
    saga = order_saga(
        make_step("a"),
        WaitForSignal("paid", timeout=SHORT, on_timeout=make_step("remind")),
        WaitForSignal("shipped"),
        make_step("b", act_fails=1),
    )
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = await waiting_saga(mediator)
    worker = mediator.worker()
    with anyio.fail_after(2):
        while (await storage.load(saga_id)).waiting_for != "shipped":
            await worker.run_once()
            await anyio.sleep(0.005)

    assert ledger == ["act:a", "act:remind"]
    record = await storage.load(saga_id)
    assert (record.cursor, record.applied) == (2, ("a", "remind"))
    # The timeout was made durable before its step ran: the signal is refused now.
    with pytest.raises(SagaSignalRefusedError, match="gone past its wait"):
        await mediator.signal(saga_id, "paid", {"amount": 1})

    await mediator.signal(saga_id, "shipped")
    await run_worker_until_ended(mediator, saga_id)

    assert ledger == [
        "act:a",
        "act:remind",
        "act:b",
        "compensate:b",
        "compensate:remind",
        "compensate:a",
    ]
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


class SignalDuringCheckpoint(MemorySagaStorage):
    """A storage that delivers a signal just before it writes a checkpoint that yields to it
    (a timeout, a suspend): the signal arrives between the runner's decision and its write."""

    def __init__(self, *, only_status: SagaStatus | None = None) -> None:
        super().__init__()
        self.mediator: SagaMediator | None = None
        self.only_status = only_status
        self.delivered = False

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        wanted = checkpoint.unless_signal
        if (
            wanted is not None
            and not self.delivered
            and (self.only_status is None or checkpoint.status is self.only_status)
        ):
            assert self.mediator is not None
            self.delivered = True
            await self.mediator.signal(checkpoint.saga_id, wanted, {"amount": 99}, signal_id="late")
        await super().checkpoint(checkpoint)


@pytest.mark.parametrize("with_timeout_step", [False, True])
async def test_a_signal_that_arrives_between_the_claim_and_the_timeout_write_wins(
    make_step: StepFactory, ledger: list[str], with_timeout_step: bool
) -> None:
    remind = make_step("remind") if with_timeout_step else None
    saga = order_saga(
        make_step("a"),
        WaitForSignal("paid", into="payment", timeout=SHORT, on_timeout=remind),
        make_step("b"),
    )
    # The timeout's write is the first non-WAITING one that yields to the signal.
    storage = SignalDuringCheckpoint(
        only_status=SagaStatus.RUNNING if with_timeout_step else SagaStatus.COMPENSATING
    )
    mediator = mediator_for(saga, storage)
    storage.mediator = mediator
    saga_id = await waiting_saga(mediator)
    assert not storage.delivered

    report = await run_worker_until_ended(mediator, saga_id)

    assert storage.delivered
    assert report.completed == 1 and report.compensated == 0
    assert ledger == ["act:a", "act:b"]  # the timeout step never ran
    record = await storage.load(saga_id)
    assert (record.status, record.signals) == (SagaStatus.COMPLETED, ())
    assert mediator.stored_context(record).payment == Payment(amount=99)
    # the wait failed nothing durable: its timeout entry was never written
    events = wait_events(await storage.history(saga_id), "signal:paid")
    assert events[0] is StepEvent.STARTED and events[-1] is StepEvent.COMPLETED


async def test_a_signal_that_arrives_just_before_the_suspend_write_is_taken_instead(
    make_step: StepFactory, ledger: list[str]
) -> None:
    saga = order_saga(make_step("a"), WaitForSignal("paid", into="payment"), make_step("b"))
    storage = SignalDuringCheckpoint(only_status=SagaStatus.WAITING)
    mediator = mediator_for(saga, storage)
    storage.mediator = mediator
    before = storage.write_count

    outcome = await mediator.run(OrderContext())

    assert storage.delivered
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.payment == Payment(amount=99)
    assert storage.write_count - before == 4  # create, a, the signal, b: no suspend
    assert ledger == ["act:a", "act:b"]


async def test_the_suspend_write_yields_to_a_pending_signal_at_the_storage(
    make_step: StepFactory,
) -> None:
    # The storage side of the race above: a suspend that names the signal is refused.
    saga = order_saga(WaitForSignal("paid"), make_step("b"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = await waiting_saga(mediator)
    record = await storage.load(saga_id)
    await mediator.signal(saga_id, "paid")
    with pytest.raises(SagaSignalPendingError):
        await storage.checkpoint(
            Checkpoint(
                saga_id,
                record.version,
                SagaStatus.WAITING,
                0,
                (),
                record.context,
                [],
                next_step="signal:paid",
                waiting_for="paid",
                unless_signal="paid",
            )
        )


async def test_a_wait_journals_started_once_even_when_it_suspends_again(
    make_step: StepFactory,
) -> None:
    # A claim of a saga that is not due yet (an operator's recover) suspends it again at the
    # same timer, without a second STARTED entry.
    saga = order_saga(Sleep(timedelta(hours=1)), make_step("b"))
    storage = MemorySagaStorage()
    mediator = mediator_for(saga, storage)
    saga_id = await waiting_saga(mediator)
    wake_at = (await storage.load(saga_id)).wake_at

    outcome = await mediator.worker().recover(saga_id)

    assert outcome.status is SagaStatus.WAITING
    record = await storage.load(saga_id)
    assert (record.status, record.wake_at, record.lease_owner) == (
        SagaStatus.WAITING,
        wake_at,
        None,
    )
    journal = await storage.history(saga_id)
    assert wait_events(journal, "sleep:sleep-1") == [StepEvent.STARTED]
    assert all(entry.direction is StepDirection.ACT for entry in journal)


async def test_a_run_interrupted_after_taking_a_signal_hands_the_saga_back_at_that_wait(
    storage: MemorySagaStorage,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    # The signal was taken into the context but no write consumed it: handed back past the
    # wait, with the last written context, its payload would be lost.
    before_wait, after_wait = Gate(), Gate()
    saga = order_saga(
        before_wait.step("a", ledger),
        WaitForSignal("paid", into="payment"),
        Sleep(0),
        after_wait.step("b", ledger),
    )
    mediator = make_mediator(OrderContext, saga)
    saga_id = uuid.uuid4()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(mediator.run, OrderContext(), saga_id)
            await before_wait.started.wait()
            await mediator.signal(saga_id, "paid", {"amount": 4}, signal_id="p")
            before_wait.release.set()
            await after_wait.started.wait()  # the signal is taken, b runs
            tg.cancel_scope.cancel()

    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.next_step) == (
        SagaStatus.RUNNING,
        1,
        "signal:paid",
    )
    assert [s.signal_id for s in record.signals] == ["p"]  # still pending: taken again

    after_wait.release.set()
    report = await mediator.worker().run_once()

    assert report == RecoveryReport(claimed=1, completed=1)
    record = await storage.load(saga_id)
    assert (record.status, record.signals) == (SagaStatus.COMPLETED, ())
    assert mediator.stored_context(record).payment == Payment(amount=4)
    assert ledger == ["act:a", "act:b", "act:b"]
