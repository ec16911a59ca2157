"""Running sagas forward: results, outcomes, the state machine as stored, checkpoints (invariants
1 and 2), the journal, idempotency keys, retries, timeouts and observers."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    Response,
    RetryPolicy,
    Saga,
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaContext,
    SagaContextError,
    SagaMap,
    SagaMediator,
    SagaNotRegisteredError,
    SagaObserver,
    SagaOutcome,
    SagaRecord,
    SagaStatus,
    SagaStepHandler,
    SagaStepResult,
    StepDirection,
    StepEvent,
    recover_saga,
)
from saga_core.storage import Checkpoint, NewSaga

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]

ACT = StepDirection.ACT
COMPENSATE = StepDirection.COMPENSATE


def quick_retry(attempts: int, **kwargs: Any) -> RetryPolicy:
    """A retry policy that does not wait between attempts."""
    return RetryPolicy(attempts=attempts, initial_delay=0, jitter=0, **kwargs)


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"
    amount: int = 0
    trail: list[str] = dataclasses.field(default_factory=list)


class Reserved(Response):
    reservation_id: str


class Crash(BaseException):
    """Stands in for the process dying in the middle of a step (not an ``Exception``)."""


def add_to_trail(label: str) -> Callable[[Any], None]:
    def change(context: Any) -> None:
        context.trail.append(label)
        context.amount += 10

    return change


async def drain(
    mediator: SagaMediator, context: Any, saga_id: uuid.UUID | None = None
) -> list[SagaStepResult[Any, Any]]:
    """Collect every result of a stream that ends normally."""
    return [result async for result in mediator.stream(context, saga_id=saga_id)]


def journal_summary(entries: list[Any]) -> list[tuple[str, str, str, int]]:
    return [(e.step_id, e.direction.value, e.event.value, e.attempt) for e in entries]


# --- results and outcomes ------------------------------------------------------------------------


async def test_stream_yields_one_forward_result_per_step_with_its_identity(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    reserve = make_step("reserve", response=Reserved(reservation_id="r-1"))
    charge = make_step("charge")
    ship = make_step("ship", response=Response())

    class OrderSaga(Saga[OrderContext]):
        steps = [reserve, charge, ship]

    saga_id = uuid.uuid4()
    results = await drain(make_mediator(OrderContext, OrderSaga), OrderContext(), saga_id)

    assert [r.step_type for r in results] == [reserve, charge, ship]
    assert [r.step_id for r in results] == ["reserve", "charge", "ship"]
    assert [r.response for r in results] == [Reserved(reservation_id="r-1"), None, Response()]
    for result in results:
        assert result.saga_id == saga_id
        assert result.direction is ACT
        assert not result.is_compensation
        assert result.error is None
        assert not result.failed
        assert result.attempt == 1


async def test_act_may_return_a_step_result_a_bare_response_or_none(
    make_mediator: MediatorFactory,
) -> None:
    class Wrapped(SagaStepHandler[OrderContext, Reserved]):
        async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Reserved]:
            return self._generate_step_result(Reserved(reservation_id="wrapped"))

    class Bare(SagaStepHandler[OrderContext, Reserved]):
        async def act(self, context: OrderContext) -> Reserved:
            return Reserved(reservation_id="bare")

    class Nothing(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            return None

    class ReturnSaga(Saga[OrderContext]):
        steps = [Wrapped, Bare, Nothing]

    saga_id = uuid.uuid4()
    results = await drain(make_mediator(OrderContext, ReturnSaga), OrderContext(), saga_id)

    assert [r.response for r in results] == [
        Reserved(reservation_id="wrapped"),
        Reserved(reservation_id="bare"),
        None,
    ]
    assert [r.step_type for r in results] == [Wrapped, Bare, Nothing]
    assert [r.step_id for r in results] == [Wrapped.step_id, Bare.step_id, Nothing.step_id]
    assert all(r.saga_id == saga_id and r.direction is ACT for r in results)


class TaggedResult(SagaStepResult[OrderContext, Reserved]):
    """A step's own result class (a subclass of SagaStepResult)."""


