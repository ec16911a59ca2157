"""``mediator.signal``: delivered once (deduplicated by id), kept until the saga waits for it,
and refused with a clear error — stored nothing — when it cannot be taken."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryReport,
    Saga,
    SagaContextError,
    SagaFinishedError,
    SagaNotFoundError,
    SagaSignalRefusedError,
    SagaStatus,
    SagaUsageError,
    WaitForSignal,
    codec_for,
)

from ._wait_sagas import (
    ONE_CALL,
    MediatorFactory,
    OrderContext,
    Payment,
    StepFactory,
    mediator_for,
    order_saga,
    waiting_saga,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def two_waits(make_step: StepFactory) -> type[Saga[OrderContext]]:
    """Step a, a wait for ``paid`` into the payment, one for ``shipped`` into the tracking,
    step b."""
    return order_saga(
        make_step("a"),
        WaitForSignal("paid", into="payment"),
        WaitForSignal("shipped", into="tracking"),
        make_step("b"),
    )


async def test_a_duplicate_signal_id_returns_false_and_is_consumed_once(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)

    assert await mediator.signal(saga_id, "paid", {"amount": 5}, signal_id="evt-1") is True
    writes = storage.write_count
    assert await mediator.signal(saga_id, "paid", {"amount": 6}, signal_id="evt-1") is False
    assert storage.write_count == writes  # nothing stored for the duplicate
    assert [s.signal_id for s in (await storage.load(saga_id)).signals] == ["evt-1"]

    await mediator.worker().run_once()
    record = await storage.load(saga_id)
    assert (record.status, record.waiting_for, record.signals) == (
        SagaStatus.WAITING,
        "shipped",
        (),
    )
    assert mediator.stored_context(record).payment == Payment(amount=5)  # the first one
    # Consumed, its id is still known: a retried delivery is a duplicate, not an error.
    assert await mediator.signal(saga_id, "paid", {"amount": 5}, signal_id="evt-1") is False


async def test_a_second_signal_for_a_wait_with_one_pending_is_refused_not_kept_forever(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    # Signals without an id are never duplicates; but a wait takes one signal, so a second
    # one sent while the first is pending could never be consumed: it is refused, not lost.
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    assert await mediator.signal(saga_id, "paid", {"amount": 1})
    with pytest.raises(SagaSignalRefusedError, match="pending already"):
        await mediator.signal(saga_id, "paid", {"amount": 2})
    assert len((await storage.load(saga_id)).signals) == 1

    await mediator.worker().run_once()

    record = await storage.load(saga_id)
    assert mediator.stored_context(record).payment == Payment(amount=1)
    assert record.signals == ()
    with pytest.raises(SagaSignalRefusedError):
        await mediator.signal(saga_id, "paid", {"amount": 3})  # past its wait now


async def test_a_payload_may_be_a_value_of_the_fields_type(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    await mediator.signal(saga_id, "paid", Payment(amount=9, currency="CHF"))
    await mediator.signal(saga_id, "shipped", "track-1")
    report = await mediator.worker().run_once()

    assert report == RecoveryReport(claimed=1, completed=1)
    context = mediator.stored_context(await storage.load(saga_id))
    assert (context.payment, context.tracking) == (Payment(amount=9, currency="CHF"), "track-1")


async def test_a_signal_to_an_unknown_saga_is_not_found(
    make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    with pytest.raises(SagaNotFoundError):
        await make_mediator(OrderContext, two_waits).signal(uuid.uuid4(), "paid", None)


async def test_a_new_signal_to_a_finished_saga_is_refused_and_a_retry_is_a_duplicate(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    await mediator.signal(saga_id, "paid", {"amount": 1}, signal_id="p")
    await mediator.signal(saga_id, "shipped", "t", signal_id="s")
    await mediator.worker().run_once()
    assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED

    # A webhook retried after the saga ended stays a no-op ...
    assert not await mediator.signal(saga_id, "shipped", "t", signal_id="s")
    # ... while a new signal is refused, saying why.
    with pytest.raises(SagaFinishedError, match="has ended"):
        await mediator.signal(saga_id, "shipped", "t", signal_id="new")


async def test_a_name_the_saga_never_waits_for_is_a_usage_error_naming_its_waits(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    writes = storage.write_count
    with pytest.raises(SagaUsageError, match="never waits for signal 'payd'; it waits for 'paid'"):
        await mediator.signal(saga_id, "payd", {"amount": 1})
    with pytest.raises(SagaUsageError, match="'paid', 'shipped'"):
        await mediator.signal(saga_id, "payd", {"amount": 1})
    assert storage.write_count == writes


async def test_a_saga_without_waits_says_it_waits_for_no_signal(
    make_step: StepFactory,
    make_mediator: MediatorFactory,
    stalled_saga: Callable[..., Awaitable[uuid.UUID]],
) -> None:
    plain_saga = order_saga(make_step("a"))
    mediator = make_mediator(OrderContext, plain_saga)
    saga_id = await stalled_saga(plain_saga, codec_for(OrderContext).encode(OrderContext()))
    with pytest.raises(SagaUsageError, match="it waits for no signal at all"):
        await mediator.signal(saga_id, "paid", None)


async def test_a_signal_after_the_saga_went_past_its_wait_is_refused(
    storage: MemorySagaStorage, make_mediator: MediatorFactory, two_waits: type[Saga[Any]]
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    await mediator.signal(saga_id, "paid", {"amount": 1})
    await mediator.worker().run_once()  # took it; waits for "shipped" now

    writes = storage.write_count
    with pytest.raises(SagaSignalRefusedError, match="gone past its wait for signal 'paid'"):
        await mediator.signal(saga_id, "paid", {"amount": 2})
    assert storage.write_count == writes
    assert (await storage.load(saga_id)).signals == ()


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("paid", {"amount": "ten"}, r"does not fit OrderContext\.payment"),
        ("paid", {"amout": 3}, r"does not fit OrderContext\.payment"),
        ("paid", "ten euros", r"does not fit OrderContext\.payment"),
        ("shipped", 42, r"does not fit OrderContext\.tracking"),
        ("paid", object(), r"does not fit OrderContext\.payment"),
    ],
)
async def test_a_payload_that_does_not_fit_the_field_is_refused_and_nothing_is_stored(
    storage: MemorySagaStorage,
    make_mediator: MediatorFactory,
    two_waits: type[Saga[Any]],
    name: str,
    payload: Any,
    message: str,
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    writes = storage.write_count
    with pytest.raises(SagaContextError, match=message):
        await mediator.signal(saga_id, name, payload, signal_id="bad")
    assert storage.write_count == writes
    assert (await storage.load(saga_id)).signals == ()
    # nothing was remembered either: the same id may be sent again with a good payload
    good = {"amount": 1} if name == "paid" else "t-1"
    assert await mediator.signal(saga_id, name, good, signal_id="bad") is True


async def test_a_payload_of_a_wait_without_a_field_must_be_json(
    storage: MemorySagaStorage, make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    mediator = make_mediator(OrderContext, order_saga(WaitForSignal("go"), make_step("b")))
    saga_id = await waiting_saga(mediator)
    with pytest.raises(SagaContextError, match="must be JSON data"):
        await mediator.signal(saga_id, "go", {1, 2})
    assert await mediator.signal(saga_id, "go", {"any": ["json", 1]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "signal name must be a non-empty string"),
        ({"signal_id": ""}, "signal_id must be a non-empty string"),
        ({"signal_id": 7}, "signal_id must be a non-empty string"),
        ({"saga_id": "not-a-uuid"}, r"saga_id must be a uuid\.UUID"),
    ],
)
async def test_bad_arguments_are_usage_errors(
    make_mediator: MediatorFactory,
    two_waits: type[Saga[Any]],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    mediator = make_mediator(OrderContext, two_waits)
    saga_id = await waiting_saga(mediator)
    arguments: dict[str, Any] = {"saga_id": saga_id, "name": "paid", "payload": None}
    arguments.update(kwargs)
    with pytest.raises(SagaUsageError, match=message):
        await mediator.signal(**arguments)


async def test_a_signal_is_refused_once_the_saga_rolls_back(
    storage: MemorySagaStorage, make_step: StepFactory, make_mediator: MediatorFactory
) -> None:
    saga = order_saga(
        make_step("a", compensate_fails=1, compensation_retry=ONE_CALL),
        make_step("b", act_fails=1),
        WaitForSignal("paid"),
    )
    mediator = make_mediator(OrderContext, saga)
    outcome = await mediator.run(OrderContext())
    assert outcome.status is SagaStatus.FAILED  # b failed, a's compensation was exhausted
    with pytest.raises(SagaSignalRefusedError, match="it is failed"):
        await mediator.signal(outcome.saga_id, "paid", None)
    assert (await storage.load(outcome.saga_id)).signals == ()


async def test_a_signal_wakes_the_mediators_worker_at_once(
    two_waits: type[Saga[Any]],
) -> None:
    mediator = mediator_for(two_waits, MemorySagaStorage())
    saga_id = await waiting_saga(mediator)
    async with anyio.create_task_group() as tg:
        # A poll interval far beyond the test's bound: only the wake-up can resume it in time.
        await tg.start(mediator.worker(poll_interval=60).run)
        with anyio.fail_after(1):
            await mediator.signal(saga_id, "paid", {"amount": 1})
            await mediator.signal(saga_id, "shipped", "t")
            outcome = await mediator.handle(saga_id).result(poll_interval=0.01)
        tg.cancel_scope.cancel()
    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.context.tracking == "t"
