"""Saga and step definitions: what is validated when a class is created, step ids, ``Response``,
``RetryPolicy``, ``SagaMap.bind`` and ``bootstrap``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from saga_core import (
    Fallback,
    MemorySagaStorage,
    Response,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaDefinitionError,
    SagaError,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    bootstrap,
)

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class OrderContext(SagaContext):
    order_id: str = "o-1"


@dataclasses.dataclass
class RushOrderContext(OrderContext):
    rush: bool = True


@dataclasses.dataclass
class InvoiceContext(SagaContext):
    invoice_id: str = "i-1"


class Reserved(Response):
    reservation_id: str


class Reserve(SagaStepHandler[OrderContext, Reserved]):
    async def act(self, context: OrderContext) -> Reserved:
        return Reserved(reservation_id="r-1")


class Charge(SagaStepHandler[OrderContext, None]):
    async def act(self, context: OrderContext) -> None:
        return None


class Ship(SagaStepHandler[OrderContext, None]):
    name = "shipping.ship"

    async def act(self, context: OrderContext) -> None:
        return None


class ExpressShip(Ship):
    """Inherits ``act`` and the parent's explicit name, which must not become its id."""


class AnyContextStep(SagaStepHandler[object, None]):
    async def act(self, context: object) -> None:
        return None


class Invoice(SagaStepHandler[InvoiceContext, None]):
    async def act(self, context: InvoiceContext) -> None:
        return None


class NoAct(SagaStepHandler[OrderContext, None]):
    async def compensate(self, context: OrderContext) -> None:
        return None


class NotAStep:
    async def act(self, context: OrderContext) -> None:
        return None


class OrderSaga(Saga[OrderContext]):
    steps = [Reserve, Charge]


class InvoiceSaga(Saga[InvoiceContext]):
    steps = [Invoice]


# --- steps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "empty"),
        ((), "empty"),
        (Reserve, "must be a list"),
        ({Reserve, Charge}, "must be a list"),
        ("Reserve", "must be a list"),
        (None, "must be a list"),
    ],
    ids=["empty-list", "empty-tuple", "bare-class", "set", "string", "none"],
)
def test_invalid_steps_container_is_rejected_at_class_creation(steps: Any, message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message) as caught:
        type("BadSaga", (Saga,), {"steps": steps})
    assert "BadSaga.steps" in str(caught.value)


def test_a_tuple_of_steps_is_accepted() -> None:
    class TupleSaga(Saga[OrderContext]):
        steps = (Reserve, Charge)

    nodes = TupleSaga.definition().nodes
    assert [node.branch(False).cls for node in nodes] == [Reserve, Charge]


def test_step_instance_instead_of_class_is_rejected_with_a_hint() -> None:
    with pytest.raises(SagaDefinitionError, match=r"steps\[1\].*not an instance"):

        class InstanceSaga(Saga[OrderContext]):
            steps = [Reserve, Charge()]  # type: ignore[list-item]


def test_step_class_without_act_is_rejected_with_a_hint() -> None:
    with pytest.raises(SagaDefinitionError, match=r"steps\[0\].*does not implement act\(\)"):

        class NoActSaga(Saga[OrderContext]):
            steps = [NoAct]


@pytest.mark.parametrize(
    "item",
    [42, "Reserve", NotAStep, object, None, SagaStepHandler],
    ids=["int", "str", "duck-typed-class", "object", "none", "base-class"],
)
def test_anything_that_is_not_a_step_class_or_fallback_is_rejected(item: Any) -> None:
    with pytest.raises(SagaDefinitionError, match=r"steps\[1\] must be a SagaStepHandler") as err:
        type("RandomSaga", (Saga,), {"steps": [Reserve, item]})
    assert repr(item) in str(err.value)


def test_definition_errors_are_usage_errors_under_the_saga_error_root() -> None:
    assert issubclass(SagaDefinitionError, SagaUsageError)
    assert issubclass(SagaDefinitionError, SagaError)
    assert issubclass(SagaDefinitionError, TypeError)


# --- step ids ------------------------------------------------------------------------------------


def test_step_id_defaults_to_module_and_qualified_name() -> None:
    assert Reserve.step_id == f"{__name__}.Reserve"


