"""Contract: leases, recoverable sagas, claims, and concurrent writers."""

from __future__ import annotations

from uuid import UUID

import anyio
import anyio.lowlevel
import pytest

from saga_core._model.errors import (
    SagaAlreadyExistsError,
    SagaConcurrencyError,
    SagaLeaseHeldError,
    SagaVersionConflictError,
)
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaRecord, SagaStorage

from ._base import ContractBase, assert_lease, assert_no_lease
from ._factories import make_checkpoint, make_entry, make_new_saga


async def _recoverable_ids(storage: SagaStorage) -> list[UUID]:
    return [record.saga_id for record in await storage.list_recoverable(limit=1000)]


class LeaseContract(ContractBase):
    """Leases by the storage's clock; what is recoverable; claim and claim_recoverable."""

    async def test_create_leases_the_saga_until_the_lease_expires(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_seconds=self.short_lease_seconds)
        await storage.create(new)
        assert await _recoverable_ids(storage) == []
        await self.wait_out_short_lease()
        assert await _recoverable_ids(storage) == [new.saga_id]

    async def test_checkpoint_renews_the_lease(self, storage: SagaStorage) -> None:
        new = make_new_saga(lease_seconds=self.short_lease_seconds)
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=60.0))
        assert_lease(await storage.load(new.saga_id), "runner", 60.0)
        await self.wait_out_short_lease()
        assert await _recoverable_ids(storage) == []

    async def test_checkpoint_without_lease_seconds_releases_the_lease(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
        assert_no_lease(await storage.load(new.saga_id))
        assert await _recoverable_ids(storage) == [new.saga_id]

    @pytest.mark.parametrize("final", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
    async def test_terminal_checkpoint_always_clears_the_lease(
        self, storage: SagaStorage, final: SagaStatus
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        version = 1
        if final is SagaStatus.COMPENSATED:
            await storage.checkpoint(
                make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPENSATING)
            )
            version = 2
        # The final write asks for a lease; the storage clears it anyway.
        terminal = make_checkpoint(new.saga_id, version, status=final, lease_seconds=60.0)
        await storage.checkpoint(terminal)
        assert_no_lease(await storage.load(new.saga_id))

    async def test_list_recoverable_returns_only_unfinished_sagas_without_live_lease(
        self, storage: SagaStorage
    ) -> None:
        wanted = {
            await self.create_recoverable(storage, status=status)
            for status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED)
        }
        for status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
            await self.create_recoverable(storage, status=status)
        await storage.create(make_new_saga())  # leased for 60 s
        records = await storage.list_recoverable()
        assert {record.saga_id for record in records} == wanted
        assert len(records) == len(wanted)
        for record in records:
            assert record == await storage.load(record.saga_id)

    async def test_list_recoverable_orders_oldest_update_first(self, storage: SagaStorage) -> None:
        ids = []
        for _ in range(3):
            new = make_new_saga()
            await storage.create(new)
            ids.append(new.saga_id)
        # Release them in an order that is neither creation nor id order.
        for saga_id in (ids[2], ids[0], ids[1]):
            await self.pause_between_updates()
            await storage.checkpoint(make_checkpoint(saga_id, 1, lease_seconds=None))
        assert await _recoverable_ids(storage) == [ids[2], ids[0], ids[1]]
        await self.pause_between_updates()
        await storage.checkpoint(make_checkpoint(ids[2], 2, cursor=1, lease_seconds=None))
        assert await _recoverable_ids(storage) == [ids[0], ids[1], ids[2]]

    async def test_list_recoverable_respects_limit(self, storage: SagaStorage) -> None:
        ids = []
        for _ in range(5):
            ids.append(await self.create_recoverable(storage))
            await self.pause_between_updates()
        assert [r.saga_id for r in await storage.list_recoverable(limit=2)] == ids[:2]
        assert [r.saga_id for r in await storage.list_recoverable(limit=5)] == ids
        assert [r.saga_id for r in await storage.list_recoverable(limit=50)] == ids

    async def test_list_recoverable_on_empty_storage_returns_nothing(
        self, storage: SagaStorage
    ) -> None:
        assert await storage.list_recoverable() == []

    async def test_list_recoverable_does_not_claim(self, storage: SagaStorage) -> None:
        saga_id = await self.create_recoverable(storage)
        before = await storage.load(saga_id)
        await storage.list_recoverable()
        assert await storage.load(saga_id) == before
        assert await _recoverable_ids(storage) == [saga_id]

    async def test_claim_leased_saga_raises_lease_held_and_changes_nothing(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_owner="runner")
        await storage.create(new)
        before = await storage.load(new.saga_id)
        with pytest.raises(SagaLeaseHeldError):
            await storage.claim(new.saga_id, owner="recovery", lease_seconds=60.0)
        assert await storage.load(new.saga_id) == before

    async def test_claim_by_the_lease_owner_succeeds_while_the_lease_is_live(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_owner="recovery")
        await storage.create(new)
        record = await storage.claim(new.saga_id, owner="recovery", lease_seconds=30.0)
        assert record.version == 2
        assert_lease(record, "recovery", 30.0)

    async def test_claim_succeeds_once_the_lease_has_expired(self, storage: SagaStorage) -> None:
        new = make_new_saga(lease_seconds=self.short_lease_seconds)
        await storage.create(new)
        await self.wait_out_short_lease()
        record = await storage.claim(new.saga_id, owner="recovery", lease_seconds=60.0)
        assert record.version == 2
        assert_lease(record, "recovery", 60.0)

    async def test_a_forced_claim_takes_over_a_live_lease_and_fences_its_runner(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_owner="crashed", lease_seconds=600.0)
        await storage.create(new)
        before = await storage.load(new.saga_id)
        record = await storage.claim(new.saga_id, owner="operator", lease_seconds=60.0, force=True)
        assert (record.version, record.attempts) == (2, 1)
        assert (record.status, record.cursor, record.context) == (
            before.status,
            before.cursor,
            before.context,
        )
        assert_lease(record, "operator", 60.0)
        assert record == await storage.load(new.saga_id)
        # The runner whose lease was taken is refused from now on.
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(make_checkpoint(new.saga_id, 1))
        with pytest.raises(SagaLeaseHeldError):
            await storage.renew_lease(new.saga_id, owner="crashed", lease_seconds=60.0)
        assert await storage.load(new.saga_id) == record

    async def test_a_forced_claim_of_a_stalled_saga_is_a_plain_claim(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self.create_recoverable(storage)
        record = await storage.claim(saga_id, owner="operator", lease_seconds=60.0, force=True)
        assert (record.version, record.attempts) == (3, 1)
        assert_lease(record, "operator", 60.0)

    @pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.FAILED])
    async def test_claim_bumps_version_and_fences_off_the_earlier_runner(
        self, storage: SagaStorage, status: SagaStatus
    ) -> None:
        saga_id = await self.create_recoverable(storage, status=status)
        before = await storage.load(saga_id)
        record = await storage.claim(saga_id, owner="recovery", lease_seconds=60.0)
        assert record.version == before.version + 1
        assert record == await storage.load(saga_id)
        assert (record.status, record.cursor, record.applied, record.context, record.error) == (
            before.status,
            before.cursor,
            before.applied,
            before.context,
            before.error,
        )
        assert_lease(record, "recovery", 60.0)
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(make_checkpoint(saga_id, before.version))
        assert await storage.load(saga_id) == record
        assert await _recoverable_ids(storage) == []

    async def test_claim_recoverable_claims_oldest_update_first_up_to_limit(
        self, storage: SagaStorage
    ) -> None:
        ids = []
        for _ in range(5):
            ids.append(await self.create_recoverable(storage))
            await self.pause_between_updates()
        claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0, limit=3)
        assert [record.saga_id for record in claimed] == ids[:3]
        for record in claimed:
            assert record.version == 3
            assert_lease(record, "recovery", 60.0)
            assert record == await storage.load(record.saga_id)
        assert await _recoverable_ids(storage) == ids[3:]
        rest = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0, limit=3)
        assert [record.saga_id for record in rest] == ids[3:]
        assert await storage.claim_recoverable(owner="recovery", lease_seconds=60.0) == []

    async def test_claim_recoverable_skips_leased_and_finished_sagas(
        self, storage: SagaStorage
    ) -> None:
        wanted = await self.create_recoverable(storage, status=SagaStatus.FAILED)
        await storage.create(make_new_saga())
        for status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
            await self.create_recoverable(storage, status=status)
        claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert [record.saga_id for record in claimed] == [wanted]
        assert claimed[0].status is SagaStatus.FAILED


