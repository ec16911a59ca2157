"""Contract: the operations recovery workers and operators use — lease renewal, listing with
filters, recovery attempts, and the dead-letter state (park / unpark)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from saga_core._model.errors import (
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaNotFoundError,
    SagaParkedError,
    SagaUsageError,
    SagaVersionConflictError,
)
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaStorage

from ._base import ContractBase, assert_no_lease
from ._factories import DEFAULT_OWNER, make_checkpoint, make_new_saga


async def _recoverable_ids(storage: SagaStorage) -> list[UUID]:
    return [record.saga_id for record in await storage.list_recoverable(limit=1000)]


class OperationsContract(ContractBase):
    """renew_lease, list_sagas, attempts, park and unpark."""

    # --- renew_lease -------------------------------------------------------------------------

    async def test_renew_lease_extends_the_owners_lease_and_nothing_else(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_seconds=self.short_lease_seconds)
        await storage.create(new)
        before = await storage.load(new.saga_id)
        await storage.renew_lease(new.saga_id, owner=DEFAULT_OWNER, lease_seconds=60.0)
        after = await storage.load(new.saga_id)
        assert after.version == before.version
        assert after.lease_owner == DEFAULT_OWNER
        assert after.lease_expires_at is not None and before.lease_expires_at is not None
        assert after.lease_expires_at > before.lease_expires_at
        await self.wait_out_short_lease()
        assert await _recoverable_ids(storage) == []
        assert (after.status, after.cursor, after.context) == (
            before.status,
            before.cursor,
            before.context,
        )

    async def test_renew_lease_by_another_owner_raises_lease_held(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        with pytest.raises(SagaLeaseHeldError):
            await storage.renew_lease(new.saga_id, owner="someone-else", lease_seconds=60.0)
        assert (await storage.load(new.saga_id)).lease_owner == DEFAULT_OWNER

    async def test_renew_lease_after_a_takeover_raises_lease_held(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(lease_seconds=self.short_lease_seconds)
        await storage.create(new)
        await self.wait_out_short_lease()
        await storage.claim(new.saga_id, owner="recoverer", lease_seconds=60.0)
        with pytest.raises(SagaLeaseHeldError):
            await storage.renew_lease(new.saga_id, owner=DEFAULT_OWNER, lease_seconds=60.0)
        assert (await storage.load(new.saga_id)).lease_owner == "recoverer"

    async def test_renew_lease_of_a_released_lease_raises_lease_held(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
        with pytest.raises(SagaLeaseHeldError):
            await storage.renew_lease(new.saga_id, owner=DEFAULT_OWNER, lease_seconds=60.0)

    async def test_renew_lease_of_a_finished_or_unknown_saga_raises(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        await self.finish(storage, new.saga_id, SagaStatus.COMPLETED)
        with pytest.raises(SagaFinishedError):
            await storage.renew_lease(new.saga_id, owner=DEFAULT_OWNER, lease_seconds=60.0)
        with pytest.raises(SagaNotFoundError):
            await storage.renew_lease(uuid4(), owner="runner", lease_seconds=60.0)

    # --- list_sagas ----------------------------------------------------------------------------

    async def test_list_sagas_filters_by_status_name_and_age(self, storage: SagaStorage) -> None:
        running = await self.create_recoverable(storage, status=SagaStatus.RUNNING)
        failed = await self.create_recoverable(storage, status=SagaStatus.FAILED)
        await self.pause_between_updates()
        cutoff = datetime.now(timezone.utc)
        await self.pause_between_updates()
        other = make_new_saga(saga_name="other-saga")
        await storage.create(other)

        everything = [r.saga_id for r in await storage.list_sagas()]
        assert everything == [running, failed, other.saga_id]
        by_status = await storage.list_sagas(status=SagaStatus.FAILED)
        assert [r.saga_id for r in by_status] == [failed]
        by_name = await storage.list_sagas(saga_name="other-saga")
        assert [r.saga_id for r in by_name] == [other.saga_id]
        old = await storage.list_sagas(updated_before=cutoff)
        assert [r.saga_id for r in old] == [running, failed]
        both = await storage.list_sagas(status=SagaStatus.RUNNING, saga_name="other-saga")
        assert [r.saga_id for r in both] == [other.saga_id]
        assert [r.saga_id for r in await storage.list_sagas(limit=1)] == [running]
        assert await storage.list_sagas(limit=0) == []

    async def test_list_sagas_includes_finished_sagas(self, storage: SagaStorage) -> None:
        done = await self.create_recoverable(storage, status=SagaStatus.COMPLETED)
        listed = await storage.list_sagas(status=SagaStatus.COMPLETED)
        assert [r.saga_id for r in listed] == [done]

    async def test_list_sagas_filters_by_lease_owner_live_or_expired(
        self, storage: SagaStorage
    ) -> None:
        first = make_new_saga(lease_owner="orders-7", lease_seconds=self.short_lease_seconds)
        await storage.create(first)
        await self.pause_between_updates()
        second = make_new_saga(lease_owner="orders-7")
        await storage.create(second)
        await storage.create(make_new_saga(lease_owner="orders-8"))
        released = await self.create_recoverable(storage)  # created by "runner", released
        finished = make_new_saga(lease_owner="orders-7")
        await storage.create(finished)
        await self.finish(storage, finished.saga_id, SagaStatus.COMPLETED)

        owned = await storage.list_sagas(lease_owner="orders-7")
        assert [r.saga_id for r in owned] == [first.saga_id, second.saga_id]
        assert {r.lease_owner for r in owned} == {"orders-7"}
        # An expired lease still names its owner until someone else claims the saga.
        await self.wait_out_short_lease()
        still = await storage.list_sagas(lease_owner="orders-7", limit=1)
        assert [r.saga_id for r in still] == [first.saga_id]
        await storage.claim(first.saga_id, owner="orders-8", lease_seconds=60.0)
        assert [r.saga_id for r in await storage.list_sagas(lease_owner="orders-7")] == [
            second.saga_id
        ]
        by_both = await storage.list_sagas(lease_owner="orders-8", status=SagaStatus.COMPLETED)
        assert by_both == []
        assert released not in {r.saga_id for r in await storage.list_sagas(lease_owner="runner")}

    @pytest.mark.parametrize("owner", ["", 7])
    async def test_list_sagas_refuses_a_lease_owner_that_is_not_a_name(
        self, storage: SagaStorage, owner: object
    ) -> None:
        with pytest.raises(SagaUsageError, match="lease_owner"):
            await storage.list_sagas(lease_owner=owner)  # type: ignore[arg-type]

    # --- attempts and the dead-letter state -------------------------------------------------

    async def test_each_claim_counts_one_attempt(self, storage: SagaStorage) -> None:
        saga_id = await self.create_recoverable(storage)
        assert (await storage.load(saga_id)).attempts == 0
        await storage.claim(saga_id, owner="w1", lease_seconds=self.short_lease_seconds)
        await self.wait_out_short_lease()
        [claimed] = await storage.claim_recoverable(owner="w2", lease_seconds=60.0)
        assert claimed.attempts == 2
        assert (await storage.load(saga_id)).attempts == 2

    async def test_park_moves_the_saga_to_the_dead_letter_state(self, storage: SagaStorage) -> None:
        saga_id = await self.create_recoverable(storage, status=SagaStatus.FAILED)
        claimed = await storage.claim(saga_id, owner="worker", lease_seconds=60.0)
        await storage.park(saga_id, owner="worker", reason="gave up after 5 attempts")
        parked = await storage.load(saga_id)
        assert parked.parked is True
        assert parked.status is SagaStatus.FAILED
        assert parked.error == "gave up after 5 attempts"
        assert parked.version == claimed.version + 1
        assert_no_lease(parked)
        assert await _recoverable_ids(storage) == []
        assert await storage.claim_recoverable(owner="other", lease_seconds=60.0) == []
        with pytest.raises(SagaParkedError):
            await storage.claim(saga_id, owner="other", lease_seconds=60.0)
        with pytest.raises(SagaParkedError):
            await storage.claim(saga_id, owner="other", lease_seconds=60.0, force=True)
        listed = await storage.list_sagas(parked=True)
        assert [r.saga_id for r in listed] == [saga_id]
        assert await storage.list_sagas(parked=False) == []

    async def test_park_fences_off_the_earlier_runner(self, storage: SagaStorage) -> None:
        saga_id = await self.create_recoverable(storage)
        claimed = await storage.claim(saga_id, owner="worker", lease_seconds=60.0)
        await storage.park(saga_id, owner="worker", reason="stuck")
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(make_checkpoint(saga_id, claimed.version))

    async def test_park_needs_the_lease(self, storage: SagaStorage) -> None:
        new = make_new_saga()
        await storage.create(new)
        with pytest.raises(SagaLeaseHeldError):
            await storage.park(new.saga_id, owner="not-the-owner", reason="x")
        assert (await storage.load(new.saga_id)).parked is False
        done = await self.create_recoverable(storage, status=SagaStatus.COMPENSATED)
        with pytest.raises(SagaFinishedError):
            await storage.park(done, owner="runner", reason="x")

    async def test_unpark_makes_the_saga_recoverable_again_with_fresh_attempts(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self.create_recoverable(storage, status=SagaStatus.FAILED)
        await storage.claim(saga_id, owner="worker", lease_seconds=60.0)
        await storage.park(saga_id, owner="worker", reason="gave up")
        record = await storage.unpark(saga_id)
        assert record.parked is False
        assert record.attempts == 0
        assert await _recoverable_ids(storage) == [saga_id]
        claimed = await storage.claim(saga_id, owner="operator", lease_seconds=60.0)
        assert claimed.attempts == 1

    async def test_unpark_of_a_saga_that_is_not_parked_changes_nothing(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self.create_recoverable(storage)
        before = await storage.load(saga_id)
        after = await storage.unpark(saga_id)
        assert after == before
        with pytest.raises(SagaNotFoundError):
            await storage.unpark(uuid4())

    async def test_new_records_are_not_parked_and_have_no_attempts(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        record = await storage.load(new.saga_id)
        assert (record.parked, record.attempts) == (False, 0)
        assert record.updated_at - record.created_at < timedelta(seconds=5)
