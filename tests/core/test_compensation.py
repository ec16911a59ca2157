"""Rolling back: invariant 4 (every step that may have had an effect is compensated, in reverse
order) and invariant 6 (an exhausted compensation ends FAILED, visibly, and stays recoverable)."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from saga_core import (
    InvalidStepResultError,
    MemorySagaStorage,
    RetryPolicy,
    Saga,
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaContext,
    SagaContextError,
    SagaFailedError,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaStepResult,
    StepDirection,
    StepEvent,
    StorageUnavailableError,
    recover_saga,
)
from saga_core.storage import Checkpoint

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]

ACT = StepDirection.ACT
COMPENSATE = StepDirection.COMPENSATE
LEASE = 30.0


def quick_retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial_delay=0, jitter=0)


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"
    amount: int = 0


async def collect(
    mediator: SagaMediator, context: Any, saga_id: uuid.UUID, into: list[SagaStepResult[Any, Any]]
) -> None:
    """Run the stream, keeping every result yielded before it raises."""
    async for result in mediator.stream(context, saga_id=saga_id):
        into.append(result)  # noqa: PERF401 - keep what came before the raise


def summary(results: list[SagaStepResult[Any, Any]]) -> list[tuple[str, str, bool]]:
    return [(r.step_id, r.direction.value, r.failed) for r in results]


# --- reverse order -------------------------------------------------------------------------------


async def test_steps_are_compensated_in_reverse_order_including_the_one_that_raised(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    d = make_step("d", act_fails=1)

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c"), d, make_step("e")]

    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError):
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), uuid.uuid4(), results)

    assert ledger == [
        "act:a",
        "act:b",
        "act:c",
        "act:d",
        "compensate:d",
        "compensate:c",
        "compensate:b",
        "compensate:a",
    ]
    assert summary(results) == [
        ("a", "act", False),
        ("b", "act", False),
        ("c", "act", False),
        ("d", "act", True),
        ("d", "compensate", False),
        ("c", "compensate", False),
        ("b", "compensate", False),
        ("a", "compensate", False),
    ]
    failed = results[3]
    assert failed.step_type is d
    assert failed.response is None
    assert isinstance(failed.error, ValueError)
    assert all(r.is_compensation for r in results[4:])


async def test_the_stream_ends_with_saga_compensated_error_caused_by_the_steps_error(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1)]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError) as caught:
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, results)

    error = caught.value
    assert isinstance(error, RuntimeError)
    assert isinstance(error, SagaFailedError)
    assert error.saga_id == saga_id
    assert error.__cause__ is results[1].error
    assert isinstance(error.__cause__, ValueError)
    assert "b.act failed" in str(error)
    assert str(saga_id) in str(error)
    assert results[-1].is_compensation  # raised only after the last compensation result


async def test_run_returns_a_compensated_outcome_instead_of_raising(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1)]

    context = OrderContext()
    outcome = await make_mediator(OrderContext, OrderSaga).run(context)

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, ValueError)
    assert str(outcome.error) == "b.act failed"
    assert outcome.context is context
    assert (await storage.load(outcome.saga_id)).status is SagaStatus.COMPENSATED


async def test_a_step_whose_failed_act_leaves_no_effect_is_not_compensated(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    clean_failure = make_step("c", act_fails=1, failed_act_leaves_no_effect=True)

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), clean_failure]

    outcome = await make_mediator(OrderContext, OrderSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger == ["act:a", "act:b", "act:c", "compensate:b", "compensate:a"]


async def test_a_step_declaring_no_effect_on_failure_is_compensated_once_its_act_succeeded(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a", failed_act_leaves_no_effect=True), make_step("b", act_fails=1)]

    await make_mediator(OrderContext, OrderSaga).run(OrderContext())

    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]


async def test_a_first_step_failing_with_no_effect_ends_compensated_with_nothing_to_undo(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
    checkpoints: list[Checkpoint],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a", act_fails=1, failed_act_leaves_no_effect=True), make_step("b")]

    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError):
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), uuid.uuid4(), results)

    assert ledger == ["act:a"]
    assert summary(results) == [("a", "act", True)]
    assert [c.status for c in checkpoints] == [SagaStatus.COMPENSATED]


# --- checkpoint failures -------------------------------------------------------------------------


async def test_a_step_whose_checkpoint_failed_is_compensated_too(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    fail_checkpoint: Callable[[int], None],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    fail_checkpoint(2)  # the checkpoint after b's act
    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError) as caught:
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, results)

    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    assert summary(results) == [
        ("a", "act", False),
        ("b", "act", True),
        ("b", "compensate", False),
        ("a", "compensate", False),
    ]
    assert isinstance(results[1].error, StorageUnavailableError)
    assert isinstance(caught.value.__cause__, StorageUnavailableError)
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert record.applied == ()


async def test_when_the_compensating_write_fails_too_the_saga_stays_running_for_recovery(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    fail_checkpoint: Callable[[int], None],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    fail_checkpoint(2)  # after b's act
    fail_checkpoint(3)  # the decision to compensate
    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(StorageUnavailableError):
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, results)

    assert ledger == ["act:a", "act:b"]  # nothing compensated
    assert summary(results) == [("a", "act", False)]
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.RUNNING
    assert record.cursor == 1  # b runs again on recovery
    assert record.applied == ("a", "b")  # b may have had an effect: it is not forgotten
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]

    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:b", "act:b", "act:c"]


async def test_when_storage_stays_down_the_saga_is_recoverable_once_its_lease_expires(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
    fail_checkpoint: Callable[[int], None],
    advance_clock: Callable[[float], None],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1), make_step("c")]

    for call in (2, 3, 4):  # the decision to compensate, then the lease release
        fail_checkpoint(call)
    saga_id = uuid.uuid4()
    mediator = make_mediator(OrderContext, OrderSaga, lease_seconds=LEASE)
    with pytest.raises(StorageUnavailableError):
        await mediator.run(OrderContext(), saga_id=saga_id)

    record = await storage.load(saga_id)
    assert ledger == ["act:a", "act:b"]
    assert (record.status, record.cursor, record.applied) == (SagaStatus.RUNNING, 1, ("a",))
    assert await storage.list_recoverable() == []  # the runner's lease still holds it
    advance_clock(LEASE + 1)
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]


# --- failed compensations ------------------------------------------------------------------------


async def test_an_exhausted_compensation_ends_failed_visibly_and_recovery_finishes_it(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    stubborn = make_step("b", compensate_fails=2, compensation_retry=quick_retry(2))

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), stubborn, make_step("c", act_fails=1)]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensationFailedError) as caught:
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, results)

    assert isinstance(caught.value, RuntimeError)
    assert caught.value.saga_id == saga_id
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value.__cause__) == "b.compensate failed"
    assert ledger == ["act:a", "act:b", "act:c", "compensate:c", "compensate:b", "compensate:b"]
    assert summary(results) == [
        ("a", "act", False),
        ("b", "act", False),
        ("c", "act", True),
        ("c", "compensate", False),
        ("b", "compensate", True),
    ]
    assert results[-1].attempt == 2

    record = await storage.load(saga_id)
    assert record.status is SagaStatus.FAILED
    assert record.applied == ("a", "b")  # a was not compensated, b is still to do
    assert record.error is not None
    assert "b" in record.error and "ValueError: b.compensate failed" in record.error
    history = await storage.history(saga_id)
    failures = [e for e in history if e.direction is COMPENSATE and e.event is StepEvent.FAILED]
    assert [(e.step_id, e.attempt) for e in failures] == [("b", 1), ("b", 2)]
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]

    with pytest.raises(SagaCompensatedError) as recovered:
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)

    assert isinstance(recovered.value, RuntimeError)
    assert ledger[-2:] == ["compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert record.applied == ()


async def test_a_failed_outcome_keeps_the_compensation_error_and_the_rollback_cause(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", compensate_fails=math.inf, compensation_retry=quick_retry(3)),
            make_step("b", act_fails=1),
        ]

    outcome = await make_mediator(OrderContext, OrderSaga).run(OrderContext())

    assert outcome.status is SagaStatus.FAILED
    error = outcome.error
    assert isinstance(error, SagaCompensationFailedError)
    assert isinstance(error.compensation_error, ValueError)
    assert str(error.compensation_error) == "a.compensate failed"
    assert error.__cause__ is error.compensation_error
    assert isinstance(error.trigger, ValueError)
    assert str(error.trigger) == "b.act failed"
    assert "ValueError: a.compensate failed" in str(error)
    assert "triggered by ValueError: b.act failed" in str(error)


async def test_the_raised_failure_names_the_rollback_cause_live_and_after_recovery(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", compensate_fails=math.inf, compensation_retry=quick_retry(2)),
            make_step("b", act_fails=1),
        ]

    saga_id = uuid.uuid4()
    with pytest.raises(SagaCompensationFailedError) as live:
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, [])
    assert str(live.value.trigger) == "b.act failed"
    assert "triggered by ValueError: b.act failed" in str(live.value)

    with pytest.raises(SagaCompensationFailedError) as recovered:
        await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    # This runner did not see the step fail: the cause comes from the stored record.
    assert recovered.value.trigger is None
    assert str(recovered.value.compensation_error) == "a.compensate failed"
    assert "triggered by ValueError: b.act failed" in str(recovered.value)


async def test_a_compensation_failing_again_in_recovery_stays_failed(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", compensate_fails=math.inf, compensation_retry=quick_retry(2)),
            make_step("b", act_fails=1),
        ]

    outcome = await make_mediator(OrderContext, OrderSaga).run(OrderContext())
    assert outcome.status is SagaStatus.FAILED

    with pytest.raises(SagaCompensationFailedError):
        await recover_saga(saga=OrderSaga, saga_id=outcome.saga_id, storage=storage)

    assert ledger.count("compensate:a") == 4  # 2 attempts live, 2 in recovery: no endless loop
    record = await storage.load(outcome.saga_id)
    assert record.status is SagaStatus.FAILED
    assert record.applied == ("a",)


# --- what counts as a failure --------------------------------------------------------------------


async def test_an_act_returning_something_else_than_a_response_fails_and_is_compensated(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    compensated: list[str] = []

    class ReturnsInt(SagaStepHandler[OrderContext, Any]):
        name = "returns-int"

        async def act(self, context: OrderContext) -> Any:
            return 42

        async def compensate(self, context: OrderContext) -> None:
            compensated.append(self.step_id)

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), ReturnsInt, make_step("c")]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError) as caught:
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, results)

    assert isinstance(caught.value.__cause__, InvalidStepResultError)
    assert "returned int" in str(caught.value.__cause__)
    assert isinstance(results[1].error, InvalidStepResultError)
    assert compensated == ["returns-int"]
    assert ledger == ["act:a", "compensate:a"]
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert record.error is not None and record.error.startswith("InvalidStepResultError")


async def test_a_step_that_leaves_the_context_unstorable_is_rolled_back(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    def corrupt(context: Any) -> None:
        context.amount = "a lot"

    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", change=lambda context: setattr(context, "amount", 5)),
            make_step("b", change=corrupt),
            make_step("c"),
        ]

    saga_id = uuid.uuid4()
    with pytest.raises(SagaCompensatedError) as caught:
        await collect(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id, [])

    assert isinstance(caught.value.__cause__, SagaContextError)
    assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert json.loads(record.context)["amount"] == 5  # the last storable context is kept


async def test_compensation_is_not_blocked_by_a_failed_step_that_left_the_context_unstorable(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class CorruptsThenFails(SagaStepHandler[OrderContext, None]):
        name = "b"

        async def act(self, context: OrderContext) -> None:
            context.amount = "a lot"  # type: ignore[assignment]
            raise ValueError("gave up")

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a"), CorruptsThenFails]

    outcome = await make_mediator(OrderContext, OrderSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, ValueError)
    assert ledger == ["act:a", "compensate:a"]
    record = await storage.load(outcome.saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert json.loads(record.context)["amount"] == 0


async def test_a_multi_line_cause_survives_a_failed_saga_and_its_recovery(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [
            make_step("a", compensate_fails=math.inf, compensation_retry=quick_retry(1)),
            make_step("b", act_fails=1, error=lambda text: ValueError(f"{text}\nline two")),
        ]

    outcome = await make_mediator(OrderContext, OrderSaga).run(OrderContext())
    assert outcome.status is SagaStatus.FAILED

    with pytest.raises(SagaCompensationFailedError) as recovered:
        await recover_saga(saga=OrderSaga, saga_id=outcome.saga_id, storage=storage)
    assert "triggered by ValueError: b.act failed\nline two" in str(recovered.value)
    record = await storage.load(outcome.saga_id)
    assert record.error is not None
    assert record.error.startswith("ValueError: b.act failed\nline two\ncompensation of a")
