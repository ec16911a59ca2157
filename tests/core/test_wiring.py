"""Wiring mistakes are found early and never turned into a business rollback (invariant 13):
a step whose ``act``/``compensate`` is not a coroutine function is refused when its class is
created; a step the container cannot build is refused by ``bootstrap`` (or the worker) when
the container can tell; and a step that cannot be built at run time stops the run, leaving the
saga recoverable instead of compensating it."""

from __future__ import annotations

import dataclasses
import functools
import math
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import di
import pytest

from saga_core import (
    Container,
    DependencyResolutionError,
    MemorySagaStorage,
    RecoveryWorker,
    Saga,
    SagaContext,
    SagaDefinitionError,
    SagaMap,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    StepDirection,
    StepEvent,
    bootstrap,
    recover_saga,
)

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]


@dataclasses.dataclass
class WiringContext(SagaContext):
    order_id: str = "o-1"


# --- a step whose act is not a coroutine function --------------------------------------------


def test_a_plain_def_act_is_refused_when_the_class_is_created() -> None:
    with pytest.raises(SagaDefinitionError, match=r"ForgotAsync\.act .*async def"):

        class ForgotAsync(SagaStepHandler[WiringContext, None]):
            def act(self, context: WiringContext) -> None:  # type: ignore[override]
                return None


def test_a_plain_def_compensate_is_refused_when_the_class_is_created() -> None:
    with pytest.raises(SagaDefinitionError, match=r"ForgotAsync\.compensate .*async def"):

        class ForgotAsync(SagaStepHandler[WiringContext, None]):
            async def act(self, context: WiringContext) -> None:
                return None

            def compensate(self, context: WiringContext) -> None:  # type: ignore[override]
                return None


def test_an_async_generator_act_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="async def"):

        class Yields(SagaStepHandler[WiringContext, None]):
            async def act(self, context: WiringContext) -> Any:
                yield None


