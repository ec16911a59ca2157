"""Contract: durable waits — WAITING sagas, their instants, when they are due, and claims."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from saga_core._model.errors import (
    SagaLeaseHeldError,
    SagaNotFoundError,
    SagaParkedError,
    SagaUsageError,
)
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import NewSaga, SagaRecord, SagaStorage

from ._base import (
    HOUR,
    ContractBase,
    assert_between,
    assert_lease,
    assert_no_lease,
    assert_utc,
    recoverable_ids,
)
from ._factories import (
    DEFAULT_SIGNAL,
    make_checkpoint,
    make_new_saga,
    make_signal,
)

#: The ways a NewSaga breaks the rules of ``create``, as builders of (now) -> NewSaga.
_INVALID_NEW_SAGAS: dict[str, Callable[[datetime], NewSaga]] = {
    "running-without-lease-owner": lambda now: make_new_saga()._replace(lease_owner=None),
    "running-without-lease-seconds": lambda now: make_new_saga()._replace(lease_seconds=None),
    "waiting-with-a-lease": lambda now: make_new_saga(
        status=SagaStatus.WAITING, lease_owner="runner", lease_seconds=60.0
    ),
    "waiting-with-a-naive-wake-at": lambda now: make_new_saga(
        status=SagaStatus.WAITING, wake_at=now.replace(tzinfo=None)
    ),
    "waiting-without-wake-at": lambda now: make_new_saga(status=SagaStatus.WAITING)._replace(
        wake_at=None
    ),
    "naive-deadline-at": lambda now: make_new_saga(deadline_at=now.replace(tzinfo=None)),
    "neither-running-nor-waiting": lambda now: make_new_saga()._replace(
        status=SagaStatus.COMPENSATING
    ),
}


def _in_other_zone(value: datetime) -> datetime:
    """The same instant in a non-UTC zone, so a storage must convert it, not copy the zone."""
    return value.astimezone(timezone(timedelta(hours=2)))


class WaitingContract(ContractBase):
    """WAITING sagas: create, checkpoint, deadline, the due rules, claims and parking."""

    # --- create and checkpoint ---------------------------------------------------------------

    async def test_create_stores_a_waiting_saga_without_lease_with_wake_at_and_deadline_at(
        self, storage: SagaStorage
    ) -> None:
        wake_at = _in_other_zone(self.now_plus(HOUR))
        deadline_at = _in_other_zone(self.now_plus(2 * HOUR))
        new = make_new_saga(status=SagaStatus.WAITING, wake_at=wake_at, deadline_at=deadline_at)
        await storage.create(new)
        record = await storage.load(new.saga_id)
        assert (record.status, record.version, record.cursor, record.attempts) == (
            SagaStatus.WAITING,
            1,
            0,
            0,
        )
        assert_no_lease(record)
        assert_utc(record.wake_at)
        assert_utc(record.deadline_at)
        assert (record.wake_at, record.deadline_at) == (wake_at, deadline_at)
        assert (record.waiting_for, record.cancel_reason, record.signals) == (None, None, ())
        assert await recoverable_ids(storage) == []

    async def test_create_of_a_running_saga_stores_its_deadline_and_no_wait(
        self, storage: SagaStorage
    ) -> None:
        deadline_at = self.now_plus(HOUR)
        new = make_new_saga(deadline_at=deadline_at)
        await storage.create(new)
        record = await storage.load(new.saga_id)
        assert record.status is SagaStatus.RUNNING
        assert record.deadline_at == deadline_at
        assert (record.wake_at, record.waiting_for) == (None, None)
        assert (record.cancel_reason, record.signals) == (None, ())

    @pytest.mark.parametrize("kind", sorted(_INVALID_NEW_SAGAS))
    async def test_create_refuses_a_new_saga_breaking_the_rules_with_usage_error(
        self, storage: SagaStorage, kind: str
    ) -> None:
        new = _INVALID_NEW_SAGAS[kind](self.now_plus(HOUR))
        with pytest.raises(SagaUsageError):
            await storage.create(new)
        with pytest.raises(SagaNotFoundError):
            await storage.load(new.saga_id)

    async def test_checkpoint_to_waiting_clears_the_lease_and_stores_wake_at_and_waiting_for(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        wake_at = _in_other_zone(self.now_plus(HOUR))
        # The checkpoint asks for a lease; a WAITING saga holds none.
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                1,
                status=SagaStatus.WAITING,
                lease_seconds=60.0,
                wake_at=wake_at,
                waiting_for=DEFAULT_SIGNAL,
            )
        )
        record = await storage.load(new.saga_id)
        assert (record.status, record.version) == (SagaStatus.WAITING, 2)
        assert_no_lease(record)
        assert_utc(record.wake_at)
        assert (record.wake_at, record.waiting_for) == (wake_at, DEFAULT_SIGNAL)
        # A second wait replaces both, as given: a sleep waits for no signal.
        later = self.now_plus(2 * HOUR)
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 2, status=SagaStatus.WAITING, cursor=1, wake_at=later)
        )
        record = await storage.load(new.saga_id)
        assert (record.wake_at, record.waiting_for) == (later, None)
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 3, status=SagaStatus.WAITING, cursor=2, waiting_for="b")
        )
        record = await storage.load(new.saga_id)
        assert (record.wake_at, record.waiting_for) == (None, "b")

    @pytest.mark.parametrize(
        "status", [SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPLETED]
    )
    async def test_checkpoint_to_any_other_status_stores_no_wake_at_nor_waiting_for(
        self, storage: SagaStorage, status: SagaStatus
    ) -> None:
        saga_id = await self.create_waiting(storage, wake_at=self.now_plus(HOUR))
        await storage.checkpoint(
            make_checkpoint(
                saga_id,
                2,
                status=status,
                cursor=1,
                wake_at=self.now_plus(HOUR),
                waiting_for=DEFAULT_SIGNAL,
            )
        )
        record = await storage.load(saga_id)
        assert record.status is status
        assert (record.wake_at, record.waiting_for) == (None, None)

    async def test_deadline_at_is_stored_at_creation_and_never_changes(
        self, storage: SagaStorage
    ) -> None:
        deadline_at = _in_other_zone(self.now_plus(HOUR))
        new = make_new_saga(deadline_at=deadline_at)
        await storage.create(new)
        saga_id = new.saga_id
        await storage.checkpoint(
            make_checkpoint(
                saga_id, 1, status=SagaStatus.WAITING, next_step=new.next_step, waiting_for="a"
            )
        )
        assert (await storage.load(saga_id)).deadline_at == deadline_at
        assert await storage.deliver_signal(make_signal(saga_id))
        assert (await storage.load(saga_id)).deadline_at == deadline_at
        claimed = await storage.claim(saga_id, owner="recovery", lease_seconds=60.0)
        assert claimed.deadline_at == deadline_at
        cancelled = await storage.request_cancel(saga_id, reason="too late")
        assert cancelled.deadline_at == deadline_at
        for version, status in ((3, SagaStatus.COMPENSATING), (4, SagaStatus.COMPENSATED)):
            await storage.checkpoint(make_checkpoint(saga_id, version, status=status))
            assert (await storage.load(saga_id)).deadline_at == deadline_at

    # --- due rules ---------------------------------------------------------------------------

    async def test_a_waiting_saga_whose_wake_at_has_passed_is_recoverable(
        self, storage: SagaStorage
    ) -> None:
        waited = await self.create_waiting(storage, wake_at=self.now_plus(-HOUR))
        detached = make_new_saga(status=SagaStatus.WAITING, wake_at=self.now_plus(-2 * HOUR))
        await storage.create(detached)
        assert await recoverable_ids(storage) == [detached.saga_id, waited]
        claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert [record.saga_id for record in claimed] == [detached.saga_id, waited]

    @pytest.mark.parametrize("wake", ["future", "none"])
    async def test_a_waiting_saga_not_yet_due_is_neither_listed_nor_claimed(
        self, storage: SagaStorage, wake: str
    ) -> None:
        wake_at = self.now_plus(HOUR) if wake == "future" else None
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        # A new WAITING saga always has a wake_at: a detached one waits for a future one.
        detached = make_new_saga(status=SagaStatus.WAITING, wake_at=self.now_plus(HOUR))
        await storage.create(detached)
        before = await storage.load(saga_id)
        assert await recoverable_ids(storage) == []
        assert await storage.claim_recoverable(owner="recovery", lease_seconds=60.0) == []
        assert await storage.load(saga_id) == before
        assert before.wake_at == wake_at

    @pytest.mark.parametrize("wake", ["future", "none"])
    async def test_a_matching_signal_makes_a_waiting_saga_due_at_its_delivery(
        self, storage: SagaStorage, wake: str
    ) -> None:
        wake_at = self.now_plus(HOUR) if wake == "future" else None
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        earliest = self.now_plus(-self.clock_skew_seconds)
        assert await storage.deliver_signal(make_signal(saga_id))
        latest = self.now_plus(self.clock_skew_seconds)
        record = await storage.load(saga_id)
        assert_between(record.wake_at, earliest, latest)
        (signal,) = record.signals
        assert record.wake_at is not None
        assert abs((record.wake_at - signal.delivered_at).total_seconds()) <= (
            self.clock_skew_seconds
        )
        assert await recoverable_ids(storage) == [saga_id]
        claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert [(r.saga_id, r.status) for r in claimed] == [(saga_id, SagaStatus.WAITING)]

    async def test_a_signal_of_another_name_does_not_make_a_waiting_saga_due(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self.create_waiting(storage, wake_at=None)
        assert await storage.deliver_signal(make_signal(saga_id, name="something-else"))
        record = await storage.load(saga_id)
        assert [signal.name for signal in record.signals] == ["something-else"]
        assert record.wake_at is None
        assert await recoverable_ids(storage) == []
        assert await storage.claim_recoverable(owner="recovery", lease_seconds=60.0) == []

    async def test_a_signal_leaves_the_wake_at_of_a_saga_already_due(
        self, storage: SagaStorage
    ) -> None:
        wake_at = self.now_plus(-HOUR)
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        assert await storage.deliver_signal(make_signal(saga_id))
        assert (await storage.load(saga_id)).wake_at == wake_at

    async def test_a_wait_for_a_signal_already_pending_is_due(self, storage: SagaStorage) -> None:
        new = make_new_saga()
        await storage.create(new)
        assert await storage.deliver_signal(make_signal(new.saga_id))
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                1,
                status=SagaStatus.WAITING,
                next_step=new.next_step,
                waiting_for=DEFAULT_SIGNAL,
            )
        )
        assert await recoverable_ids(storage) == [new.saga_id]
        claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert [record.saga_id for record in claimed] == [new.saga_id]

    # --- claims ------------------------------------------------------------------------------

    async def test_claims_take_the_earliest_due_first_across_waiting_and_stalled_sagas(
        self, storage: SagaStorage
    ) -> None:
        # Created in an order that is not the due order, with a saga that is not due.
        hour_ago = make_new_saga(status=SagaStatus.WAITING, wake_at=self.now_plus(-HOUR))
        await storage.create(hour_ago)
        await storage.create(make_new_saga(status=SagaStatus.WAITING, wake_at=self.now_plus(HOUR)))
        two_hours_ago = make_new_saga(status=SagaStatus.WAITING, wake_at=self.now_plus(-2 * HOUR))
        await storage.create(two_hours_ago)
        stalled_first = await self.create_recoverable(storage)
        stalled_at = (await storage.load(stalled_first)).updated_at
        # Due between the two stalled sagas' updates, by the storage's own clock.
        between = make_new_saga(
            status=SagaStatus.WAITING,
            wake_at=stalled_at + timedelta(seconds=self.update_gap_seconds / 2),
        )
        await storage.create(between)
        await self.pause_between_updates()
        stalled_last = await self.create_recoverable(storage)
        expected = [
            two_hours_ago.saga_id,
            hour_ago.saga_id,
            stalled_first,
            between.saga_id,
            stalled_last,
        ]
        assert await recoverable_ids(storage) == expected
        first = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0, limit=2)
        assert [record.saga_id for record in first] == expected[:2]
        rest = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert [record.saga_id for record in rest] == expected[2:]

    async def test_a_claim_leaves_a_waiting_saga_waiting_leased_one_version_and_attempt_on(
        self, storage: SagaStorage
    ) -> None:
        wake_at = self.now_plus(-HOUR)
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        before = await storage.load(saga_id)
        (record,) = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        _assert_claimed_waiting(record, before, "recovery")
        assert record == await storage.load(saga_id)

    async def test_a_checkpoint_to_waiting_sets_attempts_to_zero(
        self, storage: SagaStorage
    ) -> None:
        """Resumes of a saga that waits again and again are not failed attempts: a suspend
        (a checkpoint to WAITING) sets ``attempts`` back to 0."""
        saga_id = await self.create_waiting(storage, wake_at=self.now_plus(-HOUR))
        for _ in range(3):
            (record,) = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
            assert record.attempts == 1
            await storage.checkpoint(
                make_checkpoint(
                    saga_id,
                    record.version,
                    status=SagaStatus.WAITING,
                    next_step=record.next_step,
                    wake_at=self.now_plus(-HOUR),
                    waiting_for=DEFAULT_SIGNAL,
                )
            )
            assert (await storage.load(saga_id)).attempts == 0

    async def test_a_checkpoint_to_waiting_with_a_naive_wake_at_is_a_usage_error(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        before = await storage.load(new.saga_id)
        naive = self.now_plus(HOUR).replace(tzinfo=None)
        with pytest.raises(SagaUsageError):
            await storage.checkpoint(
                make_checkpoint(new.saga_id, 1, status=SagaStatus.WAITING, wake_at=naive)
            )
        assert await storage.load(new.saga_id) == before

    async def test_a_claimed_waiting_saga_is_claimable_again_only_once_its_lease_expires(
        self, storage: SagaStorage
    ) -> None:
        # While a lease is live, on a long lease: these checks take round trips, which a
        # loaded machine may stretch past a short one.
        held = await self.create_waiting(storage, wake_at=self.now_plus(-HOUR))
        claimed = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert [record.saga_id for record in claimed] == [held]
        assert await recoverable_ids(storage) == []
        assert await storage.claim_recoverable(owner="other", lease_seconds=60.0) == []
        with pytest.raises(SagaLeaseHeldError):
            await storage.claim(held, owner="other", lease_seconds=60.0)
        # Once a lease expires, on a short lease that nothing needs live.
        saga_id = await self.create_waiting(storage, wake_at=self.now_plus(-HOUR))
        (short,) = await storage.claim_recoverable(
            owner="recovery", lease_seconds=self.short_lease_seconds
        )
        assert short.saga_id == saga_id
        await self.wait_out_short_lease()
        assert await recoverable_ids(storage) == [saga_id]
        (again,) = await storage.claim_recoverable(owner="other", lease_seconds=60.0)
        _assert_claimed_waiting(again, short, "other")
        assert again.attempts == 2

    @pytest.mark.parametrize("wake", ["future", "none"])
    async def test_claim_of_one_waiting_saga_does_not_require_it_to_be_due(
        self, storage: SagaStorage, wake: str
    ) -> None:
        wake_at = self.now_plus(HOUR) if wake == "future" else None
        saga_id = await self.create_waiting(storage, wake_at=wake_at)
        before = await storage.load(saga_id)
        record = await storage.claim(saga_id, owner="operator", lease_seconds=60.0)
        _assert_claimed_waiting(record, before, "operator")
        assert record == await storage.load(saga_id)

    async def test_a_parked_waiting_saga_is_never_claimed(self, storage: SagaStorage) -> None:
        saga_id = await self.create_waiting(storage, wake_at=self.now_plus(-HOUR))
        await storage.claim(saga_id, owner="recovery", lease_seconds=60.0)
        await storage.park(saga_id, owner="recovery", reason="gave up")
        parked = await storage.load(saga_id)
        assert (parked.status, parked.parked) == (SagaStatus.WAITING, True)
        assert await storage.deliver_signal(make_signal(saga_id))
        assert await recoverable_ids(storage) == []
        assert await storage.claim_recoverable(owner="recovery", lease_seconds=60.0) == []
        for force in (False, True):
            with pytest.raises(SagaParkedError):
                await storage.claim(saga_id, owner="operator", lease_seconds=60.0, force=force)
        await storage.unpark(saga_id)
        assert await recoverable_ids(storage) == [saga_id]

    async def test_list_sagas_filters_waiting_sagas(self, storage: SagaStorage) -> None:
        running = make_new_saga()
        await storage.create(running)
        detached = make_new_saga(status=SagaStatus.WAITING, wake_at=self.now_plus(HOUR))
        await storage.create(detached)
        waited = await self.create_waiting(storage)
        waiting = await storage.list_sagas(status=SagaStatus.WAITING)
        assert {record.saga_id for record in waiting} == {detached.saga_id, waited}
        assert len(waiting) == 2
        for record in waiting:
            assert record == await storage.load(record.saga_id)
        assert [r.saga_id for r in await storage.list_sagas(status=SagaStatus.RUNNING)] == [
            running.saga_id
        ]


def _assert_claimed_waiting(record: SagaRecord, before: SagaRecord, owner: str) -> None:
    """Assert ``record`` is ``before`` claimed by ``owner``: still WAITING on the same wait,
    leased, one version and one attempt on."""
    assert record.status is SagaStatus.WAITING
    assert (record.version, record.attempts) == (before.version + 1, before.attempts + 1)
    assert_lease(record, owner, 60.0)
    assert (record.wake_at, record.waiting_for, record.cursor, record.context) == (
        before.wake_at,
        before.waiting_for,
        before.cursor,
        before.context,
    )