def test_step_id_is_the_explicit_name_when_given() -> None:
    assert Ship.step_id == "shipping.ship"


def test_subclass_does_not_inherit_its_parents_explicit_name() -> None:
    assert ExpressShip.step_id == f"{__name__}.ExpressShip"

    class BothShips(Saga[OrderContext]):
        steps = [Ship, ExpressShip]

    assert set(BothShips.definition().steps_by_id) == {"shipping.ship", ExpressShip.step_id}


def test_step_id_of_a_class_defined_in_a_function_includes_locals() -> None:
    class Local(SagaStepHandler[OrderContext, None]):
        async def act(self, context: OrderContext) -> None:
            return None

    assert Local.step_id == f"{__name__}.{Local.__qualname__}"
    assert "<locals>" in Local.step_id


@pytest.mark.parametrize("bad", ["", "   ", 5])
def test_step_name_must_be_a_non_empty_string(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="name must be a non-empty string"):
        type("Named", (SagaStepHandler,), {"name": bad, "act": Reserve.act})


def test_the_same_step_class_twice_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match="two steps with the id") as caught:

        class Twice(Saga[OrderContext]):
            steps = [Reserve, Charge, Reserve]

    assert Reserve.step_id in str(caught.value)
    assert "distinct `name`" in str(caught.value)


def test_two_classes_with_the_same_explicit_name_are_rejected() -> None:
    class OtherShip(SagaStepHandler[OrderContext, None]):
        name = "shipping.ship"

        async def act(self, context: OrderContext) -> None:
            return None

    with pytest.raises(SagaDefinitionError, match=r"'shipping\.ship'"):

        class Clash(Saga[OrderContext]):
            steps = [Ship, OtherShip]


def test_a_fallback_branch_that_repeats_a_step_id_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match="two steps with the id"):

        class FallbackClash(Saga[OrderContext]):
            steps = [Reserve, Fallback(step=Charge, fallback=Reserve)]


# --- saga names ----------------------------------------------------------------------------------


def test_saga_name_defaults_to_module_and_qualified_name() -> None:
    assert OrderSaga.definition().name == f"{__name__}.OrderSaga"


def test_saga_name_is_the_explicit_name_and_is_not_inherited() -> None:
    class Named(Saga[OrderContext]):
        name = "orders.v1"
        steps = [Reserve]

    class Child(Named):
        steps = [Reserve, Charge]

    assert Named.definition().name == "orders.v1"
    assert Child.definition().name == f"{__name__}.{Child.__qualname__}"


@pytest.mark.parametrize("bad", ["", " ", 3])
def test_saga_name_must_be_a_non_empty_string(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="name must be a non-empty string"):
        type("BadName", (Saga,), {"name": bad, "steps": [Reserve]})


def test_a_saga_without_steps_is_abstract_and_has_no_definition() -> None:
    class Base(Saga[OrderContext]):
        pass

    with pytest.raises(SagaDefinitionError, match="defines no steps"):
        Base.definition()


# --- context types -------------------------------------------------------------------------------


def test_a_step_for_another_context_type_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match=r"runs on OrderContext.*expects InvoiceContext"):

        class Mixed(Saga[OrderContext]):
            steps = [Reserve, Invoice]


def test_a_step_for_a_base_context_type_is_accepted() -> None:
    class RushSaga(Saga[RushOrderContext]):
        steps = [Reserve, AnyContextStep]

    assert RushSaga.definition().context_type is RushOrderContext


def test_a_step_for_a_subclass_context_is_rejected_in_a_saga_on_the_base() -> None:
    class RushOnly(SagaStepHandler[RushOrderContext, None]):
        async def act(self, context: RushOrderContext) -> None:
            return None

    with pytest.raises(SagaDefinitionError, match="expects RushOrderContext"):

        class BaseSaga(Saga[OrderContext]):
            steps = [RushOnly]


def test_a_step_generic_over_any_context_is_accepted() -> None:
    class AnyStep(SagaStepHandler[Any, None]):
        async def act(self, context: Any) -> None:
            return None

    class WithAny(Saga[OrderContext]):
        steps = [AnyStep]

    assert WithAny.definition().nodes[0].branch(False).cls is AnyStep


