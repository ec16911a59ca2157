"""Contract: cancels — a durable request that stops a saga from moving forward."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from saga_core._model.errors import (
    SagaCancelledError,
    SagaFinishedError,
    SagaNotFoundError,
)
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import Checkpoint, SagaRecord, SagaStorage

from ._base import HOUR, ContractBase, assert_between, recoverable_ids
from ._factories import make_checkpoint, make_entry, make_new_saga


def _without_cancel(record: SagaRecord, before: SagaRecord) -> SagaRecord:
    """``record`` with what a cancel request may change (its reason, a WAITING saga's wake_at,
    and ``updated_at``, which the rules leave free) put back as in ``before``."""
    return record._replace(
        cancel_reason=before.cancel_reason, wake_at=before.wake_at, updated_at=before.updated_at
    )


class CancelContract(ContractBase):
    """request_cancel, and the checkpoints a cancelled saga may and may not write."""

    async def _running_at(self, storage: SagaStorage, cursor: int) -> UUID:
        """A RUNNING saga at ``cursor``, version 2, leased to its runner."""
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 1, cursor=cursor, applied=("step-1",))
        )
        return new.saga_id

    @pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.WAITING])
    async def test_request_cancel_stores_the_first_reason_without_a_new_version(
        self, storage: SagaStorage, status: SagaStatus
    ) -> None:
        if status is SagaStatus.WAITING:
            saga_id = await self.create_waiting(storage, wake_at=self.now_plus(-HOUR))
        else:
            saga_id = await self._running_at(storage, 1)
        before = await storage.load(saga_id)
        record = await storage.request_cancel(saga_id, reason="first")
        assert record.cancel_reason == "first"
        assert record == await storage.load(saga_id)
        assert _without_cancel(record, before) == before
        again = await storage.request_cancel(saga_id, reason="second")
        assert again == record
        assert await storage.load(saga_id) == record

    @pytest.mark.parametrize("wake", ["future", "none"])
    async def test_request_cancel_makes_a_waiting_saga_due_at_the_request(
        self, storage: SagaStorage, wake: str
    ) -> None:
        wake_at = self.now_plus(HOUR) if wake == "future" else None
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        assert await recoverable_ids(storage) == []
        earliest = self.now_plus(-self.clock_skew_seconds)
        record = await storage.request_cancel(saga_id, reason="operator")
        latest = self.now_plus(self.clock_skew_seconds)
        assert_between(record.wake_at, earliest, latest)
        assert record.status is SagaStatus.WAITING
        assert await recoverable_ids(storage) == [saga_id]
        (claimed,) = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert (claimed.saga_id, claimed.cancel_reason) == (saga_id, "operator")

    async def test_request_cancel_leaves_the_wake_at_of_a_saga_already_due(
        self, storage: SagaStorage
    ) -> None:
        wake_at = self.now_plus(-HOUR)
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        record = await storage.request_cancel(saga_id, reason="operator")
        assert record.wake_at == wake_at

    @pytest.mark.parametrize("status", [SagaStatus.COMPENSATING, SagaStatus.FAILED])
    async def test_request_cancel_of_a_saga_already_rolling_back_returns_it_unchanged(
        self, storage: SagaStorage, status: SagaStatus
    ) -> None:
        saga_id = await self.create_recoverable(storage, status=status)
        before = await storage.load(saga_id)
        assert await storage.request_cancel(saga_id, reason="operator") == before
        assert await storage.load(saga_id) == before

    @pytest.mark.parametrize("final", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
    async def test_request_cancel_of_a_finished_saga_raises_finished(
        self, storage: SagaStorage, final: SagaStatus
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        await self.finish(storage, new.saga_id, final)
        before = await storage.load(new.saga_id)
        with pytest.raises(SagaFinishedError):
            await storage.request_cancel(new.saga_id, reason="operator")
        assert await storage.load(new.saga_id) == before

    async def test_request_cancel_of_an_unknown_saga_raises_not_found(
        self, storage: SagaStorage
    ) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.request_cancel(uuid4(), reason="operator")

    @pytest.mark.parametrize(
        "move",
        ["completed", "waiting-from-running", "greater-cursor", "compensating-greater-cursor"],
    )
    async def test_while_cancelled_a_checkpoint_moving_forward_is_refused_writing_nothing(
        self, storage: SagaStorage, move: str
    ) -> None:
        saga_id = await self._running_at(storage, 1)
        await storage.request_cancel(saga_id, reason="operator")
        before = await storage.load(saga_id)
        journal = [make_entry("step-2")]
        forward: Checkpoint = {
            "completed": make_checkpoint(
                saga_id, 2, status=SagaStatus.COMPLETED, cursor=1, journal=journal
            ),
            "waiting-from-running": make_checkpoint(
                saga_id, 2, status=SagaStatus.WAITING, cursor=1, journal=journal, waiting_for="a"
            ),
            "greater-cursor": make_checkpoint(saga_id, 2, cursor=2, journal=journal),
            "compensating-greater-cursor": make_checkpoint(
                saga_id, 2, status=SagaStatus.COMPENSATING, cursor=2, journal=journal
            ),
        }[move]
        with pytest.raises(SagaCancelledError):
            await storage.checkpoint(forward)
        assert await storage.load(saga_id) == before
        assert await storage.history(saga_id) == []

    async def test_while_cancelled_hand_backs_and_compensation_are_written(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._running_at(storage, 2)
        await storage.request_cancel(saga_id, reason="operator")
        writes = [
            # A hand-back at the same cursor, then the decision to compensate and the rollback.
            make_checkpoint(saga_id, 2, cursor=2, lease_seconds=None),
            make_checkpoint(saga_id, 3, status=SagaStatus.COMPENSATING, cursor=2),
            make_checkpoint(saga_id, 4, status=SagaStatus.COMPENSATING, cursor=1, applied=()),
            make_checkpoint(saga_id, 5, status=SagaStatus.COMPENSATED, cursor=1, applied=()),
        ]
        for checkpoint in writes:
            await storage.checkpoint(checkpoint)
            record = await storage.load(saga_id)
            assert (record.version, record.status, record.cursor) == (
                checkpoint.expected_version + 1,
                checkpoint.status,
                checkpoint.cursor,
            )
            assert record.cancel_reason == "operator"

    async def test_while_cancelled_a_waiting_saga_may_wait_again_and_stays_due(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self.create_waiting(storage, wake_at=self.now_plus(HOUR))
        await storage.request_cancel(saga_id, reason="operator")
        await storage.checkpoint(
            make_checkpoint(
                saga_id, 2, status=SagaStatus.WAITING, wake_at=self.now_plus(HOUR), waiting_for="a"
            )
        )
        record = await storage.load(saga_id)
        assert (record.version, record.status) == (3, SagaStatus.WAITING)
        assert await recoverable_ids(storage) == [saga_id]
