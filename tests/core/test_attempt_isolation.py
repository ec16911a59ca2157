"""Attempt isolation (invariant 10): a failed attempt leaves the context as it was before the
attempt. A retry, the fallback branch and the compensations see the last durable context plus
the effects of completed steps only — exactly what a recovered run would see — and a failed
attempt's changes are never stored, not even in a COMPLETED saga."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import pydantic
import pytest

from saga_core import (
    Fallback,
    MemorySagaStorage,
    RetryPolicy,
    Saga,
    SagaContext,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    recover_saga,
)
from saga_core._engine.isolation import restore_in_place

pytestmark = pytest.mark.anyio

StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]
MediatorFactory = Callable[..., SagaMediator]


@dataclasses.dataclass
class Cart(SagaContext):
    items: list[str] = dataclasses.field(default_factory=list)
    total: int = 0


def quick_retry(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, initial_delay=0, jitter=0)


class Recorded(SagaStepHandler[Cart, None]):
    """A step that records the cart each of its calls started from."""

    seen: ClassVar[list[tuple[list[str], int]]] = []
    calls: ClassVar[int] = 0


def add_then_fail(item: str, *, failures: float) -> type[Recorded]:
    """A step that adds ``item`` and 10 to the total, then raises on its first ``failures``
    calls; every call records the cart it started from."""

    class AddThenFail(Recorded):
        name = f"add-{item}"
        seen: ClassVar[list[tuple[list[str], int]]] = []

        async def act(self, context: Cart) -> None:
            type(self).seen.append((list(context.items), context.total))
            type(self).calls += 1
            context.items.append(item)
            context.total += 10
            if type(self).calls <= failures:
                raise RuntimeError(f"{item} failed after changing the cart")

    return AddThenFail


class Add(SagaStepHandler[Cart, None]):
    name = "add-apple"

    async def act(self, context: Cart) -> None:
        context.items.append("apple")
        context.total += 1


class RecordingCompensation(SagaStepHandler[Cart, None]):
    """Adds a pear; its compensation records the cart it sees."""

    name = "add-pear"
    seen: list[tuple[list[str], int]] = []

    async def act(self, context: Cart) -> None:
        context.items.append("pear")
        context.total += 2

    async def compensate(self, context: Cart) -> None:
        RecordingCompensation.seen.append((list(context.items), context.total))
        context.items.remove("pear")
        context.total -= 2


async def test_a_retry_starts_from_the_context_before_the_failed_attempt(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    flaky = add_then_fail("milk", failures=2)
    flaky.retry = quick_retry(3)

    class CartSaga(Saga[Cart]):
        steps = [Add, flaky]

    cart = Cart()
    outcome = await make_mediator(Cart, CartSaga).run(cart)

    assert outcome.status is SagaStatus.COMPLETED
    # Each of the three attempts started from the cart as the first step left it.
    assert flaky.seen == [(["apple"], 1)] * 3
    assert (cart.items, cart.total) == (["apple", "milk"], 11)  # one milk, not three
    assert outcome.context is cart  # restored in place: the caller's object is the saga's
    stored = json.loads((await storage.load(outcome.saga_id)).context)
    assert stored == {"items": ["apple", "milk"], "total": 11}


async def test_the_fallback_runs_on_the_context_its_failed_primary_did_not_keep(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    primary = add_then_fail("express", failures=math.inf)
    fallback = add_then_fail("standard", failures=0)

    class CartSaga(Saga[Cart]):
        steps = [Add, Fallback(step=primary, fallback=fallback)]

    outcome = await make_mediator(Cart, CartSaga).run(Cart())

    assert outcome.status is SagaStatus.COMPLETED
    assert fallback.seen == [(["apple"], 1)]
    stored = json.loads((await storage.load(outcome.saga_id)).context)
    assert stored == {"items": ["apple", "standard"], "total": 11}


async def test_compensations_see_the_context_without_the_failed_attempts_changes(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    RecordingCompensation.seen = []
    failing = add_then_fail("cake", failures=math.inf)

    class CartSaga(Saga[Cart]):
        steps = [Add, RecordingCompensation, failing]

    outcome = await make_mediator(Cart, CartSaga).run(Cart())

    assert outcome.status is SagaStatus.COMPENSATED
    assert RecordingCompensation.seen == [(["apple", "pear"], 3)]  # no cake
    stored = json.loads((await storage.load(outcome.saga_id)).context)
    assert stored == {"items": ["apple"], "total": 1}


async def test_a_failed_compensation_attempt_is_undone_before_its_retry(
    make_mediator: MediatorFactory,
) -> None:
    seen: list[int] = []

    class StubbornUndo(SagaStepHandler[Cart, None]):
        name = "stubborn"
        compensation_retry = quick_retry(3)

        async def act(self, context: Cart) -> None:
            context.total = 100

        async def compensate(self, context: Cart) -> None:
            seen.append(context.total)
            context.total -= 1
            if len(seen) < 3:
                raise RuntimeError("refund service busy")

    class CartSaga(Saga[Cart]):
        steps = [StubbornUndo, add_then_fail("x", failures=math.inf)]

    outcome = await make_mediator(Cart, CartSaga).run(Cart())

    assert outcome.status is SagaStatus.COMPENSATED
    assert seen == [100, 100, 100]
    assert outcome.context.total == 99


async def test_a_live_rollback_sees_what_a_recovered_rollback_sees(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    """The same failure, once live and once after a crash right after it: the compensations
    see the same context."""
    failing = add_then_fail("cake", failures=math.inf)

    class CartSaga(Saga[Cart]):
        steps = [Add, RecordingCompensation, failing]

    RecordingCompensation.seen = []
    await make_mediator(Cart, CartSaga).run(Cart())
    live = list(RecordingCompensation.seen)

    # A crashed runner: the third act failed, the decision to compensate is durable, and the
    # process died before compensating. Recovery starts from the stored context.
    RecordingCompensation.seen = []
    saga_id = uuid.uuid4()
    mediator = make_mediator(Cart, CartSaga)
    async with contextlib.aclosing(mediator.stream(Cart(), saga_id=saga_id)) as stream:
        async for result in stream:
            if result.failed:
                break  # the COMPENSATING checkpoint is written before this result is yielded
    assert RecordingCompensation.seen == []
    with pytest.raises(RuntimeError):
        await recover_saga(saga=CartSaga, saga_id=saga_id, storage=storage)

    assert RecordingCompensation.seen == live == [(["apple", "pear"], 3)]


async def test_an_interrupted_attempts_changes_are_not_written_when_the_saga_is_handed_back(
    make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    started = anyio.Event()

    class Hangs(SagaStepHandler[Cart, None]):
        name = "hangs"

        async def act(self, context: Cart) -> None:
            context.items.append("half-done")
            started.set()
            await anyio.sleep(math.inf)

    class CartSaga(Saga[Cart]):
        steps = [Add, Hangs]

    saga_id = uuid.uuid4()
    mediator = make_mediator(Cart, CartSaga)
    async with anyio.create_task_group() as task_group:

        async def run() -> None:
            await mediator.run(Cart(), saga_id=saga_id)

        task_group.start_soon(run)
        await started.wait()
        task_group.cancel_scope.cancel()

    record = await storage.load(saga_id)
    assert (record.status, record.cursor) == (SagaStatus.RUNNING, 1)
    assert json.loads(record.context) == {"items": ["apple"], "total": 1}


# --- restoring in place ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class SlottedCart:
    items: list[str]
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class FrozenCart:
    total: int


class ModelCart(pydantic.BaseModel):
    items: list[str]
    total: int = 0


@pytest.mark.parametrize(
    ("target", "source"),
    [
        (Cart(["a", "b"], 5), Cart(["a"], 1)),
        (SlottedCart(["a", "b"], "x"), SlottedCart(["a"])),
        (FrozenCart(5), FrozenCart(1)),
        (ModelCart(items=["a", "b"], total=5), ModelCart(items=["a"])),
    ],
    ids=["dataclass", "slots", "frozen", "pydantic"],
)
def test_restore_in_place_makes_the_object_equal_to_the_snapshot(target: Any, source: Any) -> None:
    kept = target
    restore_in_place(target, source)
    assert target is kept
    assert target == source


def test_restore_in_place_drops_attributes_a_failed_attempt_added() -> None:
    cart = Cart()
    cart.scratch = "left by a failed attempt"  # type: ignore[attr-defined]
    restore_in_place(cart, Cart())
    assert not hasattr(cart, "scratch")


def test_restore_in_place_refuses_objects_of_different_classes() -> None:
    with pytest.raises(TypeError, match="cannot restore"):
        restore_in_place(Cart(), SlottedCart([]))