def test_a_saga_left_generic_accepts_steps_of_any_context() -> None:
    class Untyped(Saga):  # type: ignore[type-arg]
        steps = [Reserve, Invoice]

    assert Untyped.definition().context_type is None


# --- timeouts and policies -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, -0.5, "5"])
def test_invalid_step_timeout_is_rejected(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="timeout must be a positive number"):
        type("Slow", (SagaStepHandler,), {"timeout": bad, "act": Reserve.act})


def test_valid_timeouts_are_compiled_with_the_step_overriding_the_saga() -> None:
    class Quick(SagaStepHandler[OrderContext, None]):
        timeout = 0.5

        async def act(self, context: OrderContext) -> None:
            return None

    class Timed(Saga[OrderContext]):
        steps = [Quick, Reserve]
        timeout = 2

    first, second = Timed.definition().nodes
    assert first.branch(False).timeout == 0.5
    assert second.branch(False).timeout == 2


@pytest.mark.parametrize("bad", [0, -1, "5"])
def test_invalid_saga_timeout_is_rejected(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="timeout"):
        type("SlowSaga", (Saga,), {"steps": [Reserve], "timeout": bad})


def test_saga_retry_must_be_a_retry_policy() -> None:
    with pytest.raises(SagaDefinitionError, match=r"retry must be a RetryPolicy, got 3"):
        type("RetrySaga", (Saga,), {"steps": [Reserve], "retry": 3})
    with pytest.raises(SagaDefinitionError, match="compensation_retry must be a RetryPolicy"):
        type("CompSaga", (Saga,), {"steps": [Reserve], "compensation_retry": {"attempts": 2}})


def test_step_retry_must_be_a_retry_policy() -> None:
    step = type("RetryStep", (SagaStepHandler,), {"retry": 3, "act": Reserve.act})
    with pytest.raises(SagaDefinitionError, match="retry"):
        type("StepRetrySaga", (Saga,), {"steps": [step]})


def test_policies_default_to_the_sagas_then_to_the_library_defaults() -> None:
    fast = RetryPolicy(attempts=5, initial_delay=0)
    patient = RetryPolicy(attempts=7, initial_delay=0)
    own = RetryPolicy(attempts=2, initial_delay=0)

    class OwnPolicy(SagaStepHandler[OrderContext, None]):
        retry = own

        async def act(self, context: OrderContext) -> None:
            return None

    class WithPolicies(Saga[OrderContext]):
        steps = [OwnPolicy, Reserve]
        retry = fast
        compensation_retry = patient

    class WithoutPolicies(Saga[OrderContext]):
        steps = [Reserve]

    first, second = (node.branch(False) for node in WithPolicies.definition().nodes)
    assert first.retry is own
    assert first.compensation_retry is patient
    assert second.retry is fast
    default = WithoutPolicies.definition().nodes[0].branch(False)
    assert default.retry.attempts == 1
    assert default.compensation_retry.attempts > 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be an int of at least 1"),
        ({"initial_delay": -1}, "must not be negative"),
        ({"max_delay": -0.1}, "must not be negative"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
        ({"retry_on": (KeyboardInterrupt,)}, "retry_on must be Exception subclasses"),
        ({"retry_on": ("ValueError",)}, "retry_on must be Exception subclasses"),
    ],
)
def test_retry_policy_rejects_out_of_range_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        RetryPolicy(**kwargs)


def test_retry_policy_accepts_a_single_class_as_retry_on() -> None:
    policy = RetryPolicy(retry_on=ValueError)  # type: ignore[arg-type]
    assert policy.retry_on == (ValueError,)
    with pytest.raises(SagaDefinitionError, match="retry_on"):
        RetryPolicy(retry_on=(ValueError, "oops"))  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="attempts"):
        RetryPolicy(attempts=True)
    with pytest.raises(SagaDefinitionError, match="attempts"):
        RetryPolicy(attempts=1.5)  # type: ignore[arg-type]


