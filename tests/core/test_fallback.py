"""``Fallback`` nodes: which branch runs, circuit breakers, and what a rollback compensates."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from saga_core import (
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    InvalidStepResultError,
    MemorySagaStorage,
    Response,
    RetryPolicy,
    Saga,
    SagaCompensatedError,
    SagaContext,
    SagaDefinitionError,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaStepResult,
    StepDirection,
    StepEvent,
)
from saga_core.storage import Checkpoint

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]
T = TypeVar("T")


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


class Shipped(Response):
    carrier: str


class FakeBreaker:
    """A circuit breaker (the ``CircuitBreaker`` protocol) that counts what it sees and can be
    opened by the test."""

    def __init__(self, *, is_open: bool = False) -> None:
        self.is_open = is_open
        self.calls: list[str] = []
        self.failures: list[str] = []

    async def call(self, step_id: str, action: Callable[[], Awaitable[T]]) -> T:
        self.calls.append(step_id)
        if self.is_open:
            raise CircuitOpenError(f"circuit for {step_id} is open")
        try:
            return await action()
        except Exception as exc:
            self.failures.append(f"{step_id}: {exc}")
            raise


class BrokenBreaker:
    """A breaker that fails by itself without calling the primary."""

    async def call(self, step_id: str, action: Callable[[], Awaitable[T]]) -> T:
        raise RuntimeError("breaker backend unreachable")


async def collect(
    mediator: SagaMediator, into: list[SagaStepResult[Any, Any]], saga_id: uuid.UUID | None = None
) -> None:
    async for result in mediator.stream(OrderContext(), saga_id=saga_id):
        into.append(result)  # noqa: PERF401 - keep what came before the raise


def quick_retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial_delay=0, jitter=0)


# --- which branch runs ---------------------------------------------------------------------------


async def test_when_the_primary_succeeds_the_fallback_is_not_called(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    primary = make_step("primary", response=Shipped(carrier="fast"))
    fallback = make_step("fallback", response=Shipped(carrier="slow"))

    class ShipSaga(Saga[OrderContext]):
        steps = [Fallback(step=primary, fallback=fallback), make_step("after")]

    results: list[SagaStepResult[Any, Any]] = []
    await collect(make_mediator(OrderContext, ShipSaga), results)

    assert ledger == ["act:primary", "act:after"]
    assert results[0].step_type is primary
    assert results[0].step_id == "primary"
    assert results[0].response == Shipped(carrier="fast")


async def test_when_the_primary_fails_the_fallback_runs_and_its_result_is_yielded(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    primary = make_step("primary", act_fails=1)
    fallback = make_step("fallback", response=Shipped(carrier="slow"))

    class ShipSaga(Saga[OrderContext]):
        steps = [Fallback(step=primary, fallback=fallback), make_step("after")]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    await collect(make_mediator(OrderContext, ShipSaga), results, saga_id)

    assert ledger == ["act:primary", "act:fallback", "act:after"]
    assert [(r.step_type, r.step_id, r.failed) for r in results] == [
        (fallback, "fallback", False),
        (results[1].step_type, "after", False),
    ]
    assert results[0].response == Shipped(carrier="slow")
    history = await storage.history(saga_id)
    assert [(e.step_id, e.event.value) for e in history][:4] == [
        ("primary", "started"),
        ("primary", "failed"),
        ("fallback", "started"),
        ("fallback", "completed"),
    ]
    assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED


async def test_the_primary_uses_its_retries_before_falling_back(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    primary = make_step("primary", act_fails=math.inf, retry=quick_retry(3))

    class ShipSaga(Saga[OrderContext]):
        steps = [Fallback(step=primary, fallback=make_step("fallback"))]

    outcome = await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:primary"] * 3 + ["act:fallback"]


async def test_the_branch_that_ran_is_recorded_in_the_checkpoint(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    checkpoints: list[Checkpoint],
) -> None:
    class ShipSaga(Saga[OrderContext]):
        steps = [
            make_step("a"),
            Fallback(step=make_step("primary", act_fails=1), fallback=make_step("fallback")),
            make_step("c"),
        ]

    await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert [(c.cursor, c.applied) for c in checkpoints] == [
        (1, ("a",)),
        (2, ("a", "primary", "fallback")),
        (3, ("a", "primary", "fallback", "c")),
    ]


@pytest.mark.parametrize(
    ("error", "falls_back"),
    [(ConnectionResetError, True), (ValueError, False)],
    ids=["listed-exception", "other-exception"],
)
async def test_only_the_listed_failure_exceptions_trigger_the_fallback(
    error: type[Exception],
    falls_back: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    primary = make_step("primary", act_fails=1, error=error)

    class ShipSaga(Saga[OrderContext]):
        steps = [
            make_step("a"),
            Fallback(
                step=primary,
                fallback=make_step("fallback"),
                failure_exceptions=(ConnectionError,),
            ),
        ]

    results: list[SagaStepResult[Any, Any]] = []
    if falls_back:
        await collect(make_mediator(OrderContext, ShipSaga), results)
        assert ledger == ["act:a", "act:primary", "act:fallback"]
        return
    with pytest.raises(SagaCompensatedError) as caught:
        await collect(make_mediator(OrderContext, ShipSaga), results)
    assert isinstance(caught.value.__cause__, ValueError)
    assert ledger == ["act:a", "act:primary", "compensate:primary", "compensate:a"]
    assert results[1].step_type is primary
    assert results[1].failed


# --- circuit breakers ----------------------------------------------------------------------------


async def test_a_closed_breaker_runs_the_primary_through_it(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    breaker = FakeBreaker()

    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(
                step=make_step("primary"), fallback=make_step("fallback"), circuit_breaker=breaker
            )
        ]

    outcome = await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert breaker.calls == ["primary"]
    assert breaker.failures == []
    assert ledger == ["act:primary"]


async def test_the_breaker_counts_a_failed_primary_and_the_fallback_runs(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    breaker = FakeBreaker()

    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(
                step=make_step("primary", act_fails=1),
                fallback=make_step("fallback"),
                circuit_breaker=breaker,
            )
        ]

    outcome = await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert breaker.failures == ["primary: primary.act failed"]
    assert ledger == ["act:primary", "act:fallback"]


async def test_a_primary_that_returns_an_invalid_result_is_no_breaker_failure(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    # The act reached its service and returned: the breaker counts a success, and the saga
    # compensates the step (its effect is done) without running the fallback.
    breaker = FakeBreaker()
    garbage: Any = 42

    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(
                step=make_step("primary", response=garbage),
                fallback=make_step("fallback"),
                circuit_breaker=breaker,
            )
        ]

    outcome = await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, InvalidStepResultError)
    assert breaker.calls == ["primary"]
    assert breaker.failures == []
    assert ledger == ["act:primary", "compensate:primary"]


async def test_an_open_breaker_skips_the_primary(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    breaker = FakeBreaker(is_open=True)
    fallback = make_step("fallback")

    class ShipSaga(Saga[OrderContext]):
        steps = [Fallback(step=make_step("primary"), fallback=fallback, circuit_breaker=breaker)]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    await collect(make_mediator(OrderContext, ShipSaga), results, saga_id)

    assert breaker.calls == ["primary"]
    assert ledger == ["act:fallback"]
    assert results[0].step_type is fallback
    history = await storage.history(saga_id)
    [skipped] = [e for e in history if e.step_id == "primary"]
    assert (skipped.event, skipped.attempt) == (StepEvent.FAILED, 0)
    assert skipped.error is not None and skipped.error.startswith("CircuitOpenError")


async def test_a_breaker_that_fails_by_itself_counts_as_a_primary_that_never_ran(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(
                step=make_step("primary"),
                fallback=make_step("fallback"),
                circuit_breaker=BrokenBreaker(),
            ),
            make_step("c", act_fails=1),
        ]

    outcome = await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger == ["act:fallback", "act:c", "compensate:c", "compensate:fallback"]


# --- rollback ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primary_options", "breaker_open", "primary_compensated"),
    [
        ({}, False, True),
        ({"failed_act_leaves_no_effect": True}, False, False),
        ({}, True, False),
    ],
    ids=["primary-raised", "primary-declares-no-effect", "breaker-open"],
)
async def test_a_later_failure_compensates_the_branch_that_ran_and_a_primary_that_raised(
    primary_options: dict[str, Any],
    breaker_open: bool,
    primary_compensated: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    ledger: list[str],
) -> None:
    primary = make_step("primary", act_fails=1, **primary_options)

    class ShipSaga(Saga[OrderContext]):
        steps = [
            make_step("a"),
            Fallback(
                step=primary,
                fallback=make_step("fallback"),
                circuit_breaker=FakeBreaker(is_open=breaker_open),
            ),
            make_step("c", act_fails=1),
        ]

    with pytest.raises(SagaCompensatedError):
        await collect(make_mediator(OrderContext, ShipSaga), [])

    undone = [entry for entry in ledger if entry.startswith("compensate:")]
    expected = ["compensate:c", "compensate:fallback"]
    if primary_compensated:
        expected.append("compensate:primary")
    assert undone == [*expected, "compensate:a"]


async def test_a_primary_that_succeeded_is_compensated_and_the_fallback_is_not(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    class ShipSaga(Saga[OrderContext]):
        steps = [
            Fallback(step=make_step("primary"), fallback=make_step("fallback")),
            make_step("c", act_fails=1),
        ]

    await make_mediator(OrderContext, ShipSaga).run(OrderContext())

    assert ledger == ["act:primary", "act:c", "compensate:c", "compensate:primary"]


async def test_when_both_branches_fail_the_saga_compensates_both(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    fallback = make_step("fallback", act_fails=1, error=ConnectionError)

    class ShipSaga(Saga[OrderContext]):
        steps = [
            make_step("a"),
            Fallback(step=make_step("primary", act_fails=1), fallback=fallback),
            make_step("c"),
        ]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError) as caught:
        await collect(make_mediator(OrderContext, ShipSaga), results, saga_id)

    assert isinstance(caught.value.__cause__, ConnectionError)
    assert results[1].step_type is fallback
    assert results[1].failed
    assert ledger == [
        "act:a",
        "act:primary",
        "act:fallback",
        "compensate:fallback",
        "compensate:primary",
        "compensate:a",
    ]
    history = await storage.history(saga_id)
    failures = [
        (e.step_id, e.error)
        for e in history
        if e.direction is StepDirection.ACT and e.event is StepEvent.FAILED
    ]
    assert failures == [
        ("primary", "ValueError: primary.act failed"),
        ("fallback", "ConnectionError: fallback.act failed"),
    ]
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


# --- validation ----------------------------------------------------------------------------------


class Primary(SagaStepHandler[OrderContext, None]):
    async def act(self, context: OrderContext) -> None:
        return None


class Secondary(SagaStepHandler[OrderContext, None]):
    async def act(self, context: OrderContext) -> None:
        return None


class WithoutAct(SagaStepHandler[OrderContext, None]):
    pass


def test_fallback_rejects_the_same_class_for_both_branches() -> None:
    with pytest.raises(SagaDefinitionError, match="same class"):
        Fallback(step=Primary, fallback=Primary)


@pytest.mark.parametrize("role", ["step", "fallback"])
@pytest.mark.parametrize(
    "bad", [42, Primary(), WithoutAct, object], ids=["int", "instance", "no-act", "object"]
)
def test_fallback_rejects_a_branch_that_is_not_a_step_class(role: str, bad: Any) -> None:
    kwargs: dict[str, Any] = {"step": Primary, "fallback": Secondary, role: bad}
    with pytest.raises(SagaDefinitionError, match=rf"Fallback\({role}=\.\.\.\)"):
        Fallback(**kwargs)


@pytest.mark.parametrize("bad", [object(), "breaker", 3], ids=["object", "str", "int"])
def test_fallback_rejects_a_breaker_without_a_call_method(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="CircuitBreaker protocol"):
        Fallback(step=Primary, fallback=Secondary, circuit_breaker=bad)


def test_fallback_rejects_a_breaker_class_instead_of_an_instance() -> None:
    with pytest.raises(SagaDefinitionError, match="instance"):
        Fallback(step=Primary, fallback=Secondary, circuit_breaker=FakeBreaker)  # type: ignore[arg-type]


async def test_a_breaker_class_passed_by_mistake_never_silently_skips_the_primary(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    """Either the definition is refused, or the primary runs."""
    try:
        node = Fallback(
            step=make_step("primary"),
            fallback=make_step("fallback"),
            circuit_breaker=FakeBreaker,  # type: ignore[arg-type]
        )
    except SagaDefinitionError:
        return

    class ShipSaga(Saga[OrderContext]):
        steps = [node]

    await make_mediator(OrderContext, ShipSaga).run(OrderContext())
    assert ledger == ["act:primary"]


def test_fake_breakers_implement_the_circuit_breaker_protocol() -> None:
    assert isinstance(FakeBreaker(), CircuitBreaker)
    assert isinstance(BrokenBreaker(), CircuitBreaker)


@pytest.mark.parametrize(
    "bad",
    [[ValueError], (ValueError, "KeyError"), (KeyboardInterrupt,), ValueError],
    ids=["list", "non-class", "base-exception", "bare-class"],
)
def test_fallback_rejects_failure_exceptions_that_are_not_a_tuple_of_exceptions(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="failure_exceptions"):
        Fallback(step=Primary, fallback=Secondary, failure_exceptions=bad)


def test_a_valid_fallback_is_accepted_in_a_saga() -> None:
    breaker = FakeBreaker()

    class ShipSaga(Saga[OrderContext]):
        steps = [Fallback(step=Primary, fallback=Secondary, circuit_breaker=breaker)]

    [node] = ShipSaga.definition().nodes
    assert node.step_ids == (Primary.step_id, Secondary.step_id)
    assert node.breaker is breaker
