"""Durable waits: the writes that suspend a saga, deliver signals to it and cancel it.

Each is a function of a synchronous connection (a runner calls it, see ``_runner``) and one
transaction, in SQLAlchemy Core for every database. None is on a saga's plain hot path: a
checkpoint or create that uses no durable-wait feature (nor, for a create, a parent) is written
by its path's own single statement (see ``_rules.needs_wait_rules``); one that does is written
here, where it may take more statements in its transaction.

Every write here takes the saga's row lock first (``SELECT ... FOR UPDATE`` on PostgreSQL,
the compare-and-set UPDATE itself, or SQLite's write lock), and each statement after it reads
what was committed before it got the lock, so a delivery, a cancel and a checkpoint of one saga
are applied one after the other: two deliveries of one signal id never both store it, and a
saga that suspends on a signal delivered meanwhile is due at once.

On PostgreSQL, a write here that makes a saga due now — a WAITING saga stored due (a
detached start, a hand-back), a signal the saga waits for, a cancel of a WAITING saga —
also sends ``NOTIFY`` on the storage's channel (``_schema.work_channel``) in its
transaction, so listening workers (``_listen``) hear of it when it commits, and never of a
write that rolled back. Plain checkpoints and creates never come here, so never notify.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saga_core import (
    SagaRecord,
    SagaSignalPendingError,
    SagaSignalRefusedError,
    SagaStatus,
    SagaVersionConflictError,
)
from saga_core.storage import Checkpoint, NewSaga, NewSignal

from ._core import Commit, CoreSql, begin_immediate
from ._outcomes import TERMINAL_VALUES, Outcome, Write, finished, not_found, refusal, stored
from ._reads import Reads
from ._schema import WAITING, UtcTimestamp, work_channel

#: The statuses that take signals and cancels.
_LIVE = (SagaStatus.RUNNING.value, WAITING)


class WaitWrites:
    """The durable-wait statements of one storage."""

    def __init__(self, sql: CoreSql, reads: Reads) -> None:
        self._sql = sql
        self._reads = reads
        saga, signals = sql.tables.saga, sql.tables.signals
        c, s = saga.c, signals.c
        now = sql.now
        this_saga = c.saga_id == sa.bindparam("b_id")
        #: The saga's row, locked until the transaction ends (PostgreSQL; SQLite's writer
        #: holds the database's write lock instead).
        self._lock = (
            sa.select(c.status, c.cursor, c.next_step, c.cancel_reason, c.waiting_for)
            .where(this_saga)
            .with_for_update()
        )
        # A pending signal of the saga named as the signal it waits for.
        pending_awaited = sa.and_(
            s.saga_id == c.saga_id, s.name == c.waiting_for, s.consumed == sa.false()
        )
        #: The rule that makes a WAITING saga due now (``wake_at`` brought forward to now if it
        #: is later or missing): a cancel is requested, or a signal it waits for is pending.
        #: Run after every write that may make it true: a delivery, a cancel, a suspend.
        self._wake_now = (
            sa.update(saga)
            .where(
                this_saga,
                c.status == WAITING,
                sa.or_(c.wake_at.is_(None), c.wake_at > now),
                sa.or_(c.cancel_reason.is_not(None), sa.exists().where(pending_awaited)),
            )
            .values(wake_at=now)
        )
        self._pending_named = sa.select(s.signal_id).where(
            s.saga_id == sa.bindparam("b_id"),
            s.name == sa.bindparam("b_name"),
            s.consumed == sa.false(),
        )
        self._consume = (
            sa.update(signals)
            .where(
                s.saga_id == sa.bindparam("b_id"),
                s.signal_id == sa.bindparam("b_signal_id"),
                s.consumed == sa.false(),
            )
            .values(consumed=True)
        )
        #: What a delivery checks, in one read of the saga's signals: the last delivery's
        #: position, whether the signal id was delivered before (pending or consumed), and the
        #: id of a pending signal of the same name (NULL: none).
        self._delivered = sa.select(
            sa.func.coalesce(sa.func.max(s.position), 0),
            sa.func.coalesce(
                sa.func.sum(sa.case((s.signal_id == sa.bindparam("b_signal_id"), 1), else_=0)),
                0,
            ),
            sa.func.max(
                sa.case(
                    (
                        sa.and_(s.name == sa.bindparam("b_name"), s.consumed == sa.false()),
                        s.signal_id,
                    )
                )
            ),
        ).where(s.saga_id == sa.bindparam("b_id"))
        delivered_at = now if sql.db_clock else sa.bindparam("b_now", type_=UtcTimestamp())
        self._store_signal = sa.insert(signals).values(
            saga_id=sa.bindparam("b_id"),
            signal_id=sa.bindparam("b_signal_id"),
            position=sa.bindparam("b_position"),
            name=sa.bindparam("b_name"),
            payload=sa.bindparam("b_payload"),
            delivered_at=delivered_at,
            consumed=False,
        )
        #: A checkpoint to WAITING: the saga made progress, so its recovery attempts start
        #: again from 0 (resumes are not failed attempts).
        self._suspend = sql.checkpoint.values(attempts=0)
        self._cancel = (
            sa.update(saga)
            .where(this_saga, c.cancel_reason.is_(None), c.status.in_(_LIVE))
            .values(cancel_reason=sa.bindparam("b_reason"))
        )
        #: Where PostgreSQL's listeners hear of due work (None elsewhere: nobody listens).
        self.channel = work_channel(sql.tables) if sql.db_clock else None
        self._notify = sa.select(sa.func.pg_notify(sa.bindparam("b_channel"), ""))

    # --- creates and checkpoints -------------------------------------------------------------

    def write(self, connection: Connection, commit: Commit, write: Write) -> Outcome:
        """Write a create or checkpoint that uses durable waits, in one transaction; return
        its refusal (None when written). A checkpoint is the compare-and-set of every other
        (which locks the row), then its signal conditions, then the due-now rule; any refusal
        rolls the whole write back."""
        sql = self._sql
        if sql.is_sqlite:
            begin_immediate(connection)
        if isinstance(write, NewSaga):
            if not sql.insert_new(connection, write):
                return refusal(write, None)
            if write.status is SagaStatus.WAITING and _is_due(write.wake_at):
                self._notify_due(connection)
            commit()
            return None
        params = sql.checkpoint_params(write)
        waiting = write.status is SagaStatus.WAITING
        statement = self._suspend if waiting else sql.checkpoint
        if connection.execute(statement, params).rowcount != 1:
            found = connection.execute(sql.diagnose, {"b_ids": [write.saga_id]}).first()
            return refusal(write, None if found is None else stored((found[1], found[2], found[7])))
        outcome = self._signal_conditions(connection, write)
        if outcome is not None:
            return outcome  # not committed: the runner rolls the checkpoint back
        if waiting:
            woken = connection.execute(self._wake_now, {**params, "b_id": write.saga_id})
            if woken.rowcount == 1 or _is_due(write.wake_at):
                self._notify_due(connection)
        commit()
        return None

    def _signal_conditions(self, connection: Connection, write: Checkpoint) -> Outcome:
        """Check ``unless_signal`` and consume ``consume_signal`` (the row is locked)."""
        saga_id = write.saga_id
        unless = write.unless_signal
        if unless is not None:
            found = connection.execute(self._pending_named, {"b_id": saga_id, "b_name": unless})
            if found.first() is not None:
                return SagaSignalPendingError(
                    f"saga {saga_id} has a pending signal {unless!r}: it arrived first, so "
                    "the saga takes it; nothing was written"
                )
        wanted = write.consume_signal
        if wanted is not None:
            result = connection.execute(self._consume, {"b_id": saga_id, "b_signal_id": wanted})
            if result.rowcount != 1:
                return SagaVersionConflictError(
                    f"saga {saga_id} has no pending signal {wanted!r} to consume: another "
                    "runner consumed it; stop without writing"
                )
        return None

    # --- signals and cancels -----------------------------------------------------------------

    def deliver_signal(self, connection: Connection, commit: Commit, signal: NewSignal) -> bool:
        """Store ``signal`` unless its id was delivered before (False); see
        ``SagaStorage.deliver_signal``. The checks run in the rules' order, under the row
        lock: a duplicate (even of a finished saga), then a finished saga, then acceptance,
        then a pending signal of the same name."""
        saga_id = signal.saga_id
        status, cursor, next_step, cancel_reason, waiting_for = self._row(connection, saga_id)
        params: dict[str, Any] = {
            "b_id": saga_id,
            "b_signal_id": signal.signal_id,
            "b_name": signal.name,
        }
        last, seen, pending = connection.execute(self._delivered, params).one()
        if seen:
            return False
        if status in TERMINAL_VALUES:
            raise finished(saga_id, status)
        if status not in _LIVE or cancel_reason is not None:
            why = "it is cancelled" if cancel_reason is not None else f"it is {status}"
            raise SagaSignalRefusedError(
                f"saga {saga_id} does not accept signal {signal.name!r}: {why}, so it will "
                "not wait for it again; nothing was stored"
            )
        if cursor > signal.wait_cursor or (
            cursor == signal.wait_cursor and next_step != signal.wait_step
        ):
            raise SagaSignalRefusedError(
                f"saga {saga_id} has gone past its wait for signal {signal.name!r} (it took an "
                "earlier one, or the wait timed out); nothing was stored"
            )
        if pending is not None:
            raise SagaSignalRefusedError(
                f"saga {saga_id} has a signal {signal.name!r} pending already (id "
                f"{pending!r}) and its wait takes one; nothing was stored"
            )
        params.update(self._sql.clock(None))
        params.update(b_position=int(last) + 1, b_payload=signal.payload)
        connection.execute(self._store_signal, params)
        if status == WAITING and waiting_for == signal.name:
            connection.execute(self._wake_now, params)
            self._notify_due(connection)
        commit()
        return True

    def request_cancel(
        self, connection: Connection, commit: Commit, saga_id: UUID, reason: str
    ) -> SagaRecord:
        """Record a cancel of a RUNNING or WAITING saga (the first reason wins) and return
        its record; see ``SagaStorage.request_cancel``."""
        status = self._locked(connection, saga_id)[0]
        params: dict[str, Any] = {"b_id": saga_id, "b_reason": reason, **self._sql.clock(None)}
        cancelled = connection.execute(self._cancel, params).rowcount == 1
        if cancelled and status == WAITING:
            connection.execute(self._wake_now, params)
            self._notify_due(connection)
        record = self._reads.record(connection, saga_id)
        if cancelled:
            commit()
        return record

    def _notify_due(self, connection: Connection) -> None:
        """Tell the listening workers, when this transaction commits, that a saga is due."""
        if self.channel is not None:
            connection.execute(self._notify, {"b_channel": self.channel})

    def _locked(self, connection: Connection, saga_id: UUID) -> Any:
        """Lock the saga's row; return ``(status, cursor, next_step, cancel_reason,
        waiting_for)``. Raises SagaNotFoundError, or SagaFinishedError for a finished saga."""
        row = self._row(connection, saga_id)
        if row[0] in TERMINAL_VALUES:
            raise finished(saga_id, row[0])
        return row

    def _row(self, connection: Connection, saga_id: UUID) -> Any:
        """Lock the saga's row, finished or not; return it as :meth:`_locked` does. Raises
        SagaNotFoundError."""
        if self._sql.is_sqlite:
            begin_immediate(connection)
        row = connection.execute(self._lock, {"b_id": saga_id}).first()
        if row is None:
            raise not_found(saga_id)
        return row


def _is_due(wake_at: datetime | None) -> bool:
    """Whether a WAITING saga stored with ``wake_at`` is due already (by this process's
    clock: a hint for listeners, who claim by the database's)."""
    return wake_at is not None and wake_at <= datetime.now(timezone.utc)
