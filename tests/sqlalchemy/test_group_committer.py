"""GroupCommitter on its own (no database): how writes are batched, what each writer gets,
and what cancellation does to a queued writer or a leader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import anyio
import pytest

from saga_core import SagaError, SagaVersionConflictError, StorageUnavailableError
from saga_core.storage import NewSaga
from saga_core.testing import make_checkpoint, make_new_saga
from saga_sqlalchemy._group_commit import GroupCommitter
from saga_sqlalchemy._outcomes import Write

from ._support import outcomes_of

pytestmark = pytest.mark.anyio


class FakeDatabase:
    """Runs batches: records them, holds each one until ``release`` when ``gated``, and
    refuses the writes listed in ``refuse``."""

    def __init__(self, *, gated: bool = False) -> None:
        self.batches: list[list[Write]] = []
        self.alone: list[Write] = []
        self.running = 0
        self.most_running = 0
        self.refuse: set[object] = set()
        self.fail_with: Exception | None = None
        self._gated = gated
        self._gate = anyio.Event()

    def release(self) -> None:
        self._gate.set()

    def hold(self) -> Callable[[], None]:
        """Hold the batches that start from now on, until the next ``release``; return what
        releases the batches held so far."""
        previous = self._gate
        self._gated = True
        self._gate = anyio.Event()
        return previous.set

    async def execute(self, writes: Sequence[Write]) -> list[SagaError | None]:
        self.batches.append(list(writes))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self._gated:
                await self._gate.wait()
            else:
                await anyio.sleep(0.001)
            if self.fail_with is not None:
                raise self.fail_with
            return [
                SagaVersionConflictError(f"refused {w.saga_id}")
                if w.saga_id in self.refuse
                else None
                for w in writes
            ]
        finally:
            self.running -= 1

    async def execute_one(self, write: Write) -> SagaError | None:
        """A write that ran alone: recorded in ``alone`` too."""
        self.alone.append(write)
        (outcome,) = await self.execute([write])
        return outcome


def committer(
    database: FakeDatabase, *, lanes: int = 1, max_batch: int = 100, one: bool = False
) -> GroupCommitter:
    return GroupCommitter(
        database.execute,
        max_batch=max_batch,
        max_wait=0.0,
        lanes=lanes,
        execute_one=database.execute_one if one else None,
    )


async def submit_all(group: GroupCommitter, writes: Sequence[Write]) -> list[Exception | None]:
    return await outcomes_of([partial(group.submit, write) for write in writes])


async def test_a_lone_writer_writes_its_batch_of_one_at_once() -> None:
    database = FakeDatabase()
    group = committer(database)
    for _ in range(3):
        await group.submit(make_new_saga())
    assert [len(batch) for batch in database.batches] == [1, 1, 1]
    assert (group.batches, group.writes) == (3, 3)


async def test_concurrent_writers_share_batches_and_each_gets_its_own_outcome() -> None:
    database = FakeDatabase()
    group = committer(database, lanes=2)
    writes = [make_new_saga() for _ in range(60)]
    database.refuse = {writes[5].saga_id, writes[40].saga_id}
    outcomes = await submit_all(group, writes)
    assert sum(len(batch) for batch in database.batches) == 60
    assert len(database.batches) < 60 / 4, [len(batch) for batch in database.batches]
    for index, outcome in enumerate(outcomes):
        if index in (5, 40):
            assert isinstance(outcome, SagaVersionConflictError)
            assert str(writes[index].saga_id) in str(outcome)
        else:
            assert outcome is None


async def test_at_most_lanes_batches_run_at_once_and_max_batch_bounds_a_batch() -> None:
    database = FakeDatabase()
    group = committer(database, lanes=3, max_batch=7)
    outcomes = await submit_all(group, [make_new_saga() for _ in range(100)])
    assert outcomes == [None] * 100
    assert database.most_running == 3
    assert max(len(batch) for batch in database.batches) <= 7


async def test_two_writes_of_one_saga_never_share_a_batch() -> None:
    database = FakeDatabase()
    group = committer(database)
    new = make_new_saga()
    writes: list[Write] = [make_checkpoint(new.saga_id, 1, cursor=n) for n in range(4)]
    writes += [make_new_saga() for _ in range(4)]
    await submit_all(group, writes)
    for batch in database.batches:
        ids = [write.saga_id for write in batch]
        assert len(ids) == len(set(ids)), ids
    assert sum(1 for b in database.batches for w in b if w.saga_id == new.saga_id) == 4


async def test_a_failed_batch_fails_each_of_its_writers_with_an_error_of_its_own() -> None:
    database = FakeDatabase()
    cause = OSError("connection reset")
    failure = StorageUnavailableError("the database went away")
    failure.__cause__ = cause
    database.fail_with = failure
    group = committer(database)
    outcomes = await submit_all(group, [make_new_saga() for _ in range(10)])
    assert all(isinstance(o, StorageUnavailableError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 10, "one exception object per writer"
    assert all(o is failure or o.__cause__ is cause for o in outcomes if o is not None)


async def test_a_cancelled_queued_writer_whose_write_no_batch_took_writes_nothing() -> None:
    database = FakeDatabase(gated=True)
    group = committer(database)
    first, queued, dropped = make_new_saga(), make_new_saga(), make_new_saga()
    scopes: list[anyio.CancelScope] = []
    seen: list[str] = []

    async def write(new: NewSaga) -> None:
        await group.submit(new)
        seen.append(f"written {new.saga_id}")

    async def give_up(new: NewSaga) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await group.submit(new)
        seen.append("gave up" if scope.cancelled_caught else "not cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, first)  # leads, and holds the only lane until released
        await anyio.sleep(0.01)
        tg.start_soon(write, queued)  # next in line for the lane
        tg.start_soon(give_up, dropped)
        await anyio.sleep(0.01)
        scopes[0].cancel()
        await anyio.sleep(0.01)
        database.release()
    assert [[w.saga_id for w in batch] for batch in database.batches] == [
        [first.saga_id],
        [queued.saga_id],
    ]
    assert seen == ["gave up", f"written {first.saga_id}", f"written {queued.saga_id}"]


async def test_a_cancelled_queued_writer_that_was_handed_the_lane_passes_it_on() -> None:
    database = FakeDatabase(gated=True)
    group = committer(database)
    first, promoted, last = make_new_saga(), make_new_saga(), make_new_saga()
    scopes: list[anyio.CancelScope] = []
    written: list[NewSaga] = []

    async def write(new: NewSaga) -> None:
        await group.submit(new)
        written.append(new)

    async def give_up(new: NewSaga) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await group.submit(new)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, first)
        await anyio.sleep(0.01)
        tg.start_soon(give_up, promoted)  # first in line: handed the lane when it frees
        await anyio.sleep(0.01)
        tg.start_soon(write, last)
        await anyio.sleep(0.01)
        database.release()  # the lane goes to `promoted`, cancelled before it can lead
        scopes[0].cancel()
    batches = [[w.saga_id for w in batch] for batch in database.batches]
    assert batches[0] == [first.saga_id]
    assert last.saga_id in [saga_id for batch in batches for saga_id in batch]
    assert last in written
    assert group._leaders == 0 and not group._queue  # nothing left holding a lane


async def test_a_cancelled_leader_finishes_its_batch_for_the_writers_in_it() -> None:
    """The leader's batch holds other writers' writes: cancelling the leader's caller does
    not abandon them; the cancellation reaches the leader once the batch is done."""
    database = FakeDatabase(gated=True)
    group = committer(database)
    blocker, lead, *others = (make_new_saga() for _ in range(5))
    scopes: list[anyio.CancelScope] = []
    seen: list[str] = []

    async def leader() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await group.submit(lead)
            seen.append("leader not cancelled")
        if scope.cancelled_caught:
            seen.append("leader cancelled after its batch")

    async def follower(new: NewSaga) -> None:
        await group.submit(new)
        seen.append("follower written")

    async with anyio.create_task_group() as tg:
        # A first batch holds the lane while the others queue, in this order (trio starts
        # tasks in no set order, hence one at a time): the leader first, so it leads next.
        tg.start_soon(group.submit, blocker)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(leader)
        await anyio.wait_all_tasks_blocked()
        for new in others:
            tg.start_soon(follower, new)
        await anyio.wait_all_tasks_blocked()
        release_blocker = database.hold()
        release_blocker()
        await anyio.wait_all_tasks_blocked()
        assert [len(batch) for batch in database.batches] == [1, 4]
        scopes[0].cancel()
        await anyio.wait_all_tasks_blocked()
        assert seen == []  # the batch still runs, for all four
        database.release()
    assert seen.count("follower written") == 3
    assert "leader cancelled after its batch" in seen


@pytest.mark.parametrize("one", [True, False], ids=["execute_one", "batch_of_one"])
async def test_writes_that_come_one_at_a_time_run_alone(one: bool) -> None:
    database = FakeDatabase()
    group = committer(database, one=one)
    first, second, third = make_new_saga(), make_new_saga(), make_new_saga()
    # Nothing is known of the load before a first batch: the first write is batched.
    await group.submit(first)
    await group.submit(second)  # the last batch was alone and nothing is in flight
    database.refuse.add(third.saga_id)
    with pytest.raises(SagaVersionConflictError):  # a refusal comes back the same way
        await group.submit(third)
    assert database.alone == ([second, third] if one else [])
    assert [len(batch) for batch in database.batches] == [1, 1, 1]
    assert (group.batches, group.writes) == (3, 3)
    assert group._leaders == 0


async def test_writes_submitted_while_one_runs_alone_queue_and_lead_after_it() -> None:
    database = FakeDatabase()
    group = committer(database, one=True)
    await group.submit(make_new_saga())
    database.hold()  # the batches from here on run once released
    lone = make_new_saga()
    writes: list[Write] = [make_new_saga() for _ in range(3)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(group.submit, lone)
        await anyio.wait_all_tasks_blocked()
        assert database.alone == [lone]  # running alone, held
        tg.start_soon(submit_all, group, writes)
        await anyio.wait_all_tasks_blocked()
        assert len(database.batches) == 2  # they wait for the lane of the lone write
        database.release()
    # The first queued writer leads the next batch and takes the others with it, and that
    # batch was not alone: the next write is batched again.
    assert [set(map(id, batch)) for batch in database.batches[2:]] == [set(map(id, writes))]
    await group.submit(make_new_saga())
    assert database.alone == [lone]


async def test_a_batch_takes_its_lanes_share_of_the_waiting_writes() -> None:
    database = FakeDatabase()
    group = committer(database, lanes=2)
    writes: list[Write] = [make_new_saga() for _ in range(40)]
    await submit_all(group, writes)
    sizes = [len(batch) for batch in database.batches]
    assert sum(sizes) == 40
    # Two writers lead at once; the other 38 queue meanwhile. Each next batch takes half of
    # what waits (rounded up), not all of it, leaving the rest to the other lane.
    assert max(sizes) <= 20, sizes
    assert len(sizes) < 40 / 4, sizes  # still shared transactions


async def test_with_one_lane_a_batch_takes_every_waiting_write() -> None:
    database = FakeDatabase()
    group = committer(database, lanes=1)
    await submit_all(group, [make_new_saga() for _ in range(40)])
    # The first writer leads; it lets the others queue (one schedule point) before it takes
    # its batch, and with one lane its share is everything.
    assert [len(batch) for batch in database.batches] == [40]