def test_retry_policy_filters_by_exception_type_and_attempt_count() -> None:
    policy = RetryPolicy(attempts=3, initial_delay=0, retry_on=(ConnectionError,))
    assert policy.should_retry(1, ConnectionResetError())
    assert policy.should_retry(2, ConnectionError())
    assert not policy.should_retry(3, ConnectionError())
    assert not policy.should_retry(1, ValueError())


def test_retry_policy_delays_grow_and_are_capped() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=1, multiplier=2, max_delay=5, jitter=0)
    assert [policy.delay_before(n) for n in range(2, 7)] == [1, 2, 4, 5, 5]
    jittered = RetryPolicy(initial_delay=1, jitter=0.5)
    assert all(0.5 <= jittered.delay_before(2) <= 1.5 for _ in range(50))


# --- Response ------------------------------------------------------------------------------------


def test_response_subclass_is_a_keyword_only_dataclass() -> None:
    reserved = Reserved(reservation_id="r-9")
    assert reserved.reservation_id == "r-9"
    assert dataclasses.is_dataclass(reserved)
    with pytest.raises(TypeError):
        Reserved("r-9")  # type: ignore[call-arg]


def test_responses_compare_by_value_and_type_and_have_a_readable_repr() -> None:
    class Cancelled(Response):
        reservation_id: str

    assert Reserved(reservation_id="a") == Reserved(reservation_id="a")
    assert Reserved(reservation_id="a") != Reserved(reservation_id="b")
    assert Reserved(reservation_id="a") != Cancelled(reservation_id="a")
    assert repr(Reserved(reservation_id="a")) == "Reserved(reservation_id='a')"


def test_bare_response_is_an_empty_response() -> None:
    assert Response() == Response()
    assert repr(Response()) == "Response()"
    assert Response() != Reserved(reservation_id="a")


def test_response_fields_may_have_defaults_and_subclasses_add_fields() -> None:
    class Page(Response):
        items: list[int] = dataclasses.field(default_factory=list)

    class NumberedPage(Page):
        number: int = 1

    assert Page() == Page(items=[])
    assert NumberedPage(items=[1], number=2) == NumberedPage(number=2, items=[1])
    assert NumberedPage(items=[1]) != Page(items=[1])


def test_a_response_declared_frozen_is_immutable_and_its_subclasses_too() -> None:
    class Frozen(Response, frozen=True):
        value: int

    class MoreFrozen(Frozen, frozen=True):
        extra: int = 0

    class InheritsFrozen(Frozen):  # type: ignore[misc]  # mypy wants frozen=True spelled out
        other: int = 0

    frozen = Frozen(value=1)
    assert frozen.value == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.value = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        MoreFrozen(value=1).extra = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        InheritsFrozen(value=1).other = 3


# --- SagaMap -------------------------------------------------------------------------------------


def test_bind_rejects_something_that_is_not_a_saga() -> None:
    mapper = SagaMap()
    with pytest.raises(SagaDefinitionError, match="needs a Saga subclass"):
        mapper.bind(OrderContext, Reserve)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="needs a Saga subclass"):
        mapper.bind(OrderContext, OrderSaga())  # type: ignore[arg-type]


def test_bind_rejects_a_context_that_is_not_a_class() -> None:
    with pytest.raises(SagaDefinitionError, match="needs a context class"):
        SagaMap().bind(OrderContext(), OrderSaga)  # type: ignore[arg-type]


def test_bind_rejects_a_saga_with_no_steps() -> None:
    class Abstract(Saga[OrderContext]):
        pass

    with pytest.raises(SagaDefinitionError, match="defines no steps"):
        SagaMap().bind(OrderContext, Abstract)


def test_bind_rejects_a_context_type_the_saga_does_not_run_on() -> None:
    with pytest.raises(SagaDefinitionError, match="runs on OrderContext, which InvoiceContext"):
        SagaMap().bind(InvoiceContext, OrderSaga)  # type: ignore[misc]


def test_bind_accepts_a_subclass_of_the_sagas_context() -> None:
    mapper = SagaMap()
    mapper.bind(RushOrderContext, OrderSaga)
    assert mapper.saga_for(RushOrderContext) is OrderSaga


