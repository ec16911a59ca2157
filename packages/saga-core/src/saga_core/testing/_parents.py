"""Contract: a child saga's link to its parent (``parent_id``), stored at creation and
returned unchanged by every read."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import SagaRecord, SagaStorage

from ._base import HOUR, ContractBase
from ._factories import DEFAULT_OWNER, DEFAULT_SIGNAL, make_checkpoint, make_new_saga, make_signal


def _parents(records: Sequence[SagaRecord]) -> dict[UUID, UUID | None]:
    """Each record's ``parent_id``, by saga id."""
    return {record.saga_id: record.parent_id for record in records}


class ParentContract(ContractBase):
    """Child sagas: ``parent_id`` round-trips through create and every read, and no write
    changes it."""

    async def test_parent_id_is_stored_at_creation_and_returned_by_every_read(
        self, storage: SagaStorage
    ) -> None:
        parent = make_new_saga(saga_name="orders")
        child = make_new_saga(saga_name="shipping", parent_id=parent.saga_id)
        await storage.create(parent)
        await storage.create(child)
        family = {parent.saga_id: None, child.saga_id: parent.saga_id}
        assert (await storage.load(parent.saga_id)).parent_id is None
        assert (await storage.load(child.saga_id)).parent_id == parent.saga_id
        assert _parents(await storage.list_sagas(limit=10)) == family
        assert _parents(await storage.list_sagas(lease_owner=DEFAULT_OWNER)) == family
        # Handed back (its lease released), the child is recoverable.
        await storage.checkpoint(
            make_checkpoint(child.saga_id, 1, next_step=child.next_step, lease_seconds=None)
        )
        assert _parents(await storage.list_recoverable()) == {child.saga_id: parent.saga_id}
        assert await storage.deliver_signal(make_signal(child.saga_id))
        [claimed] = await storage.claim_recoverable(owner="recovery", lease_seconds=60.0)
        assert (claimed.saga_id, claimed.parent_id) == (child.saga_id, parent.saga_id)
        [signal] = claimed.signals
        await storage.park(child.saga_id, owner="recovery", reason="gave up")
        assert _parents(await storage.list_sagas(parked=True)) == {child.saga_id: parent.saga_id}
        assert (await storage.unpark(child.saga_id)).parent_id == parent.saga_id
        taken = await storage.claim(child.saga_id, owner="recovery", lease_seconds=60.0)
        assert taken.parent_id == parent.saga_id
        await storage.renew_lease(child.saga_id, owner="recovery", lease_seconds=60.0)
        cancelled = await storage.request_cancel(child.saga_id, reason="the parent was cancelled")
        assert cancelled.parent_id == parent.saga_id
        # Compensated, consuming the pending signal on the way.
        await storage.checkpoint(
            make_checkpoint(
                child.saga_id,
                taken.version,
                status=SagaStatus.COMPENSATING,
                lease_owner="recovery",
                consume_signal=signal.signal_id,
            )
        )
        assert (await storage.load(child.saga_id)).parent_id == parent.saga_id
        await storage.checkpoint(
            make_checkpoint(
                child.saga_id,
                taken.version + 1,
                status=SagaStatus.COMPENSATED,
                lease_owner="recovery",
            )
        )
        finished = await storage.list_sagas(status=SagaStatus.COMPENSATED)
        assert _parents(finished) == {child.saga_id: parent.saga_id}
        assert (await storage.load(child.saga_id)).parent_id == parent.saga_id
        # The parent, claimed and checkpointed, still has none.
        own = await storage.claim(parent.saga_id, owner=DEFAULT_OWNER, lease_seconds=60.0)
        assert own.parent_id is None
        await storage.checkpoint(make_checkpoint(parent.saga_id, own.version, cursor=1))
        assert (await storage.load(parent.saga_id)).parent_id is None

    async def test_a_child_started_detached_keeps_its_parent_id_through_its_waits(
        self, storage: SagaStorage
    ) -> None:
        parent = make_new_saga(saga_name="orders")
        await storage.create(parent)
        child = make_new_saga(
            saga_name="shipping",
            status=SagaStatus.WAITING,
            wake_at=self.now_plus(-HOUR),
            deadline_at=self.now_plus(HOUR),
            parent_id=parent.saga_id,
        )
        await storage.create(child)
        saga_id = child.saga_id
        assert (await storage.load(saga_id)).parent_id == parent.saga_id
        assert _parents(await storage.list_recoverable()) == {saga_id: parent.saga_id}
        [started] = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
        assert (started.saga_id, started.parent_id) == (saga_id, parent.saga_id)
        # It waits for a signal; the signal makes it due again.
        await storage.checkpoint(
            make_checkpoint(
                saga_id,
                started.version,
                status=SagaStatus.WAITING,
                next_step=child.next_step,
                waiting_for=DEFAULT_SIGNAL,
            )
        )
        waiting = await storage.load(saga_id)
        assert (waiting.status, waiting.parent_id) == (SagaStatus.WAITING, parent.saga_id)
        assert await storage.deliver_signal(make_signal(saga_id))
        [woken] = await storage.claim_recoverable(owner="worker", lease_seconds=60.0)
        assert (woken.saga_id, woken.parent_id) == (saga_id, parent.saga_id)
        [signal] = woken.signals
        await storage.checkpoint(
            make_checkpoint(
                saga_id,
                woken.version,
                cursor=1,
                lease_owner="worker",
                consume_signal=signal.signal_id,
            )
        )
        await storage.checkpoint(
            make_checkpoint(
                saga_id,
                woken.version + 1,
                status=SagaStatus.COMPLETED,
                cursor=1,
                lease_owner="worker",
            )
        )
        done = await storage.load(saga_id)
        assert (done.status, done.parent_id, done.deadline_at) == (
            SagaStatus.COMPLETED,
            parent.saga_id,
            child.deadline_at,
        )
