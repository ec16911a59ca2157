"""Concurrency and interruption: invariant 3 (fencing: a second runner is refused and never
overwrites a newer state; terminal states are final) and invariant 5 (cancellation never leaves a
step half-compensated; cancelling an act leaves the saga RUNNING for recovery)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    Saga,
    SagaAlreadyExistsError,
    SagaCompensatedError,
    SagaConcurrencyError,
    SagaContext,
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaMediator,
    SagaOutcome,
    SagaStatus,
    SagaStepHandler,
    SagaVersionConflictError,
    StepDirection,
    StepEvent,
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


def generator(stream: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """The stream as the async generator it is (``SagaMediator.stream`` is annotated as an
    ``AsyncIterator``), so that ``aclosing`` can finalise it deterministically."""
    assert isinstance(stream, AsyncGenerator)
    return stream


class Shutdown(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt or SystemExit (which
    cannot be raised inside an event loop under test without stopping pytest itself)."""


class Gate:
    """Lets a test hold a step call until it says so: ``entered`` is set when the first call
    starts, and the call waits for ``release``."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def hold_first_call(self) -> bool:
        """Block the first caller until released; return whether this was the first call."""
        if self.entered.is_set():
            return False
        self.entered.set()
        await self.release.wait()
        return True


def blocking_step(name: str, gate: Gate, ledger: list[str], *, then_fail: bool = False) -> Any:
    """A step whose first act blocks on ``gate`` (then raises when ``then_fail``)."""

    class Blocking(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            ledger.append(f"act:{name}")
            first = await gate.hold_first_call()
            if first and then_fail:
                raise ValueError(f"{name}.act failed")

        async def compensate(self, context: OrderContext) -> None:
            ledger.append(f"compensate:{name}")

    Blocking.name = name
    Blocking.step_id = name
    return Blocking


# --- duplicate runners ---------------------------------------------------------------------------


@pytest.mark.parametrize("same_mediator", [True, False], ids=["same-mediator", "other-process"])
async def test_a_duplicate_stream_of_a_running_saga_is_refused_before_any_step_runs(
    same_mediator: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    gate = Gate()

    class OrderSaga(Saga[OrderContext]):
        steps = [blocking_step("a", gate, ledger), make_step("b")]

    first_mediator = make_mediator(OrderContext, OrderSaga, owner="first")
    second_mediator = (
        first_mediator if same_mediator else make_mediator(OrderContext, OrderSaga, owner="second")
    )
    saga_id = uuid.uuid4()
    outcomes: list[SagaOutcome[Any]] = []

    async def run_first() -> None:
        outcomes.append(await first_mediator.run(OrderContext(), saga_id=saga_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_first)
        await gate.entered.wait()
        with pytest.raises(SagaAlreadyExistsError) as caught:
            async for _ in second_mediator.stream(OrderContext(order_id="dup"), saga_id=saga_id):
                pytest.fail("the duplicate run yielded a result")
        gate.release.set()

    assert isinstance(caught.value, SagaConcurrencyError)
    assert "recover_saga" in str(caught.value)
    assert ledger == ["act:a", "act:b"]  # each step ran once, by the first runner
    assert [o.status for o in outcomes] == [SagaStatus.COMPLETED]


async def test_starting_a_finished_saga_again_is_refused_and_leaves_it_untouched(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    mediator = make_mediator(OrderContext, OrderSaga)
    outcome = await mediator.run(OrderContext())
    before = await storage.load(outcome.saga_id)

    with pytest.raises(SagaAlreadyExistsError):
        await mediator.run(OrderContext(order_id="again"), saga_id=outcome.saga_id)

    assert await storage.load(outcome.saga_id) == before
    assert ledger == ["act:a"]


# --- fencing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("step_fails", [False, True], ids=["act-succeeds", "act-fails"])
async def test_a_stale_runner_is_fenced_at_its_next_checkpoint_and_writes_nothing_more(
    step_fails: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    advance_clock: Callable[[float], None],
) -> None:
    gate = Gate()

    class OrderSaga(Saga[OrderContext]):
        steps = [blocking_step("a", gate, ledger, then_fail=step_fails), make_step("b")]

    mediator = make_mediator(OrderContext, OrderSaga, owner="stale", lease_seconds=LEASE)
    saga_id = uuid.uuid4()
    raised: list[BaseException] = []

    async def run_stale() -> None:
        try:
            async for _ in mediator.stream(OrderContext(), saga_id=saga_id):
                pass
        except SagaConcurrencyError as exc:
            raised.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_stale)
        await gate.entered.wait()
        advance_clock(LEASE + 1)
        claimed = await storage.claim(saga_id, owner="recoverer", lease_seconds=LEASE)
        writes = storage.write_count
        gate.release.set()

    assert [type(e) for e in raised] == [SagaVersionConflictError]
    assert storage.write_count == writes  # not the checkpoint, not a lease release
    assert await storage.load(saga_id) == claimed
    assert ledger == ["act:a"]  # no further step, and no compensation by the fenced runner


async def test_a_stale_runner_cannot_overwrite_a_saga_that_recovery_completed(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    advance_clock: Callable[[float], None],
) -> None:
    gate = Gate()

    class OrderSaga(Saga[OrderContext]):
        steps = [blocking_step("a", gate, ledger), make_step("b")]

    mediator = make_mediator(OrderContext, OrderSaga, owner="stale", lease_seconds=LEASE)
    saga_id = uuid.uuid4()
    raised: list[BaseException] = []

    async def run_stale() -> None:
        try:
            await mediator.run(OrderContext(), saga_id=saga_id)
        except SagaConcurrencyError as exc:
            raised.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_stale)
        await gate.entered.wait()
        advance_clock(LEASE + 1)
        recovered = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
        completed = await storage.load(saga_id)
        gate.release.set()

    assert recovered.status is SagaStatus.COMPLETED
    assert [type(e) for e in raised] == [SagaFinishedError]
    assert await storage.load(saga_id) == completed
    assert completed.status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:a", "act:b"]


async def test_a_second_recovery_worker_is_refused_while_the_first_holds_the_lease(
    make_step: StepFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    advance_clock: Callable[[float], None],
) -> None:
    gate = Gate()

    class OrderSaga(Saga[OrderContext]):
        steps = [blocking_step("a", gate, ledger), make_step("b")]

    # A saga whose runner died before its first checkpoint, its lease since expired.
    saga_id = uuid.uuid4()
    context = codec_for(OrderContext).encode(OrderContext())
    await storage.create(NewSaga(saga_id, OrderSaga.definition().name, context, "dead", LEASE))
    advance_clock(LEASE + 1)
    outcomes: list[SagaOutcome[Any]] = []

    async def first_worker() -> None:
        outcomes.append(
            await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage, owner="w1")
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_worker)
        await gate.entered.wait()
        writes = storage.write_count
        with pytest.raises(SagaLeaseHeldError):
            await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage, owner="w2")
        assert storage.write_count == writes
        gate.release.set()

    assert ledger == ["act:a", "act:b"]  # the refused worker ran nothing
    assert [o.status for o in outcomes] == [SagaStatus.COMPLETED]


async def test_terminal_sagas_are_never_written_again(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class DoneSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    class RolledBackSaga(Saga[OrderContext]):
        name = "rolled-back"
        steps = [make_step("b", act_fails=1)]

    completed = await make_mediator(OrderContext, DoneSaga).run(OrderContext())
    rolled_back = await make_mediator(OrderContext, RolledBackSaga).run(OrderContext())
    assert rolled_back.status is SagaStatus.COMPENSATED
    compensated = rolled_back.saga_id
    for saga_id in (completed.saga_id, compensated):
        before = await storage.load(saga_id)
        with pytest.raises(SagaFinishedError):
            await storage.checkpoint(
                Checkpoint(
                    saga_id,
                    before.version,
                    SagaStatus.RUNNING,
                    0,
                    (),
                    before.context,
                    [],
                )
            )
        with pytest.raises(SagaFinishedError):
            await storage.claim(saga_id, owner="someone", lease_seconds=LEASE)
        assert await storage.load(saga_id) == before


# --- cancellation --------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["stream", "run"])
async def test_cancelling_during_act_leaves_the_saga_running_released_and_uncompensated(
    api: str,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    gate = Gate()

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), blocking_step("b", gate, ledger), make_step("c")]

    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    saga_id = uuid.uuid4()

    async def consume() -> None:
        if api == "run":
            await mediator.run(OrderContext(), saga_id=saga_id)
            return
        async with aclosing(generator(mediator.stream(OrderContext(), saga_id=saga_id))) as stream:
            async for _ in stream:
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await gate.entered.wait()
        tg.cancel_scope.cancel()

    assert ledger == ["act:a", "act:b"]  # not a failure: nothing compensated
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.RUNNING
    assert record.cursor == 1
    assert record.lease_owner is None
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]
    history = await storage.history(saga_id)
    assert not [e for e in history if e.event is StepEvent.FAILED]

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:b", "act:b", "act:c"]


async def test_cancelling_during_compensation_finishes_the_running_compensation_only(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    gate = Gate()

    class SlowUndo(SagaStepHandler[OrderContext, None]):
        name = "b"

        async def act(self, context: OrderContext) -> None:
            ledger.append("act:b")

        async def compensate(self, context: OrderContext) -> None:
            ledger.append("compensate:b")
            await gate.hold_first_call()
            ledger.append("compensated:b")

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), SlowUndo, make_step("c", act_fails=1)]

    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    saga_id = uuid.uuid4()

    async def consume() -> None:
        async with aclosing(generator(mediator.stream(OrderContext(), saga_id=saga_id))) as stream:
            async for _ in stream:
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await gate.entered.wait()
        tg.cancel_scope.cancel()
        gate.release.set()

    assert ledger == ["act:a", "act:b", "act:c", "compensate:c", "compensate:b", "compensated:b"]
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATING
    assert record.applied == ("a",)  # b's compensation was checkpointed; a is left to do
    assert record.lease_owner is None
    history = await storage.history(saga_id)
    assert (
        "b",
        StepDirection.COMPENSATE,
        StepEvent.COMPLETED,
    ) in [(e.step_id, e.direction, e.event) for e in history]
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]

    with pytest.raises(SagaCompensatedError):
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert ledger[-1] == "compensate:a"
    assert ledger.count("compensate:b") == 1
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


async def test_breaking_out_of_the_stream_leaves_the_saga_running_and_recoverable(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    saga_id = uuid.uuid4()
    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    async with aclosing(generator(mediator.stream(OrderContext(), saga_id=saga_id))) as stream:
        async for result in stream:
            if result.step_id == "a":
                break

    assert ledger == ["act:a"]
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.lease_owner) == (SagaStatus.RUNNING, 1, None)
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:b", "act:c"]


async def test_breaking_out_during_compensation_leaves_the_rest_to_recovery(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c", act_fails=1)]

    saga_id = uuid.uuid4()
    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    async with aclosing(generator(mediator.stream(OrderContext(), saga_id=saga_id))) as stream:
        async for result in stream:
            if result.is_compensation:
                break

    assert ledger == ["act:a", "act:b", "act:c", "compensate:c"]
    record = await storage.load(saga_id)
    assert (record.status, record.applied, record.lease_owner) == (
        SagaStatus.COMPENSATING,
        ("a", "b"),
        None,
    )

    with pytest.raises(SagaCompensatedError):
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert ledger[4:] == ["compensate:b", "compensate:a"]


async def test_a_base_exception_in_act_is_not_treated_as_a_step_failure(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class Interrupted(SagaStepHandler[OrderContext, None]):
        name = "interrupted"

        async def act(self, context: OrderContext) -> None:
            raise Shutdown

        async def compensate(self, context: OrderContext) -> None:
            ledger.append("compensate:interrupted")

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), Interrupted, make_step("c")]

    saga_id = uuid.uuid4()
    with pytest.raises(Shutdown):
        async for _ in make_mediator(OrderContext, OrderSaga).stream(
            OrderContext(), saga_id=saga_id
        ):
            pass

    assert ledger == ["act:a"]
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.error) == (SagaStatus.RUNNING, 1, None)
    history = await storage.history(saga_id)
    assert not [e for e in history if e.event is StepEvent.FAILED]
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]


# --- leases and concurrent sagas -----------------------------------------------------------------


async def test_each_checkpoint_renews_the_runners_lease(
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    advance_clock: Callable[[float], None],
) -> None:
    recoverable_during_steps: list[int] = []

    class SlowStep(SagaStepHandler[OrderContext, None]):
        """Each step takes most of a lease; the saga as a whole takes several leases."""

        async def act(self, context: OrderContext) -> None:
            advance_clock(LEASE * 0.8)
            recoverable_during_steps.append(len(await storage.list_recoverable()))

    slow_steps = [type(f"Slow{i}", (SlowStep,), {"name": f"slow-{i}"}) for i in range(4)]

    class LongSaga(Saga[OrderContext]):
        steps = slow_steps

    mediator = make_mediator(OrderContext, LongSaga, lease_seconds=LEASE)
    outcome = await mediator.run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert recoverable_during_steps == [0, 0, 0, 0]


async def test_many_sagas_run_concurrently_on_one_mediator_without_interfering(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    mediator = make_mediator(OrderContext, OrderSaga)
    outcomes: list[SagaOutcome[Any]] = []

    async def run_one(index: int) -> None:
        outcomes.append(await mediator.run(OrderContext(order_id=f"o-{index}")))

    async with anyio.create_task_group() as tg:
        for index in range(20):
            tg.start_soon(run_one, index)

    assert len(outcomes) == 20
    assert {o.status for o in outcomes} == {SagaStatus.COMPLETED}
    assert len({o.saga_id for o in outcomes}) == 20
    assert storage.write_count == 20 * 4
    assert sorted(ledger) == sorted(["act:a", "act:b", "act:c"] * 20)
    for outcome in outcomes:
        record = await storage.load(outcome.saga_id)
        assert json.loads(record.context) == {"order_id": outcome.context.order_id}