async def test_every_field_of_a_forward_result_is_set_whatever_act_returned(
    make_mediator: MediatorFactory,
) -> None:
    class Wrapped(SagaStepHandler[OrderContext, Reserved]):
        async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Reserved]:
            return self._generate_step_result(Reserved(reservation_id="w"))

    class Subclassed(SagaStepHandler[OrderContext, Reserved]):
        async def act(self, context: OrderContext) -> SagaStepResult[OrderContext, Reserved]:
            return TaggedResult(Subclassed, Reserved(reservation_id="s"), error=ValueError())

    class Bare(SagaStepHandler[OrderContext, Reserved]):
        async def act(self, context: OrderContext) -> Reserved:
            return Reserved(reservation_id="b")

    class Nothing(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            return None

    class FieldsSaga(Saga[OrderContext]):
        steps = [Wrapped, Subclassed, Bare, Nothing]

    saga_id = uuid.uuid4()
    results = await drain(make_mediator(OrderContext, FieldsSaga), OrderContext(), saga_id)

    expected: list[tuple[type[SagaStepHandler[Any, Any]], Any]] = [
        (Wrapped, Reserved(reservation_id="w")),
        (Subclassed, Reserved(reservation_id="s")),
        (Bare, Reserved(reservation_id="b")),
        (Nothing, None),
    ]
    assert len(results) == len(expected)
    for result, (step, response) in zip(results, expected, strict=True):
        # Every dataclass field is readable (none left unset) and holds the forward values.
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        assert fields == {
            "step_type": step,
            "response": response,
            "saga_id": saga_id,
            "step_id": step.step_id,
            "direction": ACT,
            "error": None,
            "attempt": 1,
        }
    assert type(results[1]) is TaggedResult


async def test_generated_saga_ids_are_random_version_4_uuids_like_any_other(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    mediator = make_mediator(OrderContext, OrderSaga)
    ids = [(await mediator.run(OrderContext())).saga_id for _ in range(300)]

    assert len(set(ids)) == len(ids)
    for saga_id in ids:
        assert type(saga_id) is uuid.UUID
        same = uuid.UUID(str(saga_id))
        assert saga_id == same and hash(saga_id) == hash(same) and saga_id.int == same.int
        assert (saga_id.version, saga_id.variant) == (4, uuid.RFC_4122)
        assert saga_id.is_safe is uuid.SafeUUID.unknown
        assert pickle.loads(pickle.dumps(saga_id)) == saga_id
        assert copy.deepcopy(saga_id) == saga_id


async def test_a_context_type_bound_after_the_first_run_is_found(
    make_step: StepFactory, storage: MemorySagaStorage
) -> None:
    """The mediator remembers each context type's saga; a type bound later is still found,
    and an unbound type is refused every time."""

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    @dataclasses.dataclass
    class Later(SagaContext):
        n: int = 0

    class LaterSaga(Saga[Later]):
        steps = [make_step("b")]

    saga_map = SagaMap()
    saga_map.bind(OrderContext, OrderSaga)
    mediator = SagaMediator(saga_map, storage)
    assert (await mediator.run(OrderContext())).status is SagaStatus.COMPLETED
    for _ in range(2):
        with pytest.raises(SagaNotRegisteredError):
            await mediator.run(Later())
    saga_map.bind(Later, LaterSaga)
    outcome = await mediator.run(Later())
    assert (outcome.status, (await storage.load(outcome.saga_id)).saga_name) == (
        SagaStatus.COMPLETED,
        LaterSaga.definition().name,
    )


async def test_run_returns_the_outcome_of_a_completed_saga(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a", change=add_to_trail("a")), make_step("b")]

    context = OrderContext()
    saga_id = uuid.uuid4()
    outcome = await make_mediator(OrderContext, OrderSaga).run(context, saga_id=saga_id)

    assert isinstance(outcome, SagaOutcome)
    assert outcome == SagaOutcome(saga_id, SagaStatus.COMPLETED, context, None)
    assert outcome.context.trail == ["a"]


async def test_a_saga_id_is_generated_when_none_is_given(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    mediator = make_mediator(OrderContext, OrderSaga)
    first = await mediator.run(OrderContext())
    second = await mediator.run(OrderContext())

    assert first.saga_id != second.saga_id
    assert first.saga_id.version == 4
    assert (await storage.load(first.saga_id)).status is SagaStatus.COMPLETED


async def test_a_context_with_no_bound_saga_is_refused_before_anything_is_stored(
    make_step: StepFactory, make_mediator: MediatorFactory, creates: list[NewSaga]
) -> None:
    @dataclasses.dataclass
    class Unbound(SagaContext):
        x: int = 0

    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    with pytest.raises(SagaNotRegisteredError, match="Unbound"):
        await make_mediator(OrderContext, OrderSaga).run(Unbound())
    assert creates == []


async def test_an_unstorable_context_value_is_refused_before_any_step_runs(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    creates: list[NewSaga],
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[OrderContext]):
        steps = [make_step("a")]

    bad = OrderContext(amount="ten")  # type: ignore[arg-type]
    with pytest.raises(SagaContextError, match="amount"):
        async for _ in make_mediator(OrderContext, OrderSaga).stream(bad):
            pass
    assert creates == []
    assert ledger == []


# --- invariant 2: n + 1 writes -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 5])
async def test_a_successful_saga_of_n_steps_costs_exactly_n_plus_one_writes(
    n: int,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    creates: list[NewSaga],
    checkpoints: list[Checkpoint],
) -> None:
    class NSaga(Saga[OrderContext]):
        steps = [make_step(f"s{i}", change=add_to_trail(f"s{i}")) for i in range(n)]

    outcome = await make_mediator(OrderContext, NSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert len(creates) + len(checkpoints) == n + 1
    assert storage.write_count == n + 1
    assert [c.status for c in checkpoints] == [SagaStatus.RUNNING] * (n - 1) + [
        SagaStatus.COMPLETED
    ]
    assert [c.cursor for c in checkpoints] == list(range(1, n + 1))
    assert [c.expected_version for c in checkpoints] == list(range(1, n + 1))
    assert (await storage.load(outcome.saga_id)).version == n + 1


async def test_retries_do_not_add_writes(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    creates: list[NewSaga],
    checkpoints: list[Checkpoint],
) -> None:
    class RetrySaga(Saga[OrderContext]):
        steps = [make_step("a", act_fails=2, retry=quick_retry(3)), make_step("b")]

    outcome = await make_mediator(OrderContext, RetrySaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPLETED
    assert len(creates) + len(checkpoints) == 3


# --- invariant 1: durable before effect ----------------------------------------------------------


async def test_the_saga_is_stored_running_before_its_first_act_runs(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    seen: list[SagaRecord] = []

    class LooksFirst(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            seen.append(await storage.load(self.saga_id))

    class FirstSaga(Saga[OrderContext]):
        steps = [LooksFirst]

    saga_id = uuid.uuid4()
    mediator = make_mediator(OrderContext, FirstSaga, owner="runner-1")
    await mediator.run(OrderContext(order_id="o-42"), saga_id=saga_id)

    [record] = seen
    assert record.saga_id == saga_id
    assert record.saga_name == FirstSaga.definition().name
    assert record.status is SagaStatus.RUNNING
    assert record.cursor == 0
    assert record.version == 1
    assert record.lease_owner == "runner-1"
    assert json.loads(record.context)["order_id"] == "o-42"


async def test_compensating_is_durable_before_the_first_compensation_runs(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    seen: list[SagaRecord] = []

    class FailsAndLooks(SagaStepHandler[OrderContext, None]):
        name = "fails"

        async def act(self, context: OrderContext) -> None:
            raise ValueError("card declined")

        async def compensate(self, context: OrderContext) -> None:
            seen.append(await storage.load(self.saga_id))

    class RollbackSaga(Saga[OrderContext]):
        steps = [make_step("a"), FailsAndLooks]

    outcome = await make_mediator(OrderContext, RollbackSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    [record] = seen
    assert record.status is SagaStatus.COMPENSATING
    assert record.applied == ("a", "fails")
    assert record.error == "ValueError: card declined"


async def test_context_changes_are_stored_at_each_checkpoint(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class TrailSaga(Saga[OrderContext]):
        steps = [make_step(label, change=add_to_trail(label)) for label in ("a", "b", "c")]

    saga_id = uuid.uuid4()
    stored: list[tuple[SagaStatus, int, dict[str, Any]]] = []
    async for _ in make_mediator(OrderContext, TrailSaga).stream(OrderContext(), saga_id=saga_id):
        record = await storage.load(saga_id)
        stored.append((record.status, record.cursor, json.loads(record.context)))

    assert [(status, cursor) for status, cursor, _ in stored] == [
        (SagaStatus.RUNNING, 1),
        (SagaStatus.RUNNING, 2),
        (SagaStatus.COMPLETED, 3),
    ]
    assert [ctx["trail"] for _, _, ctx in stored] == [["a"], ["a", "b"], ["a", "b", "c"]]
    assert [ctx["amount"] for _, _, ctx in stored] == [10, 20, 30]


# --- the journal ---------------------------------------------------------------------------------


async def test_the_journal_records_each_act_started_and_completed_in_order(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class JournalSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    outcome = await make_mediator(OrderContext, JournalSaga).run(OrderContext())
    history = await storage.history(outcome.saga_id)

    assert journal_summary(history) == [
        ("a", "act", "started", 1),
        ("a", "act", "completed", 1),
        ("b", "act", "started", 1),
        ("b", "act", "completed", 1),
        ("c", "act", "started", 1),
        ("c", "act", "completed", 1),
        ("", "act", "finished", 0),
    ]
    assert history[-1].detail == "completed"
    assert all(entry.error is None for entry in history)
    assert all(entry.at.utcoffset() == timedelta(0) for entry in history)
    times = [entry.at for entry in history]
    assert times == sorted(times)


async def test_the_journal_records_a_rollback_with_the_error(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class RollbackSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1)]

    outcome = await make_mediator(OrderContext, RollbackSaga).run(OrderContext())
    history = await storage.history(outcome.saga_id)

    assert journal_summary(history) == [
        ("a", "act", "started", 1),
        ("a", "act", "completed", 1),
        ("b", "act", "started", 1),
        ("b", "act", "failed", 1),
        ("", "compensate", "compensating", 0),
        ("b", "compensate", "started", 1),
        ("b", "compensate", "completed", 1),
        ("a", "compensate", "started", 1),
        ("a", "compensate", "completed", 1),
        ("", "compensate", "finished", 0),
    ]
    assert history[3].error == "ValueError: b.act failed"
    assert history[4].error == "ValueError: b.act failed"  # why it compensates
    assert history[-1].detail == "compensated"


# --- idempotency keys ----------------------------------------------------------------------------


async def test_the_idempotency_key_is_saga_step_and_direction_and_stable_across_retries(
    make_mediator: MediatorFactory,
) -> None:
    seen: list[tuple[str, int, StepDirection]] = []

    class Flaky(SagaStepHandler[OrderContext, None]):
        name = "payments.charge"
        retry = quick_retry(3)
        compensation_retry = quick_retry(2)

        async def act(self, context: OrderContext) -> None:
            seen.append((self.idempotency_key, self.attempt, self.direction))
            if self.attempt < 3:
                raise ConnectionError("payment service unavailable")

        async def compensate(self, context: OrderContext) -> None:
            seen.append((self.idempotency_key, self.attempt, self.direction))
            if self.attempt < 2:
                raise ConnectionError("payment service unavailable")

    class Fails(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            raise ValueError("out of stock")

    class KeySaga(Saga[OrderContext]):
        steps = [Flaky, Fails]

    saga_id = uuid.uuid4()
    outcome = await make_mediator(OrderContext, KeySaga).run(OrderContext(), saga_id=saga_id)

    assert outcome.status is SagaStatus.COMPENSATED
    act_key = f"{saga_id}:payments.charge:act"
    compensate_key = f"{saga_id}:payments.charge:compensate"
    assert seen == [
        (act_key, 1, ACT),
        (act_key, 2, ACT),
        (act_key, 3, ACT),
        (compensate_key, 1, COMPENSATE),
        (compensate_key, 2, COMPENSATE),
    ]


async def test_the_idempotency_key_is_the_same_after_recovery(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    keys: list[str] = []

    class CrashesOnce(SagaStepHandler[OrderContext, None]):
        name = "shipping.book"

        async def act(self, context: OrderContext) -> None:
            keys.append(self.idempotency_key)
            if len(keys) == 1:
                raise Crash

    class KeySaga(Saga[OrderContext]):
        steps = [CrashesOnce]

    saga_id = uuid.uuid4()
    with pytest.raises(Crash):
        await make_mediator(OrderContext, KeySaga).run(OrderContext(), saga_id=saga_id)
    outcome = await recover_saga(saga=KeySaga, saga_id=saga_id, storage=storage)

    assert outcome.status is SagaStatus.COMPLETED
    assert keys == [f"{saga_id}:shipping.book:act"] * 2


# --- retries -------------------------------------------------------------------------------------


async def test_act_is_retried_by_its_policy_until_it_succeeds(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    flaky = make_step("flaky", act_fails=2, retry=quick_retry(3))

    class RetrySaga(Saga[OrderContext]):
        steps = [flaky]

    saga_id = uuid.uuid4()
    [result] = await drain(make_mediator(OrderContext, RetrySaga), OrderContext(), saga_id)

    assert result.attempt == 3
    assert result.error is None
    assert ledger == ["act:flaky"] * 3
    history = await storage.history(saga_id)
    assert journal_summary(history) == [
        ("flaky", "act", "started", 1),
        ("flaky", "act", "failed", 1),
        ("flaky", "act", "started", 2),
        ("flaky", "act", "failed", 2),
        ("flaky", "act", "started", 3),
        ("flaky", "act", "completed", 3),
        ("", "act", "finished", 0),
    ]
    assert [e.error for e in history if e.event is StepEvent.FAILED] == [
        "ValueError: flaky.act failed"
    ] * 2
    assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED


async def test_act_that_exhausts_its_retries_fails_the_saga(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    hopeless = make_step("hopeless", act_fails=math.inf, retry=quick_retry(3))

    class RetrySaga(Saga[OrderContext]):
        steps = [hopeless]

    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError):
        async for result in make_mediator(OrderContext, RetrySaga).stream(OrderContext()):
            results.append(result)  # noqa: PERF401 - keep what came before the raise

    assert ledger == ["act:hopeless"] * 3 + ["compensate:hopeless"]
    assert results[0].failed
    assert results[0].attempt == 3


async def test_only_exceptions_listed_in_retry_on_are_retried(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    transient = make_step(
        "transient", act_fails=2, error=ConnectionError, retry=quick_retry(3, retry_on=(OSError,))
    )
    permanent = make_step(
        "permanent", act_fails=1, error=ValueError, retry=quick_retry(3, retry_on=(OSError,))
    )

    class FilterSaga(Saga[OrderContext]):
        steps = [transient, permanent]

    outcome = await make_mediator(OrderContext, FilterSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, ValueError)
    assert ledger == [
        "act:transient",
        "act:transient",
        "act:transient",
        "act:permanent",
        "compensate:permanent",
        "compensate:transient",
    ]


async def test_compensation_is_retried_by_its_own_policy(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    shaky = make_step("shaky", compensate_fails=2, compensation_retry=quick_retry(3))

    class CompensationRetrySaga(Saga[OrderContext]):
        steps = [shaky, make_step("fails", act_fails=1)]

    outcome = await make_mediator(OrderContext, CompensationRetrySaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger.count("compensate:shaky") == 3
    history = await storage.history(outcome.saga_id)
    assert [
        (e.event.value, e.attempt)
        for e in history
        if e.step_id == "shaky" and e.direction is COMPENSATE
    ] == [
        ("started", 1),
        ("failed", 1),
        ("started", 2),
        ("failed", 2),
        ("started", 3),
        ("completed", 3),
    ]


async def test_saga_policies_apply_to_steps_without_their_own(
    make_step: StepFactory, make_mediator: MediatorFactory, ledger: list[str]
) -> None:
    inherits = make_step("inherits", act_fails=2)
    own = make_step("own", act_fails=1, retry=quick_retry(1))

    class PolicySaga(Saga[OrderContext]):
        steps = [inherits, own]
        retry = quick_retry(3)
        compensation_retry = quick_retry(1)

    outcome = await make_mediator(OrderContext, PolicySaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert ledger == [
        "act:inherits",
        "act:inherits",
        "act:inherits",
        "act:own",
        "compensate:own",
        "compensate:inherits",
    ]


# --- timeouts ------------------------------------------------------------------------------------


class SlowAct(SagaStepHandler[OrderContext, None]):
    name = "slow"
    timeout = 0.05
    compensated: list[str] = []

    async def act(self, context: OrderContext) -> None:
        await anyio.sleep(30)

    async def compensate(self, context: OrderContext) -> None:
        SlowAct.compensated.append(self.idempotency_key)


async def test_an_act_that_exceeds_its_timeout_fails_and_is_compensated(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    SlowAct.compensated = []

    class TimeoutSaga(Saga[OrderContext]):
        steps = [SlowAct]

    saga_id = uuid.uuid4()
    results: list[SagaStepResult[Any, Any]] = []
    with pytest.raises(SagaCompensatedError) as caught:
        async for result in make_mediator(OrderContext, TimeoutSaga).stream(
            OrderContext(), saga_id=saga_id
        ):
            results.append(result)  # noqa: PERF401 - keep what came before the raise

    assert isinstance(caught.value.__cause__, TimeoutError)
    assert isinstance(results[0].error, TimeoutError)
    assert SlowAct.compensated == [f"{saga_id}:slow:compensate"]
    history = await storage.history(saga_id)
    [failure] = [e for e in history if e.event is StepEvent.FAILED]
    assert failure.step_id == "slow"
    assert failure.error is not None and failure.error.startswith("TimeoutError")
    assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATED


async def test_a_saga_timeout_applies_to_steps_without_their_own(
    make_mediator: MediatorFactory,
) -> None:
    class Sleeper(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            await anyio.sleep(30)

    class TimeoutSaga(Saga[OrderContext]):
        steps = [Sleeper]
        timeout = 0.05

    outcome = await make_mediator(OrderContext, TimeoutSaga).run(OrderContext())

    assert outcome.status is SagaStatus.COMPENSATED
    assert isinstance(outcome.error, TimeoutError)


async def test_a_compensation_that_exceeds_its_timeout_is_a_failed_compensation(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class HangingUndo(SagaStepHandler[OrderContext, None]):
        timeout = 0.05
        compensation_retry = quick_retry(1)

        async def act(self, context: OrderContext) -> None:
            return None

        async def compensate(self, context: OrderContext) -> None:
            await anyio.sleep(30)

    class TimeoutSaga(Saga[OrderContext]):
        steps = [HangingUndo, make_step("fails", act_fails=1)]

    outcome = await make_mediator(OrderContext, TimeoutSaga).run(OrderContext())

    assert outcome.status is SagaStatus.FAILED
    assert isinstance(outcome.error, SagaCompensationFailedError)
    assert isinstance(outcome.error.compensation_error, TimeoutError)


# --- observers -----------------------------------------------------------------------------------


class RecordingObserver(SagaObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def saga_started(self, saga_id: uuid.UUID, saga_name: str, *, resumed: bool) -> None:
        self.events.append(("saga_started", resumed))

    def step_started(
        self, saga_id: uuid.UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        self.events.append(("step_started", step_id, direction.value, attempt))

    def step_completed(
        self, saga_id: uuid.UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        self.events.append(("step_completed", step_id, direction.value, attempt))

    def step_failed(
        self,
        saga_id: uuid.UUID,
        step_id: str,
        direction: StepDirection,
        attempt: int,
        error: BaseException,
    ) -> None:
        self.events.append(("step_failed", step_id, direction.value, attempt, str(error)))

    def compensation_started(
        self, saga_id: uuid.UUID, saga_name: str, error: BaseException
    ) -> None:
        self.events.append(("compensation_started", str(error)))

    def saga_finished(
        self,
        saga_id: uuid.UUID,
        saga_name: str,
        status: SagaStatus,
        error: BaseException | None,
    ) -> None:
        self.events.append(("saga_finished", status.value, None if error is None else str(error)))


class RaisingObserver(SagaObserver):
    def saga_started(self, saga_id: uuid.UUID, saga_name: str, *, resumed: bool) -> None:
        raise RuntimeError("observer broke")

    def step_started(
        self, saga_id: uuid.UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        raise RuntimeError("observer broke")

    def step_completed(
        self, saga_id: uuid.UUID, step_id: str, direction: StepDirection, attempt: int
    ) -> None:
        raise RuntimeError("observer broke")

    def step_failed(
        self,
        saga_id: uuid.UUID,
        step_id: str,
        direction: StepDirection,
        attempt: int,
        error: BaseException,
    ) -> None:
        raise RuntimeError("observer broke")

    def compensation_started(
        self, saga_id: uuid.UUID, saga_name: str, error: BaseException
    ) -> None:
        raise RuntimeError("observer broke")

    def saga_finished(
        self,
        saga_id: uuid.UUID,
        saga_name: str,
        status: SagaStatus,
        error: BaseException | None,
    ) -> None:
        raise RuntimeError("observer broke")


async def test_observers_see_a_completed_saga_in_order(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class ObservedSaga(Saga[OrderContext]):
        steps = [make_step("a", act_fails=1, retry=quick_retry(2)), make_step("b")]

    observer = RecordingObserver()
    await make_mediator(OrderContext, ObservedSaga, observers=[observer]).run(OrderContext())

    assert observer.events == [
        ("saga_started", False),
        ("step_started", "a", "act", 1),
        ("step_failed", "a", "act", 1, "a.act failed"),
        ("step_started", "a", "act", 2),
        ("step_completed", "a", "act", 2),
        ("step_started", "b", "act", 1),
        ("step_completed", "b", "act", 1),
        ("saga_finished", "completed", None),
    ]


async def test_observers_see_a_rollback_in_order(
    make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    class ObservedSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1)]

    observer = RecordingObserver()
    await make_mediator(OrderContext, ObservedSaga, observers=[observer]).run(OrderContext())

    assert observer.events == [
        ("saga_started", False),
        ("step_started", "a", "act", 1),
        ("step_completed", "a", "act", 1),
        ("step_started", "b", "act", 1),
        ("step_failed", "b", "act", 1, "b.act failed"),
        ("compensation_started", "b.act failed"),
        ("step_started", "b", "compensate", 1),
        ("step_completed", "b", "compensate", 1),
        ("step_started", "a", "compensate", 1),
        ("step_completed", "a", "compensate", 1),
        ("saga_finished", "compensated", "b.act failed"),
    ]


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "compensates"])
async def test_an_observer_that_raises_does_not_change_the_outcome(
    fails: bool,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class ObservedSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1 if fails else 0)]

    recorder = RecordingObserver()
    mediator = make_mediator(OrderContext, ObservedSaga, observers=[RaisingObserver(), recorder])
    outcome = await mediator.run(OrderContext())

    expected = SagaStatus.COMPENSATED if fails else SagaStatus.COMPLETED
    assert outcome.status is expected
    assert (await storage.load(outcome.saga_id)).status is expected
    assert recorder.events[-1][:2] == ("saga_finished", expected.value)
    if fails:
        assert ledger == ["act:a", "act:b", "compensate:b", "compensate:a"]
    else:
        assert ledger == ["act:a", "act:b"]


# --- stored status -------------------------------------------------------------------------------


async def test_a_completed_saga_is_stored_completed_with_no_lease_and_no_error(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class DoneSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b")]

    outcome = await make_mediator(OrderContext, DoneSaga).run(OrderContext())
    record = await storage.load(outcome.saga_id)

    assert record.status is SagaStatus.COMPLETED
    assert record.cursor == 2
    assert record.error is None
    assert record.lease_owner is None
    assert record.lease_expires_at is None
    assert await storage.list_recoverable() == []


async def test_a_compensated_saga_is_stored_compensated_with_the_error(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class RollbackSaga(Saga[OrderContext]):
        steps = [make_step("a"), make_step("b", act_fails=1)]

    outcome = await make_mediator(OrderContext, RollbackSaga).run(OrderContext())
    record = await storage.load(outcome.saga_id)

    assert outcome.status is SagaStatus.COMPENSATED
    assert record.status is SagaStatus.COMPENSATED
    assert record.applied == ()
    assert record.error == "ValueError: b.act failed"
    assert record.lease_owner is None
    assert await storage.list_recoverable() == []


async def test_a_failed_saga_is_stored_failed_and_left_recoverable(
    make_step: StepFactory, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    class StuckSaga(Saga[OrderContext]):
        steps = [
            make_step("a", compensate_fails=math.inf, compensation_retry=quick_retry(2)),
            make_step("b", act_fails=1),
        ]

    outcome = await make_mediator(OrderContext, StuckSaga).run(OrderContext())
    record = await storage.load(outcome.saga_id)

    assert outcome.status is SagaStatus.FAILED
    assert record.status is SagaStatus.FAILED
    assert record.applied == ("a",)
    assert record.error is not None and "a" in record.error
    assert [r.saga_id for r in await storage.list_recoverable()] == [outcome.saga_id]
