"""The storage's reads: a saga by id, its journal, lists, and the schema check.

Each is a function of a synchronous connection (a runner calls it, see ``_runner``) and
writes nothing. A row that cannot be decoded fails a read by id with
``StorageCorruptedError``; lists skip it (logged by saga-core's ``read_records``). Every
record carries its pending signals, read from the signals table by a second statement.

Recovery takes the earliest due first: a stalled saga (RUNNING, COMPENSATING or FAILED with no
live lease) at its ``updated_at``, a WAITING one at its ``wake_at`` once that has come. Each
kind is read through its own index (see ``_schema``), up to the limit each, and the union is
sorted by when each became due; no statement reads the sagas that wait for later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from saga_core import SagaRecord, SagaStatus
from saga_core.storage import JournalEntry, PendingSignal, read_records

from ._core import Commit, CoreSql
from ._journal import decode_journal
from ._outcomes import not_found
from ._rows import RECORD_COLUMNS, SIGNAL_COLUMNS, record_from_row, signal_from_row
from ._schema import recoverable_terms, schema_probes, waiting_terms

#: The most saga ids one statement reading signals names (drivers bound their parameters).
_IDS_PER_READ = 1000

#: How many stalled sagas a locking claim chooses among, per saga it may claim (PostgreSQL;
#: see ``Reads._stalled_candidates``). The candidates are the earliest due as the claim's
#: statement began; those another claim holds locked are skipped (SKIP LOCKED), and a
#: concurrent claim holds at most its own limit of them. So, with claims of one batch size,
#: a claim comes back full while at most this many claims run at once (a ``SagaWorker``
#: makes one at a time: 4 worker processes, 4 claims); past that, it may come back short,
#: never wrong — and a worker whose claim comes back short pauses until its poll interval
#: or a wake-up, though more is due. More candidates cost little: the sort stays bounded by
#: their number (a heap of narrow rows), and each is read once more by its primary key.
CANDIDATES_PER_CLAIM = 8


class Reads:
    """The read statements of one storage."""

    def __init__(self, sql: CoreSql) -> None:
        self._sql = sql
        c = sql.tables.saga.c
        self._history = sa.select(c.journal).where(c.saga_id == sa.bindparam("b_id"))
        #: No live lease: none was taken, or it has expired.
        self.free = sa.or_(
            c.lease_owner.is_(None), c.lease_expires_at.is_(None), c.lease_expires_at <= sql.now
        )
        #: Sagas recovery may take: unfinished, not parked, and with no live lease.
        self.recoverable = sa.and_(recoverable_terms(sql.tables.saga), self.free)
        #: The order recovery takes them in: oldest update first.
        self.recoverable_order = (c.updated_at, c.created_at, c.saga_id)
        #: Sagas whose lease names ``b_owner``, live or expired. Only an unfinished saga that
        #: is not parked holds a lease (every write that finishes, releases or parks a saga
        #: clears it), so the recovery index's terms change nothing in the result; they let
        #: the database read that index of the active sagas instead of the whole table,
        #: finished sagas included (``lease_owner`` has no index of its own: see the README).
        #: WAITING sagas (claimed and not resumed yet) hold leases too: those are read
        #: through the waiting index (see :meth:`list_sagas`).
        saga = sql.tables.saga
        owned = c.lease_owner == sa.bindparam("b_owner")
        self.leased_to = (
            sa.and_(owned, recoverable_terms(saga)),
            sa.and_(owned, waiting_terms(saga)),
        )
        due = c.wake_at <= sql.now
        #: Each kind of due work, with the column that says since when it is due: stalled
        #: sagas; WAITING ones without a lease whose time came (or that a signal or a cancel
        #: made due); WAITING ones claimed by an owner whose lease expired before it resumed
        #: them.
        self.due_kinds = (
            (self.recoverable, c.updated_at),
            (sa.and_(waiting_terms(saga), c.lease_owner.is_(None), due), c.wake_at),
            (
                sa.and_(
                    waiting_terms(saga),
                    c.lease_owner.is_not(None),
                    sa.or_(c.lease_expires_at.is_(None), c.lease_expires_at <= sql.now),
                    due,
                ),
                c.wake_at,
            ),
        )
        self._due_first = self._build_due_first(lock=False)
        self._due_first_locked = self._build_due_first(lock=True)
        signals = sql.tables.signals
        self._pending_signals = (
            sa.select(*(signals.c[name] for name in SIGNAL_COLUMNS))
            .where(
                sql.among_ids(signals.c.saga_id),
                signals.c.consumed == sa.false(),
            )
            .order_by(signals.c.saga_id, signals.c.position)
        )

    def due_first(self, *, lock: bool = False) -> sa.Select[Any]:
        """Up to ``b_limit`` recoverable sagas (their :data:`RECORD_COLUMNS`), earliest due
        first (ties in creation order); executed with the clock's parameters (``CoreSql.clock``).
        ``lock``: each row read is locked, skipping rows another transaction holds
        (PostgreSQL's ``FOR UPDATE SKIP LOCKED``; SQLite has one writer at a time and no row
        locks).

        Each kind of due work is a query of its own, read in due order through its index up
        to the limit (a CTE, which may lock its rows where a member of a UNION may not); a
        locking claim on PostgreSQL chooses its stalled sagas among candidates read without
        locks first (see :meth:`_stalled_candidates`). Both statements are built once, with
        the limit a parameter: building this one anew took a recovery worker's process more
        CPU than running the claim did.
        """
        return self._due_first_locked if lock else self._due_first

    def _build_due_first(self, *, lock: bool) -> sa.Select[Any]:
        c = self._sql.tables.saga.c
        limit = sa.bindparam("b_limit", type_=sa.Integer())
        # PostgreSQL locks rows; SQLite has no row locks, so its sorts are bounded by the
        # limit already.
        row_locks = lock and self._sql.is_postgresql
        kinds = []
        for number, (where, due) in enumerate(self.due_kinds):
            if row_locks and where is self.recoverable:
                where = self._stalled_candidates(where, due, limit)
            query = (
                sa.select(*self._sql.record_columns, due.label("due"))
                .where(where)
                .order_by(due, c.created_at, c.saga_id)
                .limit(limit)
            )
            if lock:
                query = query.with_for_update(skip_locked=True)
            kinds.append(sa.select(query.cte(f"due_{number}")))
        due_work = sa.union_all(*kinds).subquery("due_work")
        return (
            sa.select(*(due_work.c[name] for name in RECORD_COLUMNS))
            .order_by(due_work.c.due, due_work.c.created_at, due_work.c.saga_id)
            .limit(limit)
        )

    def _stalled_candidates(
        self, where: sa.ColumnElement[bool], due: sa.ColumnElement[Any], limit: Any
    ) -> sa.ColumnElement[bool]:
        """``where`` narrowed to the :data:`CANDIDATES_PER_CLAIM` x ``limit`` stalled sagas
        due first, chosen by their ids and sort keys alone (PostgreSQL's locking claim).

        The stalled sagas are read through the recovery index, which holds ``status`` only (so
        that a checkpoint stays a HOT update), then sorted. Where the sort sits under the row
        locks (``FOR UPDATE SKIP LOCKED``), PostgreSQL cannot stop it at the limit: it sorted
        every stalled saga's whole row on every claim (2.4 MB with 10,000 of them). Without
        locks, the limit bounds the sort (a top-N heapsort of narrow rows); the claim then
        locks the earliest of those candidates, read again by primary key: their ids are an
        array (``= ANY(ARRAY(SELECT ...))``, computed once), looked up in the primary key's
        index (``IN (SELECT ...)`` was planned as a hash join that read every stalled row a
        second time). The outer query says ``where`` again: a candidate another claim leased
        after this statement began is re-checked on its new row version when locked, and
        skipped.
        """
        c = self._sql.tables.saga.c
        candidates = (
            sa.select(c.saga_id)
            .where(where)
            .order_by(due, c.created_at, c.saga_id)
            .limit(limit * sa.literal_column(str(CANDIDATES_PER_CLAIM), sa.Integer()))
        )
        chosen = sa.func.array(candidates.scalar_subquery())
        return sa.and_(c.saga_id == sa.any_(chosen), where)

    def with_signals(
        self, connection: Connection, records: Sequence[SagaRecord]
    ) -> list[SagaRecord]:
        """``records`` with their pending signals, in delivery order."""
        if not records:
            return []
        found: defaultdict[UUID, list[PendingSignal]] = defaultdict(list)
        ids = [record.saga_id for record in records]
        for start in range(0, len(ids), _IDS_PER_READ):
            chunk = ids[start : start + _IDS_PER_READ]
            for row in connection.execute(self._pending_signals, {"b_ids": chunk}):
                found[row[0]].append(signal_from_row(row))
        return [
            record._replace(signals=tuple(found[record.saga_id]))
            if record.saga_id in found
            else record
            for record in records
        ]

    def record(self, connection: Connection, saga_id: UUID) -> SagaRecord:
        """The record of ``saga_id`` with its pending signals. Raises SagaNotFoundError."""
        row = connection.execute(self._sql.load, {"b_id": saga_id}).first()
        if row is None:
            raise not_found(saga_id)
        return self.with_signals(connection, [record_from_row(row)])[0]

    def load(self, connection: Connection, commit: Commit, saga_id: UUID) -> SagaRecord:
        return self.record(connection, saga_id)

    def history(self, connection: Connection, commit: Commit, saga_id: UUID) -> list[JournalEntry]:
        row = connection.execute(self._history, {"b_id": saga_id}).first()
        if row is None:
            raise not_found(saga_id)
        return decode_journal(saga_id, row[0])

    def list_recoverable(
        self, connection: Connection, commit: Commit, limit: int
    ) -> list[SagaRecord]:
        if limit <= 0:
            return []
        params = self._sql.clock(None)
        params["b_limit"] = limit
        result = connection.execute(self.due_first(), params)
        return self.with_signals(connection, read_records(result, record_from_row).records)

    def list_sagas(
        self,
        connection: Connection,
        commit: Commit,
        status: SagaStatus | None,
        saga_name: str | None,
        parked: bool | None,
        updated_before: datetime | None,
        lease_owner: str | None,
        limit: int,
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas matching every filter given, oldest update first."""
        if limit <= 0:
            return []
        c = self._sql.tables.saga.c
        filters: list[sa.ColumnElement[bool]] = []
        if status is not None:
            filters.append(c.status == status.value)
        if saga_name is not None:
            filters.append(c.saga_name == saga_name)
        if parked is not None:
            filters.append(c.parked == (sa.true() if parked else sa.false()))
        if updated_before is not None:
            filters.append(c.updated_at < updated_before)
        query: sa.Select[Any]
        if lease_owner is None:
            query = sa.select(*self._sql.record_columns).where(*filters)
            query = query.order_by(*self.recoverable_order).limit(limit)
        else:
            # The leased sagas are in one index or the other: one query through each.
            leased = sa.union_all(
                *(
                    sa.select(*self._sql.record_columns).where(*filters, terms)
                    for terms in self.leased_to
                )
            ).subquery("leased")
            query = (
                sa.select(*(leased.c[name] for name in RECORD_COLUMNS))
                .order_by(leased.c.updated_at, leased.c.created_at, leased.c.saga_id)
                .limit(limit)
            )
        params = {} if lease_owner is None else {"b_owner": lease_owner}
        records = read_records(connection.execute(query, params), record_from_row).records
        return self.with_signals(connection, records)

    def check_schema(self, connection: Connection, commit: Commit) -> None:
        """Raise the driver's error when the table or one of its columns is missing."""
        for probe in schema_probes(self._sql.tables):
            connection.execute(probe).all()
