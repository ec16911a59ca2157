"""Crash safety of ``SubSaga`` with real processes: a child process runs the parent saga
``[A, SubSaga(Child[X, Y]), B]`` (``_subsaga_kit``), the child saga in place, and is killed
with SIGKILL mid-child (X durable; Y not begun, or begun and never finished) or once the child
is COMPLETED but before the parent's write of its node.

Then this process recovers both sagas with a worker, once the dead runner's leases expired,
and checks the stored records, the journals and the external effects ledger exactly:

* mid-child, whichever of the two the worker claims first, both complete: X ran once (the
  dead runner's), Y at least once (again in the recovery, after the death), B once; the
  parent's context has the child's result, its ``applied`` the child's steps under its node,
  the child's record is COMPLETED and linked to its parent;
* after the child COMPLETED, the recovered parent runs none of the child's steps again;
* mid-child, then B fails in the recovery: the parent compensates B, the child's Y and X as
  a unit (in reverse order, once each, with the child's idempotency keys) and A; the child's
  record stays COMPLETED, the parent ends COMPENSATED;
* a child that waits for a signal makes the parent wait for it; the signal, sent by another
  process, and a worker complete the child, whose end makes the parent due at once (not at its
  5-minute safety check), and the next worker pass completes the parent.

On SQLite, PostgreSQL and Redis, asyncio and trio (the child runs on the test's backend).
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from saga_core import SagaStatus, StepDirection, StepEvent
from saga_core._engine.executor import CHILD_CHECK_SECONDS

from . import _subsaga_kit as kit
from ._kit import ACT, COMPENSATE, Ledger, StorageSpec
from ._parallel_kit import RecordingStorage
from ._subsaga_crash import (
    LABEL,
    OWNER,
    PARENT_STEPS,
    calls_of,
    check_completed,
    check_journals,
    child_report,
    completions,
    context_of,
    crash,
    run_config,
    wait_recoverable,
    worker_on,
    written,
)
from ._subsaga_kit import (
    CHILD_CURSOR,
    CHILD_X,
    CHILD_Y,
    NODE,
    STEP_A,
    STEP_B,
    STEP_X,
    STEP_Y,
    WAIT_CHILD_NAME,
    WAIT_PARENT_NAME,
    child_id_of,
    wake_signal_of,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LONG_LEASE = 600.0
FAILURE = f"StepFailedError: {STEP_B} fails, as told"
CHILD_CHECK = timedelta(seconds=CHILD_CHECK_SECONDS)
"""How long a parent waiting for its child waits at most (the engine's safety net)."""

#: Where the runner is killed mid-child: right after X's checkpoint is durable (Y not begun),
#: or inside Y's act (X durable, Y's effect begun and never finished).
MID_CHILD = [
    pytest.param("x-durable", id="x-durable"),
    pytest.param("inside-y", id="inside-y"),
]


# --- (1) killed mid-child: a worker completes both -----------------------------------------------


@pytest.mark.parametrize("at", MID_CHILD)
async def test_killed_mid_child_a_worker_claiming_the_parent_first_completes_both(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path, at: str
) -> None:
    """Both leases expired: the worker's first claim (one at a time, earliest due first) is
    the parent, whose runner takes the stalled child over and runs it in place, then B."""
    crashed = await crash(storage_spec, anyio_backend, tmp_path, at=at)
    me, dead = os.getpid(), crashed.pid
    try:
        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            await wait_recoverable(opened, {crashed.parent_id, crashed.child_id})
            worker = worker_on(storage, batch_size=1)
            report = await worker.run_once()
            assert (report.claimed, report.completed, report.errors, report.lost) == (1, 1, 0, 0)
            parent = await opened.load(crashed.parent_id)
            child = await opened.load(crashed.child_id)
            # One claim finished both: nothing is left for the next pass.
            assert (await worker.run_once()).claimed == 0
            await check_journals(opened, crashed)
            # The child was taken over by the parent's runner (in place), under its name.
            claims = [
                e.detail
                for e in await opened.history(crashed.child_id)
                if e.event is StepEvent.CLAIMED
            ]
            assert claims == [worker.owner]
        check_completed(crashed, parent, child, y_runner=me)

        # The writes: the child's one (Y's, which completes it); the parent's node (the
        # child's steps recorded), then B's, which completes it.
        assert written(storage.checkpoints, crashed.child_id) == [
            (SagaStatus.COMPLETED, 2, (STEP_X, STEP_Y)),
        ]
        assert written(storage.checkpoints, crashed.parent_id) == [
            (SagaStatus.RUNNING, 2, PARENT_STEPS[:3]),
            (SagaStatus.COMPLETED, 3, PARENT_STEPS),
        ]

        # The ledger: A and X once (the dead runner's); Y again (after the death) and B, once.
        assert calls_of(crashed.ledger, crashed.parent_id) == {
            (STEP_A, ACT): [(dead, True)],
            (STEP_X, ACT): [(dead, True)],
            (STEP_Y, ACT): [*([(dead, False)] if at == "inside-y" else []), (me, True)],
            (STEP_B, ACT): [(me, True)],
        }
        died = crashed.ledger.deaths()[dead]
        assert all(e.started > died for e in crashed.ledger.effects() if e.pid == me)
    finally:
        crashed.ledger.close()


@pytest.mark.parametrize("at", MID_CHILD)
async def test_killed_mid_child_a_worker_claiming_the_child_first_completes_both(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path, at: str
) -> None:
    """The parent's lease outlives the child's (renewed under the dead runner's name, as its
    lease keeper may have done last): the worker claims the child alone and runs it to its
    end, which wakes the parent; once the parent's lease is gone too, the next claim finds its
    child COMPLETED and goes on without running any of the child's steps again."""
    crashed = await crash(storage_spec, anyio_backend, tmp_path, at=at)
    me, dead = os.getpid(), crashed.pid
    try:
        async with storage_spec.open(anyio_backend) as opened:
            await opened.renew_lease(crashed.parent_id, owner=OWNER, lease_seconds=LONG_LEASE)
            storage = RecordingStorage(opened)
            await wait_recoverable(opened, {crashed.child_id})
            worker = worker_on(storage)

            # 1. The child alone: run to its end by the worker, not in place.
            report = await worker.run_once()
            assert (report.claimed, report.completed, report.errors, report.lost) == (1, 1, 0, 0)
            child = await opened.load(crashed.child_id)
            assert (child.status, child.applied) == (SagaStatus.COMPLETED, (STEP_X, STEP_Y))
            assert written(storage.checkpoints, crashed.parent_id) == []
            # Its end woke the parent: the signal its parent waits for, pending.
            parent = await opened.load(crashed.parent_id)
            assert (parent.status, parent.cursor, parent.applied, parent.version) == (
                SagaStatus.RUNNING,
                CHILD_CURSOR,
                (STEP_A,),
                crashed.parent.version,
            ), parent
            assert [s.name for s in parent.signals] == [wake_signal_of(crashed.parent_id)]

            # 2. The parent, once its lease is gone: it takes the child's result and goes on.
            await opened.renew_lease(crashed.parent_id, owner=OWNER, lease_seconds=0)
            await wait_recoverable(opened, {crashed.parent_id})
            report = await worker.run_once()
            assert (report.claimed, report.completed, report.errors, report.lost) == (1, 1, 0, 0)
            parent = await opened.load(crashed.parent_id)
            assert await opened.load(crashed.child_id) == child
            await check_journals(opened, crashed)
        check_completed(crashed, parent, child, y_runner=me)
        assert written(storage.checkpoints, crashed.child_id) == [
            (SagaStatus.COMPLETED, 2, (STEP_X, STEP_Y)),
        ]
        assert written(storage.checkpoints, crashed.parent_id) == [
            (SagaStatus.RUNNING, 2, PARENT_STEPS[:3]),
            (SagaStatus.COMPLETED, 3, PARENT_STEPS),
        ]
        assert calls_of(crashed.ledger, crashed.parent_id) == {
            (STEP_A, ACT): [(dead, True)],
            (STEP_X, ACT): [(dead, True)],
            (STEP_Y, ACT): [*([(dead, False)] if at == "inside-y" else []), (me, True)],
            (STEP_B, ACT): [(me, True)],
        }
    finally:
        crashed.ledger.close()


async def test_killed_mid_child_one_worker_pass_claiming_both_runs_the_child_once(
    storage_spec: StorageSpec,
    anyio_backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both leases expired, and a worker's batch claims the parent and its stalled child
    together (what a worker does by default after a crash). Y takes a moment here, so that
    the parent's runner reaches its node while the worker's run of the child is inside Y."""
    monkeypatch.setattr(kit.BEHAVIOUR, "pauses", {STEP_Y: 0.5})
    crashed = await crash(storage_spec, anyio_backend, tmp_path, at="inside-y")
    me, dead = os.getpid(), crashed.pid
    try:
        async with storage_spec.open(anyio_backend) as storage:
            await wait_recoverable(storage, {crashed.parent_id, crashed.child_id})
            worker = worker_on(storage)
            with anyio.fail_after(30):
                first = await worker.run_once()
                while (await storage.load(crashed.parent_id)).status is not SagaStatus.COMPLETED:
                    await worker.run_once()
                    await anyio.sleep(0.05)
            parent = await storage.load(crashed.parent_id)
            child = await storage.load(crashed.child_id)
        check_completed(crashed, parent, child, y_runner=me)
        # Y runs again once, in one runner: the worker's run of the child, or the parent's
        # in place, never both (a runner of the worker is never fenced by the worker itself).
        spans = sorted(
            (e.started, e.finished or float("inf"))
            for e in crashed.ledger.effects()
            if (e.step, e.direction, e.pid) == (STEP_Y, ACT, me)
        )
        problems = []
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            problems.append(f"Y's act ran {len(spans)} times at once in the recovery: {spans}")
        elif len(spans) != 1:
            problems.append(f"Y's act ran {len(spans)} times in the recovery: {spans}")
        if first.lost:
            problems.append(f"the worker's own run of a saga was taken over: {first}")
        assert problems == []
        assert calls_of(crashed.ledger, crashed.parent_id) == {
            (STEP_A, ACT): [(dead, True)],
            (STEP_X, ACT): [(dead, True)],
            (STEP_Y, ACT): [(dead, False), (me, True)],
            (STEP_B, ACT): [(me, True)],
        }
    finally:
        crashed.ledger.close()


# --- (2) killed after the child COMPLETED --------------------------------------------------------


async def test_killed_after_the_child_completed_the_parent_does_not_run_it_again(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    """Killed between the child's last write (COMPLETED) and the parent's write of its node:
    the recovered parent finds its child COMPLETED, takes its result and goes on."""
    crashed = await crash(storage_spec, anyio_backend, tmp_path, at="child-completed")
    me, dead = os.getpid(), crashed.pid
    try:
        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            # The finished child is never recoverable: only the parent is claimed.
            await wait_recoverable(opened, {crashed.parent_id})
            worker = worker_on(storage)
            report = await worker.run_once()
            assert (report.claimed, report.completed, report.errors, report.lost) == (1, 1, 0, 0)
            parent = await opened.load(crashed.parent_id)
            child = await opened.load(crashed.child_id)
            await check_journals(opened, crashed)
        assert child == crashed.child  # untouched
        check_completed(crashed, parent, child, y_runner=dead)
        assert written(storage.checkpoints, crashed.child_id) == []
        assert written(storage.checkpoints, crashed.parent_id) == [
            (SagaStatus.RUNNING, 2, PARENT_STEPS[:3]),
            (SagaStatus.COMPLETED, 3, PARENT_STEPS),
        ]
        # The ledger: nothing of the child ran again; B once, in the recovery.
        assert calls_of(crashed.ledger, crashed.parent_id) == {
            (STEP_A, ACT): [(dead, True)],
            (STEP_X, ACT): [(dead, True)],
            (STEP_Y, ACT): [(dead, True)],
            (STEP_B, ACT): [(me, True)],
        }
    finally:
        crashed.ledger.close()


# --- (3) killed mid-child, then B fails: the child is compensated as a unit ----------------------


@pytest.mark.parametrize("at", MID_CHILD)
async def test_killed_mid_child_then_b_fails_the_parent_compensates_the_child_as_a_unit(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path, at: str
) -> None:
    crashed = await crash(storage_spec, anyio_backend, tmp_path, at=at, fail_b=True)
    me, dead = os.getpid(), crashed.pid
    try:
        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            await wait_recoverable(opened, {crashed.parent_id, crashed.child_id})
            worker = worker_on(storage, batch_size=1)
            report = await worker.run_once()
            assert (report.claimed, report.compensated, report.errors, report.lost) == (1, 1, 0, 0)
            assert (await worker.run_once()).claimed == 0
            parent = await opened.load(crashed.parent_id)
            child = await opened.load(crashed.child_id)
            await check_journals(opened, crashed, compensated=(STEP_A, CHILD_X, CHILD_Y, STEP_B))
            undone = [
                e.step_id
                for e in await opened.history(crashed.parent_id)
                if e.direction is StepDirection.COMPENSATE and e.event is StepEvent.COMPLETED
            ]
            assert undone == [STEP_B, CHILD_Y, CHILD_X, STEP_A]
            # The child's own journal records no compensation: its parent did it.
            assert not [
                e
                for e in await opened.history(crashed.child_id)
                if e.direction is StepDirection.COMPENSATE
            ]

        # The parent is rolled back; the child's record stays COMPLETED (it did complete).
        assert (parent.status, parent.applied, parent.error, parent.lease_owner) == (
            SagaStatus.COMPENSATED,
            (),
            FAILURE,
            None,
        ), parent
        assert (child.status, child.applied, child.parent_id) == (
            SagaStatus.COMPLETED,
            (STEP_X, STEP_Y),
            crashed.parent_id,
        ), child
        assert context_of(child) == {"x": dead, "y": me, "label": LABEL}

        # The parent's writes: its node, the decision (B's outcome unknown: it is undone
        # too), then one write per compensation, undoing ``applied`` from its end.
        assert written(storage.checkpoints, crashed.child_id) == [
            (SagaStatus.COMPLETED, 2, (STEP_X, STEP_Y)),
        ]
        assert written(storage.checkpoints, crashed.parent_id) == [
            (SagaStatus.RUNNING, 2, PARENT_STEPS[:3]),
            (SagaStatus.COMPENSATING, 2, PARENT_STEPS),
            (SagaStatus.COMPENSATING, 2, PARENT_STEPS[:3]),
            (SagaStatus.COMPENSATING, 2, PARENT_STEPS[:2]),
            (SagaStatus.COMPENSATING, 2, PARENT_STEPS[:1]),
            (SagaStatus.COMPENSATED, 2, ()),
        ]

        # The ledger: every compensation once, by the recovery, one after the other, in
        # reverse order; the child's with the child's idempotency keys (``calls_of``).
        assert calls_of(crashed.ledger, crashed.parent_id) == {
            (STEP_A, ACT): [(dead, True)],
            (STEP_X, ACT): [(dead, True)],
            (STEP_Y, ACT): [*([(dead, False)] if at == "inside-y" else []), (me, True)],
            (STEP_B, ACT): [(me, True)],
            **{(step, COMPENSATE): [(me, True)] for step in (STEP_A, STEP_X, STEP_Y, STEP_B)},
        }
        effects = crashed.ledger.effects()
        undo = [e for e in effects if e.direction == COMPENSATE]
        assert [e.step for e in undo] == [STEP_B, STEP_Y, STEP_X, STEP_A]
        child_id = str(crashed.child_id)
        assert [e.key for e in undo[1:3]] == [
            f"{child_id}:{STEP_Y}:compensate",
            f"{child_id}:{STEP_X}:compensate",
        ]
        for earlier, later in itertools.pairwise(undo):
            assert earlier.finished is not None and earlier.finished <= later.started, effects
        last_act = max(e.started for e in effects if e.direction == ACT)
        assert undo[0].started > last_act, effects
    finally:
        crashed.ledger.close()


# --- (4) a child that waits ----------------------------------------------------------------------


async def test_a_child_that_waits_is_signalled_from_another_process_and_wakes_its_parent(
    storage_spec: StorageSpec, anyio_backend: str, tmp_path: Path
) -> None:
    """A runner process runs the parent whose child waits for "go": both end WAITING, the
    parent for its child. Another process sends "go" to the child. A worker pass runs the
    child to its end, which makes the parent due at once; the next pass completes it."""
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create()
    parent_id = uuid.uuid4()
    child_id = child_id_of(parent_id)
    try:
        config = run_config(storage_spec, anyio_backend, ledger, parent_id, waits=True)
        async with storage_spec.open(anyio_backend) as opened:
            assert await opened.list_sagas(limit=10) == []  # (SQLite: its tables created)
        report = await child_report(config, tmp_path / "runner.log")
        assert report["status"] == SagaStatus.WAITING.value
        ((runner, _),) = calls_of(ledger, parent_id)[(STEP_A, ACT)]

        async with storage_spec.open(anyio_backend) as opened:
            storage = RecordingStorage(opened)
            parent = await opened.load(parent_id)
            child = await opened.load(child_id)
            now = datetime.now(timezone.utc)
            # The parent waits for its child, without a lease, due only at its safety check.
            assert (
                parent.status,
                parent.cursor,
                parent.next_step,
                parent.applied,
                parent.waiting_for,
                parent.lease_owner,
                parent.saga_name,
            ) == (
                SagaStatus.WAITING,
                CHILD_CURSOR,
                NODE,
                (STEP_A,),
                wake_signal_of(parent_id),
                None,
                WAIT_PARENT_NAME,
            ), parent
            assert parent.wake_at is not None
            assert now + CHILD_CHECK - timedelta(minutes=1) < parent.wake_at <= now + CHILD_CHECK
            # The child waits for "go", X done.
            assert (
                child.status,
                child.cursor,
                child.next_step,
                child.applied,
                child.waiting_for,
                child.parent_id,
                child.saga_name,
                child.wake_at,
            ) == (
                SagaStatus.WAITING,
                1,
                kit.GO_WAIT_ID,
                (STEP_X,),
                kit.GO,
                parent_id,
                WAIT_CHILD_NAME,
                None,
            ), child
            worker = worker_on(storage)
            assert (await worker.run_once()).claimed == 0  # nothing is due

            # Another process signals the child.
            signalled = await child_report(
                {
                    "action": "signal",
                    "storage": storage_spec.to_json(),
                    "backend": anyio_backend,
                    "saga_id": str(parent_id),
                    "payload": "TRK-9",
                    "signal_id": "evt-1",
                },
                tmp_path / "signal.log",
            )
            assert signalled["status"] is True

            # A worker pass: the child alone is due; it completes and wakes its parent.
            with anyio.fail_after(30):
                first = await worker.run_once()
            assert (first.claimed, first.completed, first.errors, first.lost) == (1, 1, 0, 0)
            child = await opened.load(child_id)
            assert (child.status, child.applied, child.parent_id) == (
                SagaStatus.COMPLETED,
                (STEP_X, STEP_Y),
                parent_id,
            ), child
            parent = await opened.load(parent_id)
            assert (parent.status, parent.waiting_for) == (
                SagaStatus.WAITING,
                wake_signal_of(parent_id),
            ), parent
            assert [s.name for s in parent.signals] == [wake_signal_of(parent_id)]
            # Due now, not at its safety check five minutes on.
            assert parent.wake_at is not None
            assert parent.wake_at <= datetime.now(timezone.utc), parent
            assert parent_id in {r.saga_id for r in await opened.list_recoverable()}

            # The next pass claims the parent: it takes the child's result and completes.
            with anyio.fail_after(30):
                second = await worker.run_once()
            assert (second.claimed, second.completed, second.errors, second.lost) == (1, 1, 0, 0)
            parent = await opened.load(parent_id)
            child_history = await opened.history(child_id)
            parent_history = await opened.history(parent_id)

        me = os.getpid()
        assert (parent.status, parent.cursor, parent.applied, parent.error) == (
            SagaStatus.COMPLETED,
            3,
            PARENT_STEPS,
            None,
        ), parent
        label = f"{LABEL}/TRK-9"
        assert context_of(parent) == {"a": runner, "b": me, "x": runner, "y": me, "label": label}
        assert json.loads(child.context)["go"] == "TRK-9"
        assert calls_of(ledger, parent_id) == {
            (STEP_A, ACT): [(runner, True)],
            (STEP_X, ACT): [(runner, True)],
            (STEP_Y, ACT): [(me, True)],
            (STEP_B, ACT): [(me, True)],
        }
        assert written(storage.checkpoints, child_id) == [
            (SagaStatus.COMPLETED, 3, (STEP_X, STEP_Y)),
        ]
        assert written(storage.checkpoints, parent_id) == [
            (SagaStatus.RUNNING, 2, PARENT_STEPS[:3]),
            (SagaStatus.COMPLETED, 3, PARENT_STEPS),
        ]
        act = StepDirection.ACT
        assert completions(child_history) == {
            (STEP_X, act): 1,
            (kit.GO_WAIT_ID, act): 1,
            (STEP_Y, act): 1,
        }
        assert completions(parent_history) == {(STEP_A, act): 1, (NODE, act): 1, (STEP_B, act): 1}
        resumed = [e for e in child_history if e.step_id == kit.GO_WAIT_ID]
        assert [(e.event, e.detail) for e in resumed if e.event is StepEvent.COMPLETED] == [
            (StepEvent.COMPLETED, "evt-1")
        ], child_history
    finally:
        ledger.close()
