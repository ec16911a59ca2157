"""A caller's mistake gets a clear usage error before anything is written (invariant 13):
saga ids that are not UUIDs, and a context builder that does not fit the saga."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from saga_core import (
    MemorySagaStorage,
    RecoveryWorker,
    Saga,
    SagaContext,
    SagaMap,
    SagaMediator,
    SagaRecoveryError,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    StorageCorruptedError,
    recover_saga,
)

pytestmark = pytest.mark.anyio

MediatorFactory = Callable[..., SagaMediator]
StepFactory = Callable[..., type[SagaStepHandler[Any, Any]]]

NOT_UUIDS = ["3f1c0b9e-0000-4000-8000-000000000000", "order-42", 42, b"\x00" * 16]


@dataclasses.dataclass
class Parcel(SagaContext):
    weight: int = 1


@dataclasses.dataclass(kw_only=True)
class HeavyParcel(Parcel):
    crane: str


@dataclasses.dataclass
class Letter(SagaContext):
    text: str = ""


class Ship(SagaStepHandler[Parcel, None]):
    name = "ship"

    async def act(self, context: Parcel) -> None:
        context.weight += 1


class ShipSaga(Saga[Parcel]):
    steps = [Ship]


@pytest.mark.parametrize("bad", NOT_UUIDS, ids=repr)
async def test_starting_with_a_saga_id_that_is_not_a_uuid_writes_nothing(
    bad: Any, make_mediator: MediatorFactory, storage: MemorySagaStorage
) -> None:
    mediator = make_mediator(Parcel, ShipSaga)
    with pytest.raises(SagaUsageError, match=r"saga_id must be a uuid\.UUID"):
        await mediator.run(Parcel(), saga_id=bad)
    with pytest.raises(SagaUsageError, match=r"saga_id must be a uuid\.UUID"):
        async for _ in mediator.stream(Parcel(), saga_id=bad):
            pass
    assert await storage.list_sagas() == []


@pytest.mark.parametrize("bad", NOT_UUIDS, ids=repr)
async def test_recovering_a_saga_id_that_is_not_a_uuid_is_a_usage_error(
    bad: Any, storage: MemorySagaStorage
) -> None:
    with pytest.raises(SagaUsageError, match=r"saga_id must be a uuid\.UUID"):
        await recover_saga(saga=ShipSaga, saga_id=bad, storage=storage)
    sagas = SagaMap()
    sagas.bind(Parcel, ShipSaga)
    with pytest.raises(SagaUsageError, match=r"saga_id must be a uuid\.UUID"):
        await RecoveryWorker(sagas, storage).recover(bad)


async def test_a_string_saga_id_error_says_how_to_convert_it(
    make_mediator: MediatorFactory,
) -> None:
    with pytest.raises(SagaUsageError, match=r"uuid\.UUID\(text\)"):
        text: Any = str(uuid.uuid4())
        await make_mediator(Parcel, ShipSaga).run(Parcel(), saga_id=text)


# --- context_builder -----------------------------------------------------------------------------


async def stalled(storage: MemorySagaStorage, stalled_saga: Any, context: str) -> uuid.UUID:
    saga_id: uuid.UUID = await stalled_saga(ShipSaga, context)
    return saga_id


async def test_a_context_builder_of_another_type_is_a_usage_error(
    storage: MemorySagaStorage, stalled_saga: Any
) -> None:
    saga_id = await stalled(storage, stalled_saga, '{"weight": 3}')
    with pytest.raises(SagaUsageError, match=r"context_builder=Letter is not a Parcel"):
        await recover_saga(saga=ShipSaga, saga_id=saga_id, storage=storage, context_builder=Letter)
    assert (await storage.load(saga_id)).version == 2  # not claimed


async def test_a_subclass_the_stored_context_is_not_is_a_usage_error(
    storage: MemorySagaStorage, stalled_saga: Any
) -> None:
    saga_id = await stalled(storage, stalled_saga, '{"weight": 3}')
    with pytest.raises(SagaUsageError, match=r"decodes as Parcel"):
        await recover_saga(
            saga=ShipSaga, saga_id=saga_id, storage=storage, context_builder=HeavyParcel
        )


async def test_a_context_builder_that_raises_is_a_usage_error(
    storage: MemorySagaStorage, stalled_saga: Any
) -> None:
    saga_id = await stalled(storage, stalled_saga, '{"weight": 3}')

    def build(data: dict[str, Any]) -> Parcel:
        return Parcel(**data, colour="red")  # type: ignore[call-arg]

    with pytest.raises(SagaUsageError, match=r"context_builder .* failed .*TypeError"):
        await recover_saga(saga=ShipSaga, saga_id=saga_id, storage=storage, context_builder=build)


async def test_something_that_is_not_a_builder_is_a_usage_error(
    storage: MemorySagaStorage, stalled_saga: Any
) -> None:
    saga_id = await stalled(storage, stalled_saga, '{"weight": 3}')
    with pytest.raises(SagaUsageError, match="must be a context class or a callable"):
        await recover_saga(
            saga=ShipSaga,
            saga_id=saga_id,
            storage=storage,
            context_builder="Parcel",  # type: ignore[arg-type]
        )


async def test_a_context_stored_by_a_subclass_is_still_a_recovery_error(
    storage: MemorySagaStorage, stalled_saga: Any
) -> None:
    saga_id = await stalled(storage, stalled_saga, '{"weight": 3, "crane": "big"}')
    with pytest.raises(SagaRecoveryError, match="decodes as HeavyParcel"):
        await recover_saga(saga=ShipSaga, saga_id=saga_id, storage=storage)
    outcome = await recover_saga(
        saga=ShipSaga, saga_id=saga_id, storage=storage, context_builder=HeavyParcel
    )
    assert outcome.status is SagaStatus.COMPLETED


async def test_a_damaged_context_is_still_corrupt_and_names_the_saga(
    storage: MemorySagaStorage, stalled_saga: Any
) -> None:
    saga_id = await stalled(storage, stalled_saga, '{"weight": "heavy"}')
    with pytest.raises(StorageCorruptedError) as caught:
        await recover_saga(saga=ShipSaga, saga_id=saga_id, storage=storage)
    assert caught.value.saga_id == saga_id
