"""Tests for step resolution: the built-in Container and the step resolvers (None, Container,
callable, di.Container), every async test on asyncio and trio."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import di
import pytest
from di import bind_by_type
from di.dependent import Dependent

from saga_core._engine.resolution import Container, StepResolver, make_step_resolver
from saga_core._model.errors import DependencyResolutionError, SagaUsageError

pytestmark = pytest.mark.anyio

T = TypeVar("T")


# TEMPORARY: tests/conftest.py (written by someone else) will parametrise anyio_backend over
# asyncio and trio; until it exists this module does it itself. The lead will reconcile.
@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return typing.cast(str, request.param)


# --- classes under test (module level so that their future annotations resolve) ------------------


class InventoryService:
    def __init__(self, url: str) -> None:
        self.url = url


class PaymentGateway:
    def __init__(self, name: str) -> None:
        self.name = name


class Clock:
    """Unregistered, built by constructor injection (no-arg __init__)."""


class AuditLog:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock


class Handler(Generic[T]):
    """Stands in for SagaStepHandler[...]: a generic base class."""


class NoArgStep(Handler[int]):
    pass


class ReserveInventoryStep(Handler[int]):
    def __init__(self, inventory_service: InventoryService) -> None:
        self.inventory_service = inventory_service


class ChargeStep(Handler[int]):
    def __init__(
        self, inventory: InventoryService, payments: PaymentGateway, audit: AuditLog
    ) -> None:
        self.inventory = inventory
        self.payments = payments
        self.audit = audit


class StepWithDefaults:
    def __init__(
        self, retries: int = 3, gateway: PaymentGateway | None = None, clock: Clock | None = None
    ) -> None:
        self.retries = retries
        self.gateway = gateway
        self.clock = clock


class UnannotatedService:
    def __init__(self, url) -> None:  # type: ignore[no-untyped-def]
        self.url = url


class NeedsUnannotated:
    def __init__(self, service: UnannotatedService) -> None:
        self.service = service


class NeedsStr:
    def __init__(self, url: str) -> None:
        self.url = url


class CycleA:
    def __init__(self, b: CycleB) -> None:
        self.b = b


class CycleB:
    def __init__(self, a: CycleA) -> None:
        self.a = a


class Repository(Protocol):
    def get(self) -> str: ...


class MemoryRepository:
    def get(self) -> str:
        return "memory"


class NeedsRepository:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo


class NeedsMissingName:
    def __init__(self, thing: DoesNotExist) -> None:  # type: ignore[name-defined]  # noqa: F821
        self.thing = thing


class PositionalOnly:
    def __init__(self, clock: Clock, /, tag: str = "x", *, audit: AuditLog) -> None:
        self.clock = clock
        self.tag = tag
        self.audit = audit


@dataclass
class DataclassStep:
    inventory: InventoryService
    retries: int = 2


# --- built-in Container --------------------------------------------------------------------------


def test_register_instance_is_a_singleton() -> None:
    service = InventoryService("db://1")
    container = Container()
    container.register(InventoryService, service)
    assert container.resolve(InventoryService) is service
    step = container.resolve(ReserveInventoryStep)
    assert step.inventory_service is service
    assert container.resolve(ReserveInventoryStep) is not step


def test_register_factory_called_per_resolution_with_injected_parameters() -> None:
    calls: list[Clock] = []

    def make_gateway(clock: Clock) -> PaymentGateway:
        calls.append(clock)
        return PaymentGateway(f"gw{len(calls)}")

    container = Container()
    container.register(InventoryService, InventoryService("db"))
    container.register_factory(PaymentGateway, make_gateway)
    first = container.resolve(ChargeStep)
    second = container.resolve(ChargeStep)
    assert (first.payments.name, second.payments.name) == ("gw1", "gw2")
    assert all(isinstance(clock, Clock) for clock in calls)
    assert isinstance(first.audit.clock, Clock)
    assert first.inventory is second.inventory


def test_constructor_injection_builds_unregistered_classes_recursively() -> None:
    container = Container()
    audit = container.resolve(AuditLog)
    assert isinstance(audit.clock, Clock)
    assert isinstance(container.resolve(NoArgStep), NoArgStep)


def test_defaults_are_kept_unless_the_type_is_registered() -> None:
    container = Container()
    step = container.resolve(StepWithDefaults)
    assert (step.retries, step.gateway, step.clock) == (3, None, None)
    gateway = PaymentGateway("gw")
    container.register(PaymentGateway, gateway)
    step = container.resolve(StepWithDefaults)
    assert step.gateway is gateway
    assert step.clock is None  # buildable but not registered: the default stays


def test_positional_only_keyword_only_and_dataclass() -> None:
    container = Container()
    step = container.resolve(PositionalOnly)
    assert isinstance(step.clock, Clock)
    assert step.tag == "x"
    assert isinstance(step.audit, AuditLog)
    service = InventoryService("db")
    container.register(InventoryService, service)
    data = container.resolve(DataclassStep)
    assert data.inventory is service
    assert data.retries == 2


def test_missing_annotation_error_names_class_chain_and_type() -> None:
    container = Container()
    with pytest.raises(DependencyResolutionError) as info:
        container.resolve(NeedsUnannotated)
    assert str(info.value) == (
        "cannot build NeedsUnannotated: parameter 'service' (UnannotatedService) -> "
        "UnannotatedService.__init__ parameter 'url' has no type annotation; "
        "register UnannotatedService with Container.register(...)"
    )


def test_builtin_type_parameter_error_names_the_chain() -> None:
    container = Container()
    with pytest.raises(DependencyResolutionError) as info:
        container.resolve(ReserveInventoryStep)
    message = str(info.value)
    assert message.startswith(
        "cannot build ReserveInventoryStep: parameter 'inventory_service' (InventoryService) -> "
        "InventoryService.__init__ parameter 'url' has type str"
    )
    assert "register str with Container.register(...)" in message
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, SagaUsageError)


def test_cycle_is_detected() -> None:
    with pytest.raises(DependencyResolutionError, match=r"dependency cycle CycleA -> CycleB -> "):
        Container().resolve(CycleA)


def test_factory_cycle_is_detected() -> None:
    def make_clock(audit: AuditLog) -> Clock:
        return Clock()

    container = Container()
    container.register_factory(Clock, make_clock)
    with pytest.raises(
        DependencyResolutionError, match="dependency cycle AuditLog -> Clock -> AuditLog"
    ):
        container.resolve(AuditLog)


def test_unresolvable_forward_reference_is_a_resolution_error() -> None:
    with pytest.raises(DependencyResolutionError, match="DoesNotExist") as info:
        Container().resolve(NeedsMissingName)
    assert isinstance(info.value.__cause__, NameError)


def test_protocol_needs_a_registration() -> None:
    container = Container()
    with pytest.raises(
        DependencyResolutionError,
        match="type Repository, which is not registered and is a Protocol",
    ):
        container.resolve(NeedsRepository)
    repo = MemoryRepository()
    container.register(Repository, repo)  # type: ignore[type-abstract]
    assert container.resolve(NeedsRepository).repo is repo


def test_register_type_checks_the_instance() -> None:
    container = Container()
    with pytest.raises(SagaUsageError, match="expects an instance of InventoryService"):
        container.register(InventoryService, PaymentGateway("x"))
    with pytest.raises(SagaUsageError, match="expects a class"):
        container.register(list[int], [1])
    with pytest.raises(SagaUsageError, match="expects a callable"):
        container.register_factory(Clock, Clock())  # type: ignore[arg-type]

    async def make_clock() -> Clock:
        return Clock()

    with pytest.raises(SagaUsageError, match="async factories are not supported"):
        container.register_factory(Clock, make_clock)  # type: ignore[arg-type]


def test_registering_after_resolving_takes_effect() -> None:
    container = Container()
    assert container.resolve(StepWithDefaults).gateway is None
    gateway = PaymentGateway("late")
    container.register(PaymentGateway, gateway)
    assert container.resolve(StepWithDefaults).gateway is gateway
    container.register_factory(PaymentGateway, lambda: PaymentGateway("factory"))
    resolved = container.resolve(StepWithDefaults).gateway
    assert resolved is not None
    assert resolved.name == "factory"


def test_plans_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = typing.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    container = Container()
    container.register(InventoryService, InventoryService("db"))
    for _ in range(5):
        container.resolve(ReserveInventoryStep)
    assert len(calls) == 1
    container.register(PaymentGateway, PaymentGateway("gw"))  # clears builders, not plans
    container.resolve(ReserveInventoryStep)
    assert len(calls) == 1


# --- resolvers -----------------------------------------------------------------------------------


async def test_none_resolver_builds_no_arg_steps() -> None:
    resolver = make_step_resolver(None)
    assert isinstance(await resolver.resolve(NoArgStep), NoArgStep)
    assert isinstance((await resolver.resolve(AuditLog)).clock, Clock)
    with pytest.raises(DependencyResolutionError, match="ReserveInventoryStep"):
        await resolver.resolve(ReserveInventoryStep)


async def test_container_resolver() -> None:
    service = InventoryService("db")
    container = Container()
    container.register(InventoryService, service)
    resolver = make_step_resolver(container)
    assert make_step_resolver(container) is resolver
    assert make_step_resolver(resolver) is resolver
    first = await resolver.resolve(ReserveInventoryStep)
    second = await resolver.resolve(ReserveInventoryStep)
    assert first is not second
    assert first.inventory_service is second.inventory_service is service


async def test_callable_resolver_sync_and_async() -> None:
    service = InventoryService("db")

    def build(cls: type[Any]) -> Any:
        return cls(service)

    async def build_async(cls: type[Any]) -> Any:
        return cls(service)

    for factory in (build, build_async):
        resolver = make_step_resolver(factory)
        step = await resolver.resolve(ReserveInventoryStep)
        assert isinstance(step, ReserveInventoryStep)
        assert step.inventory_service is service

    lambda_resolver = make_step_resolver(lambda cls: cls(service))
    assert (await lambda_resolver.resolve(ReserveInventoryStep)).inventory_service is service


async def test_callable_resolver_returning_a_wrong_object() -> None:
    resolver = make_step_resolver(lambda cls: "not a step")
    with pytest.raises(DependencyResolutionError, match="not an instance of ReserveInventoryStep"):
        await resolver.resolve(ReserveInventoryStep)


def test_make_step_resolver_rejects_invalid_objects() -> None:
    with pytest.raises(SagaUsageError, match=r"di_container must be None, a saga_core\.Container"):
        make_step_resolver(42)
    with pytest.raises(SagaUsageError, match="is a class; pass an instance"):
        make_step_resolver(Container)
    with pytest.raises(SagaUsageError, match="is a class"):
        make_step_resolver(di.Container)


# --- the di package ------------------------------------------------------------------------------


def _di_container(service: InventoryService) -> di.Container:
    container = di.Container()
    container.bind(bind_by_type(Dependent(lambda: service, scope="request"), InventoryService))
    return container


async def test_di_container_bind_by_type() -> None:
    service = InventoryService("db")
    container = _di_container(service)
    resolver = make_step_resolver(container)
    first = await resolver.resolve(ReserveInventoryStep)
    second = await resolver.resolve(ReserveInventoryStep)
    assert isinstance(first, ReserveInventoryStep)
    assert first is not second
    assert first.inventory_service is second.inventory_service is service
    # unbound classes are autowired by di
    charge_container = _di_container(service)
    charge_container.bind(
        bind_by_type(Dependent(lambda: PaymentGateway("gw"), scope="request"), PaymentGateway)
    )
    charge = await make_step_resolver(charge_container).resolve(ChargeStep)
    assert charge.inventory is service
    assert isinstance(charge.audit.clock, Clock)


async def test_di_container_async_factory_and_async_generator() -> None:
    service = InventoryService("db")
    events: list[str] = []

    async def make_service() -> InventoryService:
        return service

    async def make_gateway() -> AsyncIterator[PaymentGateway]:
        events.append("enter")
        yield PaymentGateway("gw")
        events.append("exit")

    container = di.Container()
    container.bind(bind_by_type(Dependent(make_service, scope="request"), InventoryService))
    container.bind(bind_by_type(Dependent(make_gateway, scope="request"), PaymentGateway))
    resolver = make_step_resolver(container)
    step = await resolver.resolve(ChargeStep)
    assert step.inventory is service
    assert step.payments.name == "gw"
    assert events == ["enter", "exit"]  # the request scope ends once the step is built
    assert (await resolver.resolve(ReserveInventoryStep)).inventory_service is service


async def test_di_container_sync_generator() -> None:
    events: list[str] = []

    def make_gateway() -> Iterator[PaymentGateway]:
        events.append("enter")
        yield PaymentGateway("gw")
        events.append("exit")

    container = _di_container(InventoryService("db"))
    container.bind(bind_by_type(Dependent(make_gateway, scope="request"), PaymentGateway))
    step = await make_step_resolver(container).resolve(ChargeStep)
    assert step.payments.name == "gw"
    assert events == ["enter", "exit"]


async def test_di_resolution_errors_become_dependency_resolution_errors() -> None:
    resolver = make_step_resolver(di.Container())
    with pytest.raises(DependencyResolutionError, match="NeedsUnannotated") as info:
        await resolver.resolve(NeedsUnannotated)
    assert type(info.value.__cause__).__module__.startswith("di")

    container = di.Container()
    container.bind(
        bind_by_type(Dependent(lambda: InventoryService("x"), scope="app"), InventoryService)
    )
    with pytest.raises(DependencyResolutionError, match="unknown scope"):
        await make_step_resolver(container).resolve(ReserveInventoryStep)


async def test_di_factory_errors_propagate_unchanged() -> None:
    def broken() -> InventoryService:
        raise ConnectionError("down")

    container = di.Container()
    container.bind(bind_by_type(Dependent(broken, scope="request"), InventoryService))
    with pytest.raises(ConnectionError, match="down"):
        await make_step_resolver(container).resolve(ReserveInventoryStep)


def test_step_resolver_protocol_is_satisfied() -> None:
    resolvers: list[StepResolver] = [
        make_step_resolver(None),
        make_step_resolver(Container()),
        make_step_resolver(lambda cls: cls()),
        make_step_resolver(di.Container()),
    ]
    resolve: Callable[[type[NoArgStep]], Awaitable[NoArgStep]] = resolvers[0].resolve
    assert callable(resolve)