class ConcurrencyContract(ContractBase):
    """Concurrent writers: compare-and-set and claims hand each write to exactly one task."""

    async def test_concurrent_checkpoints_with_same_version_exactly_one_wins(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        winners: list[int] = []
        losers: list[int] = []

        async def racer(index: int) -> None:
            checkpoint = make_checkpoint(
                new.saga_id,
                1,
                cursor=index,
                context=f'{{"racer": {index}}}',
                journal=[make_entry(f"racer-{index}-a"), make_entry(f"racer-{index}-b")],
            )
            try:
                await storage.checkpoint(checkpoint)
            except SagaVersionConflictError:
                losers.append(index)
            else:
                winners.append(index)

        async with anyio.create_task_group() as tg:
            for index in range(self.racers):
                tg.start_soon(racer, index)
        assert len(winners) == 1, winners
        assert len(losers) == self.racers - 1
        (winner,) = winners
        record = await storage.load(new.saga_id)
        assert (record.version, record.cursor) == (2, winner)
        history = [entry.step_id for entry in await storage.history(new.saga_id)]
        assert history == [f"racer-{winner}-a", f"racer-{winner}-b"]

    async def test_concurrent_creates_of_one_id_exactly_one_wins(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        outcomes: list[str] = []

        async def racer(index: int) -> None:
            try:
                await storage.create(new._replace(context=f'{{"racer": {index}}}'))
            except SagaAlreadyExistsError:
                outcomes.append("refused")
            else:
                outcomes.append("created")

        async with anyio.create_task_group() as tg:
            for index in range(self.racers):
                tg.start_soon(racer, index)
        assert sorted(outcomes) == ["created"] + ["refused"] * (self.racers - 1)
        assert (await storage.load(new.saga_id)).version == 1

    async def test_concurrent_claims_of_one_saga_exactly_one_wins(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self.create_recoverable(storage)
        winners: list[str] = []

        async def racer(owner: str) -> None:
            try:
                await storage.claim(saga_id, owner=owner, lease_seconds=60.0)
            except SagaConcurrencyError:
                # A lease taken first, or a version conflict inside the storage's own CAS.
                pass
            else:
                winners.append(owner)

        async with anyio.create_task_group() as tg:
            for index in range(self.racers):
                tg.start_soon(racer, f"worker-{index}")
        assert len(winners) == 1, winners
        record = await storage.load(saga_id)
        assert record.lease_owner == winners[0]
        assert record.version == 3

    async def test_concurrent_claim_recoverable_never_hands_out_a_saga_twice(
        self, storage: SagaStorage
    ) -> None:
        ids = {await self.create_recoverable(storage) for _ in range(30)}
        claims: list[tuple[str, SagaRecord]] = []

        async def worker(owner: str) -> None:
            for _ in range(len(ids)):  # bounded, so a storage that repeats sagas cannot hang
                batch = await storage.claim_recoverable(owner=owner, lease_seconds=60.0, limit=4)
                if not batch:
                    return
                claims.extend((owner, record) for record in batch)
                await anyio.lowlevel.checkpoint()  # let the other workers in between batches

        async with anyio.create_task_group() as tg:
            for index in range(6):
                tg.start_soon(worker, f"worker-{index}")
        claimed = [record.saga_id for _, record in claims]
        assert len(claimed) == len(set(claimed)), "a saga was claimed twice"
        assert set(claimed) == ids
        for owner, record in claims:
            assert record.lease_owner == owner
            assert (await storage.load(record.saga_id)).lease_owner == owner
