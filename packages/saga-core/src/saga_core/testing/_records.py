"""Contract: create, load, checkpoint (versions, compare-and-set, terminal states) and journal."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from uuid import uuid4

import pytest

from saga_core._model.errors import (
    SagaAlreadyExistsError,
    SagaConcurrencyError,
    SagaFinishedError,
    SagaNotFoundError,
    SagaVersionConflictError,
)
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._storage.protocol import SagaStorage

from ._base import ContractBase, assert_lease, assert_no_lease, assert_utc
from ._factories import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_OWNER,
    make_checkpoint,
    make_entry,
    make_new_saga,
)


class RecordContract(ContractBase):
    """Records: versions, compare-and-set, atomic checkpoints, terminal states."""

    async def test_storage_implements_the_protocol(self, storage: SagaStorage) -> None:
        assert isinstance(storage, SagaStorage)

    async def test_create_then_load_returns_running_saga_at_version_1(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga(saga_name="orders.PlaceOrder", context='{"order": 7}')
        await storage.create(new)
        record = await storage.load(new.saga_id)
        assert record.saga_id == new.saga_id
        assert record.saga_name == "orders.PlaceOrder"
        assert record.status is SagaStatus.RUNNING
        assert record.version == 1
        assert record.cursor == 0
        assert record.applied == ()
        assert json.loads(record.context) == {"order": 7}
        assert record.error is None
        assert_utc(record.created_at)
        assert_utc(record.updated_at)
        assert record.created_at <= record.updated_at
        assert_lease(record, DEFAULT_OWNER, DEFAULT_LEASE_SECONDS)

    async def test_create_duplicate_raises_already_exists_and_changes_nothing(
        self, storage: SagaStorage
    ) -> None:
        first = make_new_saga(context='{"first": true}', journal=[make_entry("a")])
        await storage.create(first)
        before = await storage.load(first.saga_id)
        duplicate = make_new_saga(
            saga_id=first.saga_id,
            saga_name="other",
            context='{"first": false}',
            lease_owner="intruder",
            journal=[make_entry("b")],
        )
        with pytest.raises(SagaAlreadyExistsError):
            await storage.create(duplicate)
        assert await storage.load(first.saga_id) == before
        assert await storage.history(first.saga_id) == list(first.journal)

    async def test_load_unknown_id_raises_not_found(self, storage: SagaStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.load(uuid4())

    async def test_history_unknown_id_raises_not_found(self, storage: SagaStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.history(uuid4())

    async def test_checkpoint_unknown_id_raises_not_found(self, storage: SagaStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.checkpoint(make_checkpoint(uuid4(), 1))

    async def test_claim_unknown_id_raises_not_found(self, storage: SagaStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.claim(uuid4(), owner="recovery", lease_seconds=60.0)
        with pytest.raises(SagaNotFoundError):
            await storage.claim(uuid4(), owner="recovery", lease_seconds=60.0, force=True)

    async def test_checkpoint_increments_version(self, storage: SagaStorage) -> None:
        new = make_new_saga()
        await storage.create(new)
        for expected in (1, 2, 3):
            await storage.checkpoint(make_checkpoint(new.saga_id, expected, cursor=expected))
            assert (await storage.load(new.saga_id)).version == expected + 1

    async def test_saga_version_is_stored_at_create_and_kept_by_every_write(
        self, storage: SagaStorage
    ) -> None:
        """Recovery runs a saga on the definition version it started with; it needs this."""
        first = make_new_saga(saga_name="orders", saga_version=1)
        second = make_new_saga(saga_name="orders", saga_version=7)
        await storage.create(first)
        await storage.create(second)
        assert (await storage.load(first.saga_id)).saga_version == 1
        assert (await storage.load(second.saga_id)).saga_version == 7
        await storage.checkpoint(make_checkpoint(second.saga_id, 1, cursor=1))
        claimed = await storage.claim(second.saga_id, owner=DEFAULT_OWNER, lease_seconds=30)
        assert claimed.saga_version == 7
        await storage.checkpoint(
            make_checkpoint(second.saga_id, 3, status=SagaStatus.COMPLETED, cursor=2)
        )
        assert (await storage.load(second.saga_id)).saga_version == 7
        listed = {record.saga_id: record for record in await storage.list_sagas(limit=10)}
        assert listed[first.saga_id].saga_version == 1
        assert listed[second.saga_id].saga_version == 7

    async def test_next_step_round_trips_through_create_and_checkpoint(
        self, storage: SagaStorage
    ) -> None:
        """Recovery refuses a saga whose step at the cursor changed; it needs this field."""
        new = make_new_saga(next_step="orders.Reserve")
        await storage.create(new)
        assert (await storage.load(new.saga_id)).next_step == "orders.Reserve"
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 1, cursor=1, next_step="orders.Charge — ünïcode")
        )
        assert (await storage.load(new.saga_id)).next_step == "orders.Charge — ünïcode"
        await storage.checkpoint(
            make_checkpoint(new.saga_id, 2, status=SagaStatus.COMPLETED, cursor=2, next_step=None)
        )
        assert (await storage.load(new.saga_id)).next_step is None

    async def test_checkpoint_round_trips_every_field(self, storage: SagaStorage) -> None:
        new = make_new_saga()
        await storage.create(new)
        created = await storage.load(new.saga_id)
        await self.pause_between_updates()
        await storage.checkpoint(
            make_checkpoint(
                new.saga_id,
                1,
                status=SagaStatus.COMPENSATING,
                cursor=2,
                applied=("steps.Reserve", "steps.Charge"),
                context='{"value": 42, "note": "refund"}',
                error="PaymentDeclined: card expired",
                lease_owner="worker-9",
                lease_seconds=30.0,
            )
        )
        record = await storage.load(new.saga_id)
        assert record.status is SagaStatus.COMPENSATING
        assert record.version == 2
        assert record.cursor == 2
        assert isinstance(record.applied, tuple)
        assert record.applied == ("steps.Reserve", "steps.Charge")
        assert json.loads(record.context) == {"value": 42, "note": "refund"}
        assert record.error == "PaymentDeclined: card expired"
        assert record.saga_name == new.saga_name
        assert record.created_at == created.created_at
        assert record.updated_at > created.updated_at
        assert_lease(record, "worker-9", 30.0)

    async def test_checkpoint_without_error_clears_the_stored_error(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        failed = make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPENSATING, error="E: x")
        await storage.checkpoint(failed)
        await storage.checkpoint(make_checkpoint(new.saga_id, 2, status=SagaStatus.COMPENSATING))
        assert (await storage.load(new.saga_id)).error is None

    @pytest.mark.parametrize("offset", [-1, 1], ids=["stale", "ahead"])
    async def test_checkpoint_with_wrong_version_raises_conflict_and_changes_nothing(
        self, storage: SagaStorage, offset: int
    ) -> None:
        new = make_new_saga(journal=[make_entry("a")])
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, cursor=1))
        before = await storage.load(new.saga_id)
        journal = await storage.history(new.saga_id)
        wrong = make_checkpoint(
            new.saga_id,
            before.version + offset,
            status=SagaStatus.COMPENSATING,
            cursor=5,
            context='{"value": -1}',
            journal=[make_entry("zombie")],
            lease_seconds=None,
        )
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(wrong)
        assert await storage.load(new.saga_id) == before
        assert await storage.history(new.saga_id) == journal

    @pytest.mark.parametrize("final", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
    async def test_checkpoint_on_finished_saga_raises_finished_and_changes_nothing(
        self, storage: SagaStorage, final: SagaStatus
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        version = await self.finish(storage, new.saga_id, final)
        before = await storage.load(new.saga_id)
        journal = await storage.history(new.saga_id)
        assert before.status is final
        for status in SagaStatus:
            again = make_checkpoint(
                new.saga_id, version, status=status, journal=[make_entry("late")]
            )
            with pytest.raises(SagaFinishedError):
                await storage.checkpoint(again)
        # A stale writer is refused too, by either error.
        with pytest.raises(SagaConcurrencyError):
            await storage.checkpoint(make_checkpoint(new.saga_id, 1))
        assert await storage.load(new.saga_id) == before
        assert await storage.history(new.saga_id) == journal

    @pytest.mark.parametrize("final", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
    async def test_claim_on_finished_saga_raises_finished_and_changes_nothing(
        self, storage: SagaStorage, final: SagaStatus
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        await self.finish(storage, new.saga_id, final)
        before = await storage.load(new.saga_id)
        with pytest.raises(SagaFinishedError):
            await storage.claim(new.saga_id, owner="recovery", lease_seconds=60.0)
        with pytest.raises(SagaFinishedError):
            await storage.claim(new.saga_id, owner=DEFAULT_OWNER, lease_seconds=60.0)
        with pytest.raises(SagaFinishedError):
            await storage.claim(new.saga_id, owner="operator", lease_seconds=60.0, force=True)
        assert await storage.load(new.saga_id) == before

    async def test_failed_saga_can_move_back_to_compensating(self, storage: SagaStorage) -> None:
        saga_id = await self.create_recoverable(storage, status=SagaStatus.FAILED)
        record = await storage.load(saga_id)
        assert record.status is SagaStatus.FAILED
        await storage.checkpoint(
            make_checkpoint(saga_id, record.version, status=SagaStatus.COMPENSATING)
        )
        assert (await storage.load(saga_id)).status is SagaStatus.COMPENSATING

    async def test_updated_at_moves_forward_with_each_write(self, storage: SagaStorage) -> None:
        new = make_new_saga()
        await storage.create(new)
        seen = [(await storage.load(new.saga_id)).updated_at]
        for version in (1, 2):
            await self.pause_between_updates()
            await storage.checkpoint(make_checkpoint(new.saga_id, version))
            seen.append((await storage.load(new.saga_id)).updated_at)
        await self.pause_between_updates()
        seen.append((await storage.claim(new.saga_id, owner="runner", lease_seconds=60)).updated_at)
        assert seen == sorted(seen)
        assert len(set(seen)) == len(seen)


class JournalContract(ContractBase):
    """Journal: write order, exact round trip of every entry."""

    async def test_history_of_saga_created_without_journal_is_empty(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        assert await storage.history(new.saga_id) == []

    async def test_history_keeps_write_order_across_and_within_writes(
        self, storage: SagaStorage
    ) -> None:
        written = [make_entry(f"created-{i}") for i in range(3)]
        new = make_new_saga(journal=written[:])
        await storage.create(new)
        for version in (1, 2, 3):
            # Names that sort differently from write order, and entries sharing one `at`.
            batch = [make_entry(f"{9 - i}-v{version}") for i in range(4)]
            at = datetime.now(timezone.utc)
            batch += [make_entry(f"same-at-{i}", at=at) for i in (2, 1, 3)]
            await storage.checkpoint(make_checkpoint(new.saga_id, version, journal=batch))
            written += batch
        assert [entry.step_id for entry in await storage.history(new.saga_id)] == [
            entry.step_id for entry in written
        ]

    async def test_journal_entries_round_trip_exactly(self, storage: SagaStorage) -> None:
        """Every field comes back equal (``detail`` too, and the saga's own events with an
        empty step id), ``at`` to the microsecond and in aware UTC, and the enums come back as
        enums (not their string values)."""
        entries = [
            make_entry(
                "steps.Reserve",
                StepDirection.ACT,
                StepEvent.STARTED,
                1,
                at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
            ),
            make_entry(
                "steps.Réserve-日本",
                StepDirection.ACT,
                StepEvent.FAILED,
                3,
                at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
                error="ValueError: bad 'input'\n\twith \"quotes\", ünïcode and 😀",
            ),
            make_entry("steps.Charge", StepDirection.COMPENSATE, StepEvent.COMPLETED, 12),
            make_entry("x" * 200, StepDirection.COMPENSATE, StepEvent.FAILED, 1, error="E" * 5000),
            make_entry("signal:paid", StepDirection.ACT, StepEvent.CLAIMED, 4, detail="wörker-7"),
            make_entry("", StepDirection.COMPENSATE, StepEvent.COMPENSATING, 0, error="E: why"),
            make_entry("", StepDirection.ACT, StepEvent.FINISHED, 0, detail="completed"),
        ]
        new = make_new_saga(journal=entries[:1])
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=entries[1:]))
        history = await storage.history(new.saga_id)
        assert history == entries
        for entry in history:
            assert type(entry.direction) is StepDirection
            assert type(entry.event) is StepEvent
            assert type(entry.attempt) is int
            assert_utc(entry.at)

    async def test_refused_checkpoint_appends_no_journal_entries(
        self, storage: SagaStorage
    ) -> None:
        new = make_new_saga()
        await storage.create(new)
        kept = [make_entry("kept")]
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=kept, lease_seconds=None))
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=[make_entry("x")]))
        assert await storage.history(new.saga_id) == kept
        assert_no_lease(await storage.load(new.saga_id))
