"""Contract: one damaged record never stops the others; a bad saga id is the caller's mistake."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from uuid import UUID

import pytest

from saga_core._model.errors import SagaUsageError, StorageCorruptedError
from saga_core._model.response import Response
from saga_core._model.saga import Saga
from saga_core._model.status import SagaStatus
from saga_core._model.step import SagaStepHandler
from saga_core._runtime.mediator import SagaMap
from saga_core._runtime.worker import RecoveryWorker
from saga_core._storage.protocol import SagaStorage

from ._base import ContractBase
from ._factories import DEFAULT_CONTEXT, make_checkpoint, make_new_saga

#: The kinds of damage a storage's test class may declare in ``damage_kinds``, and what each
#: means. Damage is done behind the storage's back (a hand edit, a bad migration, a bit flip).
DAMAGE_KINDS: dict[str, str] = {
    "context": "the context is not valid JSON",
    "deep_context": "the context is JSON nested far deeper than a parser recurses",
    "applied": "the applied step ids are not a JSON array of strings",
    "status": "the status is not one saga-core knows",
    "timestamp": "a stored timestamp (created_at or updated_at) is not a timestamp",
}

#: Kinds after which the record is no longer selected as recoverable (its status is unknown),
#: so a claim never meets it; every other kind is met, and parked, by a claim.
_NOT_SELECTED = frozenset({"status"})

#: How many healthy sagas share the storage with the damaged one.
_HEALTHY = 5

#: JSON nested this deep overflows any recursive parser (Python's default limit is 1,000).
DEEP_NESTING = 100_000


def deeply_nested_json(depth: int = DEEP_NESTING) -> str:
    """A JSON text of ``depth`` nested arrays, for ``damage_record(..., "deep_context")``."""
    return "[" * depth + "]" * depth


# A one-step saga whose stored records the contract writes by hand, so that a real
# RecoveryWorker can finish them.
@dataclasses.dataclass
class ContractCounter:
    value: int = 0


class ContractBump(SagaStepHandler[ContractCounter, Response]):
    name = "saga_core.testing.bump"

    async def act(self, context: ContractCounter) -> None:
        context.value += 1


class ContractBumpSaga(Saga[ContractCounter]):
    name = "saga_core.testing.bump-saga"
    steps = [ContractBump]


class DamagedRecordContract(ContractBase):
    """A record that cannot be read back is reported and set aside; the others are served.

    A storage's test class lists in :attr:`damage_kinds` the kinds of :data:`DAMAGE_KINDS` its
    records can suffer, and implements :meth:`damage_record` and :meth:`repair_record`. A class
    that lists none skips these tests.
    """

    #: The kinds of :data:`DAMAGE_KINDS` this storage's records can be damaged with.
    damage_kinds: ClassVar[tuple[str, ...]] = ()

    async def damage_record(self, storage: SagaStorage, saga_id: UUID, kind: str) -> None:
        """Override: damage the stored record of ``saga_id`` as ``kind`` says, behind the
        storage's back (for ``"deep_context"`` store :func:`deeply_nested_json`)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement damage_record")

    async def repair_record(self, storage: SagaStorage, saga_id: UUID, kind: str) -> None:
        """Override: undo :meth:`damage_record` on that record (put the damaged part back as it
        was), leaving whatever the storage wrote to the record's other parts since."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement repair_record")

    def _kinds(self) -> tuple[str, ...]:
        unknown = [kind for kind in self.damage_kinds if kind not in DAMAGE_KINDS]
        assert not unknown, f"unknown damage kinds {unknown}; known: {sorted(DAMAGE_KINDS)}"
        if not self.damage_kinds:
            pytest.skip(f"{type(self).__qualname__} declares no damage_kinds")
        return self.damage_kinds

    async def _stalled(self, storage: SagaStorage, count: int) -> list[UUID]:
        """``count`` sagas of :class:`ContractBumpSaga` left RUNNING without a lease."""
        ids = []
        for _ in range(count):
            new = make_new_saga(
                saga_name=ContractBumpSaga.name,
                context=DEFAULT_CONTEXT,
                next_step=ContractBump.name,
            )
            await storage.create(new)
            await storage.checkpoint(
                make_checkpoint(new.saga_id, 1, lease_seconds=None, next_step=ContractBump.name)
            )
            ids.append(new.saga_id)
        return ids

    async def _damaged_among_healthy(
        self, storage: SagaStorage, kind: str
    ) -> tuple[list[UUID], UUID]:
        """:data:`_HEALTHY` stalled sagas and one more, damaged as ``kind`` says."""
        healthy = await self._stalled(storage, _HEALTHY)
        (damaged,) = await self._stalled(storage, 1)
        await self.damage_record(storage, damaged, kind)
        return healthy, damaged

    async def test_loading_a_damaged_record_names_the_saga(self, storage: SagaStorage) -> None:
        for kind in self._kinds():
            (saga_id,) = await self._stalled(storage, 1)
            await self.damage_record(storage, saga_id, kind)
            with pytest.raises(StorageCorruptedError) as caught:
                await storage.load(saga_id)
            assert caught.value.saga_id == saga_id, kind
            assert str(saga_id) in str(caught.value), kind

    async def test_listings_skip_a_damaged_record_and_return_the_others(
        self, storage: SagaStorage
    ) -> None:
        for kind in self._kinds():
            healthy, damaged = await self._damaged_among_healthy(storage, kind)
            listed = {record.saga_id for record in await storage.list_sagas(limit=1000)}
            assert damaged not in listed, kind
            assert set(healthy) <= listed, kind
            recoverable = {record.saga_id for record in await storage.list_recoverable(limit=1000)}
            assert damaged not in recoverable, kind
            assert set(healthy) <= recoverable, kind
            await self.repair_record(storage, damaged, kind)
            for saga_id in (*healthy, damaged):  # done with them: out of the next kind's way
                await storage.claim(saga_id, owner="done", lease_seconds=3600.0)

    async def test_claiming_parks_a_damaged_record_and_claims_the_others(
        self, storage: SagaStorage
    ) -> None:
        for kind in self._kinds():
            healthy, damaged = await self._damaged_among_healthy(storage, kind)
            claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=3600.0)
            assert {record.saga_id for record in claimed} == set(healthy), kind
            assert await storage.claim_recoverable(owner="recovery", lease_seconds=3600.0) == []
            await self.repair_record(storage, damaged, kind)
            record = await storage.load(damaged)
            if kind in _NOT_SELECTED:
                assert not record.parked, kind
            else:
                assert record.parked, f"{kind}: a claimed damaged record must be parked"
                assert record.error is not None
                assert "StorageCorruptedError" in record.error, (kind, record.error)
                assert record.lease_owner is None, kind
            if not record.parked:
                await storage.claim(damaged, owner="done", lease_seconds=3600.0)

    async def test_a_worker_recovers_every_healthy_saga_next_to_a_damaged_one(
        self, storage: SagaStorage
    ) -> None:
        sagas = SagaMap()
        sagas.bind(ContractCounter, ContractBumpSaga)
        worker = RecoveryWorker(sagas, storage, owner="contract-worker", batch_size=20)
        for kind in self._kinds():
            healthy, damaged = await self._damaged_among_healthy(storage, kind)
            report = await worker.run_once()
            assert (report.claimed, report.completed) == (_HEALTHY, _HEALTHY), (kind, report)
            for saga_id in healthy:
                record = await storage.load(saga_id)
                assert record.status is SagaStatus.COMPLETED, kind
                assert record.context.replace(" ", "") == '{"value":1}', kind
            await self.repair_record(storage, damaged, kind)
            if not (await storage.load(damaged)).parked:
                await storage.claim(damaged, owner="done", lease_seconds=3600.0)


#: Values that are not saga ids, as a caller might pass them by mistake.
_NOT_SAGA_IDS: tuple[Any, ...] = ("not-a-uuid", str(uuid.UUID(int=1)), 42, None)


class SagaIdContract(ContractBase):
    """A saga id that is not a :class:`uuid.UUID` is a usage error, raised before any write."""

    async def test_a_saga_id_that_is_not_a_uuid_is_a_usage_error(
        self, storage: SagaStorage
    ) -> None:
        existing = make_new_saga()
        await storage.create(existing)
        for bad in _NOT_SAGA_IDS:
            calls = _calls_with_saga_id(storage, bad)
            for name, call in calls:
                with pytest.raises(SagaUsageError, match="saga_id"):
                    await call()
                    pytest.fail(f"{name}({bad!r}) did not raise")
        # Nothing was written: the one saga is as it was created.
        assert [record.saga_id for record in await storage.list_sagas()] == [existing.saga_id]
        assert (await storage.load(existing.saga_id)).version == 1

    async def test_a_parent_id_that_is_not_a_uuid_is_a_usage_error(
        self, storage: SagaStorage
    ) -> None:
        for bad in _NOT_SAGA_IDS:
            if bad is None:  # no parent: valid
                continue
            child = make_new_saga()._replace(parent_id=bad)
            with pytest.raises(SagaUsageError, match="parent_id"):
                await storage.create(child)
                pytest.fail(f"create with parent_id={bad!r} did not raise")
        assert await storage.list_sagas() == []


def _calls_with_saga_id(
    storage: SagaStorage, saga_id: Any
) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """Every protocol call that takes a saga id, named, each to be made with ``saga_id``."""
    return [
        ("load", lambda: storage.load(saga_id)),
        ("history", lambda: storage.history(saga_id)),
        ("claim", lambda: storage.claim(saga_id, owner="o", lease_seconds=1.0)),
        ("renew_lease", lambda: storage.renew_lease(saga_id, owner="o", lease_seconds=1.0)),
        ("park", lambda: storage.park(saga_id, owner="o", reason="r")),
        ("unpark", lambda: storage.unpark(saga_id)),
        ("create", lambda: storage.create(make_new_saga()._replace(saga_id=saga_id))),
        ("checkpoint", lambda: storage.checkpoint(make_checkpoint(saga_id, 1))),
    ]