def test_bind_rejects_binding_the_same_context_twice() -> None:
    mapper = SagaMap()
    mapper.bind(OrderContext, OrderSaga)
    with pytest.raises(SagaDefinitionError, match="bound already, to OrderSaga"):
        mapper.bind(OrderContext, OrderSaga)


def test_bind_rejects_two_sagas_with_the_same_name() -> None:
    class First(Saga[OrderContext]):
        name = "orders"
        steps = [Reserve]

    class Second(Saga[RushOrderContext]):
        name = "orders"
        steps = [Charge]

    mapper = SagaMap()
    mapper.bind(OrderContext, First)
    with pytest.raises(SagaDefinitionError, match="two sagas are named 'orders'"):
        mapper.bind(RushOrderContext, Second)


def test_bind_rejects_a_context_the_codec_cannot_store() -> None:
    @dataclasses.dataclass
    class Unstorable(OrderContext):
        handle: object = None

    with pytest.raises(SagaUsageError):
        SagaMap().bind(Unstorable, OrderSaga)


def test_the_same_saga_may_serve_several_context_types() -> None:
    mapper = SagaMap()
    mapper.bind(OrderContext, OrderSaga)
    mapper.bind(RushOrderContext, OrderSaga)
    assert len(mapper) == 1
    assert mapper.saga_named(OrderSaga.definition().name) is OrderSaga


# --- bootstrap -----------------------------------------------------------------------------------


def _bind_orders(mapper: SagaMap) -> None:
    mapper.bind(OrderContext, OrderSaga)


@pytest.mark.parametrize("spelling", ["call", "attribute"])
async def test_bootstrap_builds_a_working_mediator_both_ways(spelling: str) -> None:
    build = bootstrap if spelling == "call" else bootstrap.bootstrap
    storage = MemorySagaStorage()
    mediator = build(di_container=None, sagas_mapper=_bind_orders, saga_storage=storage)
    assert isinstance(mediator, SagaMediator)
    outcome = await mediator.run(OrderContext())
    assert outcome.status is SagaStatus.COMPLETED
    assert (await storage.load(outcome.saga_id)).status is SagaStatus.COMPLETED


def test_bootstrap_accepts_a_ready_saga_map_and_defaults_to_memory_storage() -> None:
    mapper = SagaMap()
    mapper.bind(OrderContext, OrderSaga)
    mediator = bootstrap(sagas_mapper=mapper)
    assert mediator.saga_map is mapper
    assert isinstance(mediator.storage, MemorySagaStorage)


@pytest.mark.parametrize("bad", [42, "orders", None, [OrderSaga]])
def test_bootstrap_rejects_a_sagas_mapper_that_is_not_a_map_or_function(bad: Any) -> None:
    with pytest.raises(SagaUsageError, match="sagas_mapper must be a SagaMap or a function"):
        bootstrap(sagas_mapper=bad)


def test_bootstrap_propagates_a_definition_error_from_the_mapper_function() -> None:
    def bind_wrongly(mapper: SagaMap) -> None:
        mapper.bind(InvoiceContext, OrderSaga)  # type: ignore[misc]

    with pytest.raises(SagaDefinitionError, match="runs on OrderContext"):
        bootstrap(sagas_mapper=bind_wrongly)


def test_bootstrap_rejects_a_storage_that_is_not_a_storage() -> None:
    with pytest.raises(SagaUsageError, match="SagaStorage protocol"):
        bootstrap(sagas_mapper=_bind_orders, saga_storage=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [0, -1])
def test_bootstrap_rejects_a_non_positive_lease(lease: float) -> None:
    with pytest.raises(SagaUsageError, match="lease_seconds must be positive"):
        bootstrap(sagas_mapper=_bind_orders, lease_seconds=lease)


def test_bootstrap_rejects_observers_that_are_not_observers() -> None:
    with pytest.raises(SagaUsageError, match="SagaObserver"):
        bootstrap(sagas_mapper=_bind_orders, observers=[object()])  # type: ignore[list-item]


def test_bootstrap_rejects_a_container_class_instead_of_an_instance() -> None:
    with pytest.raises(SagaUsageError, match="is a class; pass an instance"):
        bootstrap(sagas_mapper=_bind_orders, di_container=MemorySagaStorage)