def traced(
    method: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A decorator written as a plain function that returns the wrapped coroutine."""

    @functools.wraps(method)
    def wrapper(*args: Any) -> Coroutine[Any, Any, Any]:
        return method(*args)

    return wrapper


def test_a_decorated_coroutine_method_is_accepted() -> None:
    class Decorated(SagaStepHandler[WiringContext, None]):
        @traced
        async def act(self, context: WiringContext) -> None:
            return None

    assert Decorated.step_id.endswith("Decorated")


# --- a step the container cannot build ---------------------------------------------------------


class Unregistered:
    """A dependency no container can build (its constructor needs an unannotated value)."""

    def __init__(self, secret) -> None:  # type: ignore[no-untyped-def]
        self.secret = secret


class NeedsUnregistered(SagaStepHandler[WiringContext, None]):
    name = "needs-unregistered"

    def __init__(self, dependency: Unregistered) -> None:
        self.dependency = dependency

    async def act(self, context: WiringContext) -> None:
        return None


class Plain(SagaStepHandler[WiringContext, None]):
    name = "plain"

    async def act(self, context: WiringContext) -> None:
        return None


class UnbuildableSaga(Saga[WiringContext]):
    steps = [Plain, NeedsUnregistered]


def bind_unbuildable(mapper: SagaMap) -> None:
    mapper.bind(WiringContext, UnbuildableSaga)


@pytest.mark.parametrize("container", [None, Container()], ids=["default", "container"])
def test_bootstrap_refuses_a_step_the_container_cannot_build(container: object) -> None:
    with pytest.raises(DependencyResolutionError) as caught:
        bootstrap(di_container=container, sagas_mapper=bind_unbuildable)
    message = str(caught.value)
    assert "UnbuildableSaga" in message and "needs-unregistered" in message
    assert "Unregistered" in message


def test_bootstrap_refuses_a_step_a_di_container_cannot_build() -> None:
    with pytest.raises(DependencyResolutionError, match="needs-unregistered"):
        bootstrap(di_container=di.Container(), sagas_mapper=bind_unbuildable)


def test_the_worker_refuses_a_step_the_container_cannot_build() -> None:
    sagas = SagaMap()
    bind_unbuildable(sagas)
    with pytest.raises(DependencyResolutionError, match="needs-unregistered"):
        RecoveryWorker(sagas, MemorySagaStorage(), container=Container())


def test_bootstrap_accepts_the_step_once_its_dependency_is_registered() -> None:
    container = Container()
    container.register(Unregistered, Unregistered("s3cret"))
    bootstrap(di_container=container, sagas_mapper=bind_unbuildable)


@pytest.mark.anyio
async def test_a_saga_bound_after_bootstrap_is_checked_before_it_starts() -> None:
    sagas = SagaMap()
    mediator = bootstrap(sagas_mapper=sagas)
    bind_unbuildable(sagas)
    storage = mediator.storage
    with pytest.raises(DependencyResolutionError, match="needs-unregistered"):
        await mediator.run(WiringContext())
    assert await storage.list_sagas() == []  # refused before anything was written


# --- a step that cannot be built at run time ----------------------------------------------------


def refusing(*refused: str) -> Callable[[type[Any]], Any]:
    """A resolver (a plain callable: it cannot be checked in advance) that fails to build
    the steps named ``refused`` and builds every other step with no arguments."""

    def resolve(cls: type[Any]) -> Any:
        if cls.step_id in refused:
            raise LookupError(f"no provider for {cls.__qualname__}")
        return cls()

    return resolve


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_a_step_that_cannot_be_built_at_run_time_leaves_the_saga_recoverable(
    how: str,
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[WiringContext]):
        steps = [make_step("a"), make_step("b"), make_step("c")]

    mediator = make_mediator(WiringContext, OrderSaga, di_container=refusing("b"))
    saga_id = uuid.uuid4()
    with pytest.raises(DependencyResolutionError, match="cannot build step b") as caught:
        if how == "run":
            await mediator.run(WiringContext(), saga_id=saga_id)
        else:
            async for _ in mediator.stream(WiringContext(), saga_id=saga_id):
                pass
    assert isinstance(caught.value.__cause__, LookupError)

    assert ledger == ["act:a"]  # nothing compensated
    record = await storage.load(saga_id)
    assert (record.status, record.cursor, record.applied) == (SagaStatus.RUNNING, 1, ("a",))
    assert record.lease_owner is None  # handed back: recoverable at once
    assert [r.saga_id for r in await storage.list_recoverable()] == [saga_id]
    history = await storage.history(saga_id)
    [failure] = [entry for entry in history if entry.step_id == "b"]
    assert (failure.event, failure.attempt) == (StepEvent.FAILED, 0)
    assert failure.error is not None and "DependencyResolutionError" in failure.error

    # Once the wiring is fixed, recovery finishes the saga forward.
    outcome = await recover_saga(saga=OrderSaga, saga_id=saga_id, storage=storage)
    assert outcome.status is SagaStatus.COMPLETED
    assert ledger == ["act:a", "act:b", "act:c"]


@pytest.mark.anyio
async def test_a_compensation_that_cannot_be_built_leaves_the_rollback_recoverable(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    storage: MemorySagaStorage,
    ledger: list[str],
) -> None:
    class OrderSaga(Saga[WiringContext]):
        steps = [make_step("a"), make_step("b", act_fails=math.inf)]

    # "a" builds for its act, then not for its compensation.
    built: list[str] = []

    def flaky(cls: type[Any]) -> Any:
        built.append(cls.step_id)
        if built.count("a") > 1:
            raise LookupError("the compensation's service is gone")
        return cls()

    mediator = make_mediator(WiringContext, OrderSaga, di_container=flaky)
    saga_id = uuid.uuid4()
    with pytest.raises(DependencyResolutionError):
        await mediator.run(WiringContext(), saga_id=saga_id)

    record = await storage.load(saga_id)
    assert record.status is SagaStatus.COMPENSATING  # not FAILED: no compensation ran
    assert record.applied == ("a",)  # b was compensated; a is still to do
    assert ledger == ["act:a", "act:b", "compensate:b"]
    compensations = [
        entry
        for entry in await storage.history(saga_id)
        if entry.direction is StepDirection.COMPENSATE and entry.step_id == "a"
    ]
    assert [(entry.event, entry.attempt) for entry in compensations] == [(StepEvent.FAILED, 0)]
