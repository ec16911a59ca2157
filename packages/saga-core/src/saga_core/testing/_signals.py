"""Contract: signals — delivered at most once, kept in order, consumed with a checkpoint."""

from __future__ import annotations

from uuid import UUID, uuid4

import anyio
import pytest

from saga_core._model.errors import (
    SagaFinishedError,
    SagaNotFoundError,
    SagaSignalPendingError,
    SagaSignalRefusedError,
    SagaVersionConflictError,
)
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaStorage

from ._base import ContractBase, assert_between
from ._factories import (
    DEFAULT_SIGNAL,
    DEFAULT_STEP,
    assert_same_json,
    make_checkpoint,
    make_entry,
    make_new_saga,
    make_signal,
)

#: A payload a JSON column would rewrite (spacing, key order, escapes, ``1.0``): a storage
#: returns signal payloads exactly as given.
ODD_PAYLOAD = '{ "b":1.0,\n  "a": ["\\u00e9", null] }'


class SignalContract(ContractBase):
    """deliver_signal, the pending signals on every read, consume_signal and unless_signal."""

    async def _create(self, storage: SagaStorage) -> UUID:
        new = make_new_saga()
        await storage.create(new)
        return new.saga_id

    # --- delivery ----------------------------------------------------------------------------

    async def test_deliver_stores_a_signal_once_per_signal_id(self, storage: SagaStorage) -> None:
        saga_id = await self._create(storage)
        signal = make_signal(saga_id, payload='{"n": 1}')
        assert await storage.deliver_signal(signal) is True
        assert await storage.deliver_signal(signal._replace(payload='{"n": 2}')) is False
        (pending,) = (await storage.load(saga_id)).signals
        assert (pending.signal_id, pending.payload) == (signal.signal_id, '{"n": 1}')

    async def test_a_consumed_signal_id_is_still_a_duplicate(self, storage: SagaStorage) -> None:
        saga_id = await self._create(storage)
        signal = make_signal(saga_id)
        assert await storage.deliver_signal(signal)
        await storage.checkpoint(
            make_checkpoint(
                saga_id, 1, cursor=1, next_step="step-2", consume_signal=signal.signal_id
            )
        )
        # The saga has gone past the wait, yet a retried delivery is a duplicate, not refused.
        assert await storage.deliver_signal(signal) is False
        assert (await storage.load(saga_id)).signals == ()

    async def test_pending_signals_come_back_in_delivery_order_on_every_read(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._create(storage)
        await storage.checkpoint(make_checkpoint(saga_id, 1, next_step=DEFAULT_STEP))
        sent = [
            make_signal(saga_id, name="first", payload=ODD_PAYLOAD),
            make_signal(saga_id, name="second", payload="[]"),
            make_signal(saga_id, name="third", payload='"text"'),
        ]
        earliest = self.now_plus(-self.clock_skew_seconds)
        for signal in sent:
            assert await storage.deliver_signal(signal)
            await self.pause_between_updates()
        latest = self.now_plus(self.clock_skew_seconds)
        record = await storage.load(saga_id)
        got = [(s.signal_id, s.name, s.payload) for s in record.signals]
        assert got == [(s.signal_id, s.name, s.payload) for s in sent]
        for pending in record.signals:
            assert_between(pending.delivered_at, earliest, latest)
        delivered = [pending.delivered_at for pending in record.signals]
        assert delivered == sorted(delivered)
        (listed,) = await storage.list_sagas()
        assert listed.signals == record.signals
        await storage.checkpoint(make_checkpoint(saga_id, 2, lease_seconds=None))
        (recoverable,) = await storage.list_recoverable()
        assert recoverable.signals == record.signals
        claimed = await storage.claim(saga_id, owner="recovery", lease_seconds=60.0)
        assert claimed.signals == record.signals

    async def test_deliver_changes_neither_version_nor_updated_at_and_fences_no_runner(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._create(storage)
        before = await storage.load(saga_id)
        await self.pause_between_updates()
        signal = make_signal(saga_id)
        assert await storage.deliver_signal(signal)
        after = await storage.load(saga_id)
        assert [pending.signal_id for pending in after.signals] == [signal.signal_id]
        assert after._replace(signals=()) == before
        # The runner holding the saga writes on at the version it knows.
        await storage.checkpoint(make_checkpoint(saga_id, before.version, cursor=1))

    @pytest.mark.parametrize("position", ["at-the-wait", "before-the-wait"])
    async def test_deliver_is_accepted_until_the_saga_has_gone_past_the_wait(
        self, storage: SagaStorage, position: str
    ) -> None:
        saga_id = await self._create(storage)
        await storage.checkpoint(make_checkpoint(saga_id, 1, cursor=2, next_step="step-3"))
        wait_cursor, wait_step = (2, "step-3") if position == "at-the-wait" else (5, "step-6")
        signal = make_signal(saga_id, wait_cursor=wait_cursor, wait_step=wait_step)
        assert await storage.deliver_signal(signal)
        record = await storage.load(saga_id)
        assert [pending.signal_id for pending in record.signals] == [signal.signal_id]

    @pytest.mark.parametrize("past", ["greater-cursor", "other-step-at-the-cursor"])
    async def test_deliver_past_the_wait_is_refused_and_stores_nothing(
        self, storage: SagaStorage, past: str
    ) -> None:
        saga_id = await self._create(storage)
        await storage.checkpoint(make_checkpoint(saga_id, 1, cursor=2, next_step="step-3"))
        before = await storage.load(saga_id)
        wait_cursor, wait_step = (1, "step-2") if past == "greater-cursor" else (2, "timeout")
        signal = make_signal(saga_id, wait_cursor=wait_cursor, wait_step=wait_step)
        with pytest.raises(SagaSignalRefusedError):
            await storage.deliver_signal(signal)
        assert await storage.load(saga_id) == before
        # Not even its id was kept: the same signal for the saga's current wait is accepted.
        assert await storage.deliver_signal(signal._replace(wait_cursor=2, wait_step="step-3"))

    @pytest.mark.parametrize("state", ["compensating", "failed", "cancelled"])
    async def test_deliver_to_a_saga_that_will_not_wait_again_is_refused(
        self, storage: SagaStorage, state: str
    ) -> None:
        if state == "cancelled":
            saga_id = await self._create(storage)
            await storage.request_cancel(saga_id, reason="operator")
        else:
            status = SagaStatus.COMPENSATING if state == "compensating" else SagaStatus.FAILED
            saga_id = await self.create_recoverable(storage, status=status)
        before = await storage.load(saga_id)
        # A wait ahead of the saga, so only its state can be why the signal is refused.
        signal = make_signal(saga_id, wait_cursor=before.cursor + 1, wait_step="later")
        with pytest.raises(SagaSignalRefusedError):
            await storage.deliver_signal(signal)
        assert await storage.load(saga_id) == before

    @pytest.mark.parametrize("final", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
    async def test_deliver_to_a_finished_saga_raises_finished(
        self, storage: SagaStorage, final: SagaStatus
    ) -> None:
        saga_id = await self._create(storage)
        await self.finish(storage, saga_id, final)
        before = await storage.load(saga_id)
        with pytest.raises(SagaFinishedError):
            await storage.deliver_signal(make_signal(saga_id))
        assert await storage.load(saga_id) == before

    async def test_a_retried_delivery_to_a_finished_saga_is_a_duplicate(
        self, storage: SagaStorage
    ) -> None:
        """The duplicate check comes first: a signal delivered, then retried after the saga
        ended, is reported a duplicate (a webhook retry stays a no-op); a new one is refused."""
        saga_id = await self._create(storage)
        signal = make_signal(saga_id)
        assert await storage.deliver_signal(signal)
        await self.finish(storage, saga_id, SagaStatus.COMPLETED)
        assert not await storage.deliver_signal(signal)
        with pytest.raises(SagaFinishedError):
            await storage.deliver_signal(make_signal(saga_id, signal_id="another"))

    async def test_a_second_signal_of_a_name_already_pending_is_refused(
        self, storage: SagaStorage
    ) -> None:
        """A wait takes one signal: while one of a name is pending, another of that name (a
        new id) is refused — it could never be consumed — and nothing is stored."""
        saga_id = await self._create(storage)
        first = make_signal(saga_id)
        assert await storage.deliver_signal(first)
        with pytest.raises(SagaSignalRefusedError):
            await storage.deliver_signal(make_signal(saga_id, signal_id="another"))
        assert [s.signal_id for s in (await storage.load(saga_id)).signals] == [first.signal_id]
        assert not await storage.deliver_signal(first)

    async def test_deliver_to_an_unknown_saga_raises_not_found(self, storage: SagaStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.deliver_signal(make_signal(uuid4()))

    # --- consume_signal and unless_signal ----------------------------------------------------

    async def test_consume_signal_removes_that_signal_atomically_with_the_checkpoint(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._create(storage)
        first, second = make_signal(saga_id), make_signal(saga_id, name="second")
        other = make_signal(saga_id, name="other")
        for signal in (first, second, other):
            assert await storage.deliver_signal(signal)
        pending = (await storage.load(saga_id)).signals
        entries = [make_entry("wait"), make_entry("step-2")]
        await storage.checkpoint(
            make_checkpoint(
                saga_id,
                1,
                cursor=1,
                context='{"approved": true}',
                journal=entries,
                next_step="step-2",
                consume_signal=first.signal_id,
            )
        )
        record = await storage.load(saga_id)
        assert record.signals == pending[1:]
        assert (record.version, record.cursor, record.next_step) == (2, 1, "step-2")
        assert await storage.history(saga_id) == entries

    @pytest.mark.parametrize("which", ["never-delivered", "already-consumed"])
    async def test_consume_of_a_signal_not_pending_is_a_version_conflict_writing_nothing(
        self, storage: SagaStorage, which: str
    ) -> None:
        saga_id = await self._create(storage)
        signal = make_signal(saga_id)
        assert await storage.deliver_signal(signal)
        version = 1
        if which == "already-consumed":
            await storage.checkpoint(
                make_checkpoint(saga_id, 1, journal=[make_entry()], consume_signal=signal.signal_id)
            )
            version = 2
        wanted = signal.signal_id if which == "already-consumed" else "never-delivered"
        before = await storage.load(saga_id)
        history = await storage.history(saga_id)
        with pytest.raises(SagaVersionConflictError):
            await storage.checkpoint(
                make_checkpoint(
                    saga_id, version, cursor=1, journal=[make_entry("x")], consume_signal=wanted
                )
            )
        assert await storage.load(saga_id) == before
        assert await storage.history(saga_id) == history

    @pytest.mark.parametrize("status", [SagaStatus.RUNNING, SagaStatus.WAITING])
    async def test_unless_signal_refuses_the_write_while_such_a_signal_is_pending(
        self, storage: SagaStorage, status: SagaStatus
    ) -> None:
        saga_id = await self._create(storage)
        assert await storage.deliver_signal(make_signal(saga_id))
        before = await storage.load(saga_id)
        # A timeout (moving on) or a suspend (waiting) loses to the signal that came first.
        with pytest.raises(SagaSignalPendingError):
            await storage.checkpoint(
                make_checkpoint(
                    saga_id,
                    1,
                    status=status,
                    cursor=1,
                    journal=[make_entry("timeout")],
                    unless_signal=DEFAULT_SIGNAL,
                )
            )
        assert await storage.load(saga_id) == before
        assert await storage.history(saga_id) == []

    async def test_unless_signal_is_ignored_when_no_signal_of_that_name_is_pending(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._create(storage)
        await storage.checkpoint(
            make_checkpoint(saga_id, 1, next_step=DEFAULT_STEP, unless_signal=DEFAULT_SIGNAL)
        )
        assert await storage.deliver_signal(make_signal(saga_id, name="other"))
        await storage.checkpoint(
            make_checkpoint(saga_id, 2, cursor=1, unless_signal=DEFAULT_SIGNAL)
        )
        record = await storage.load(saga_id)
        assert (record.version, record.cursor, len(record.signals)) == (3, 1, 1)

    # --- races -------------------------------------------------------------------------------

    async def test_concurrent_deliveries_of_one_signal_id_store_it_exactly_once(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._create(storage)
        signal = make_signal(saga_id)
        stored: list[int] = []
        duplicates: list[int] = []

        async def racer(index: int) -> None:
            if await storage.deliver_signal(signal._replace(payload=f'{{"racer": {index}}}')):
                stored.append(index)
            else:
                duplicates.append(index)

        async with anyio.create_task_group() as tg:
            for index in range(self.racers):
                tg.start_soon(racer, index)
        assert len(stored) == 1, stored
        assert len(duplicates) == self.racers - 1
        (pending,) = (await storage.load(saga_id)).signals
        assert pending.payload == f'{{"racer": {stored[0]}}}'

    async def test_concurrent_consumers_of_one_signal_exactly_one_wins(
        self, storage: SagaStorage
    ) -> None:
        saga_id = await self._create(storage)
        signal = make_signal(saga_id)
        assert await storage.deliver_signal(signal)
        winners: list[int] = []
        losers: list[int] = []

        async def racer(index: int) -> None:
            checkpoint = make_checkpoint(
                saga_id,
                1,
                cursor=1,
                context=f'{{"racer": {index}}}',
                consume_signal=signal.signal_id,
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
        record = await storage.load(saga_id)
        assert (record.version, record.signals) == (2, ())
        assert_same_json(record.context, f'{{"racer": {winners[0]}}}')
