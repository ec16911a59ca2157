"""The storage's database operations, each a function of a synchronous SQLAlchemy connection.

They are written with SQLAlchemy Core so that they run on every dialect; a runner (see
``_runner``) calls them in a worker thread or through an async engine's ``run_sync``.

Writes never raise for a refused compare-and-set: an UPDATE that matches no row is a result,
not an exception, so one refused checkpoint in a batch does not abort the others (see
:meth:`Operations.write_batch`). Times come from the database (``now()``) on PostgreSQL and
from this process's clock elsewhere (SQLite has one writer machine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from saga_core import (
    SagaAlreadyExistsError,
    SagaError,
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaNotFoundError,
    SagaParkedError,
    SagaRecord,
    SagaStatus,
    SagaVersionConflictError,
    StorageCorruptedError,
)
from saga_core.storage import Checkpoint, JournalEntry, NewSaga, describe_error, read_records

from ._journal import decode_journal, encode_journal
from ._rows import RECORD_COLUMNS, encode_applied, record_from_row
from ._schema import SagaTables, UtcTimestamp, not_parked, recoverable_terms, schema_probes

Commit = Callable[[], None]
Write = NewSaga | Checkpoint


def describe_write(write: Write) -> str:
    """What a write does, for the message of the error it failed with."""
    if isinstance(write, Checkpoint):
        return f"checkpoint of saga {write.saga_id}"
    return f"creating saga {write.saga_id}"


_TERMINAL = (SagaStatus.COMPLETED.value, SagaStatus.COMPENSATED.value)
_TERMINAL_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})
_RUNNING = SagaStatus.RUNNING.value
_UTC = timezone.utc


class Operations:
    """The SQL of one storage: its tables, compiled once for its dialect."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        self.tables = tables
        self.dialect_name = dialect.name
        self.db_clock = dialect.name == "postgresql"
        self.is_sqlite = dialect.name == "sqlite"
        self.update_returning = bool(getattr(dialect, "update_returning", False))
        saga = tables.saga
        c = saga.c
        self._record_columns = [c[name] for name in RECORD_COLUMNS]
        if self.db_clock:
            now: Any = sa.func.now()
            expires: Any = now + sa.bindparam("b_lease", type_=sa.Interval())
        else:
            now = sa.bindparam("b_now", type_=UtcTimestamp())
            expires = sa.bindparam("b_expires", type_=UtcTimestamp())
        self._now_sql = now
        insert: Any
        if dialect.name == "postgresql":
            insert = postgresql.insert(saga).on_conflict_do_nothing(index_elements=["saga_id"])
        elif dialect.name == "sqlite":
            insert = sqlite.insert(saga).on_conflict_do_nothing(index_elements=["saga_id"])
        else:
            insert = sa.insert(saga)
        # Whether the INSERT says itself if it inserted (RETURNING): some drivers report no
        # rowcount for a single-row INSERT (psycopg under SQLAlchemy 2.1).
        self._insert_on_conflict = dialect.name in ("postgresql", "sqlite") and bool(
            getattr(dialect, "insert_returning", False)
        )
        if not self._insert_on_conflict:
            insert = sa.insert(saga)
        insert = insert.values(
            saga_id=sa.bindparam("b_id"),
            saga_name=sa.bindparam("b_name"),
            status=_RUNNING,
            version=1,
            cursor=0,
            applied="[]",
            context=sa.bindparam("b_context"),
            error=None,
            created_at=now,
            updated_at=now,
            lease_owner=sa.bindparam("b_owner"),
            lease_expires_at=expires,
            next_step=sa.bindparam("b_next_step"),
            journal=sa.bindparam("b_journal"),
        )
        self._insert_saga = insert.returning(c.saga_id) if self._insert_on_conflict else insert
        self._update = (
            sa.update(saga)
            .where(
                c.saga_id == sa.bindparam("b_id"),
                c.version == sa.bindparam("b_expected"),
                c.status.not_in(_TERMINAL),
            )
            .values(
                status=sa.bindparam("b_status"),
                version=c.version + 1,
                cursor=sa.bindparam("b_cursor"),
                applied=sa.bindparam("b_applied"),
                context=sa.bindparam("b_context"),
                error=sa.bindparam("b_error"),
                updated_at=now,
                lease_owner=sa.bindparam("b_owner"),
                lease_expires_at=expires,
                next_step=sa.bindparam("b_next_step"),
                journal=c.journal.concat(sa.bindparam("b_journal")),
            )
        )
        self._diagnose = sa.select(
            c.saga_id, c.status, c.version, c.lease_owner, c.lease_expires_at, c.parked, c.error
        ).where(c.saga_id.in_(sa.bindparam("b_ids", expanding=True)))
        self._load = sa.select(*self._record_columns).where(c.saga_id == sa.bindparam("b_id"))
        self._load_many = sa.select(*self._record_columns).where(
            c.saga_id.in_(sa.bindparam("b_ids", expanding=True))
        )
        self._history = sa.select(c.journal).where(c.saga_id == sa.bindparam("b_id"))
        free = sa.or_(
            c.lease_owner.is_(None), c.lease_expires_at.is_(None), c.lease_expires_at <= now
        )
        self._recoverable = sa.and_(recoverable_terms(saga), free)
        self._recoverable_order = (c.updated_at, c.created_at, c.saga_id)
        lease_values = {
            "version": c.version + 1,
            "attempts": c.attempts + 1,
            "lease_owner": sa.bindparam("b_owner"),
            "lease_expires_at": expires,
            "updated_at": now,
        }
        claim = (
            sa.update(saga)
            .where(
                c.saga_id == sa.bindparam("b_id"),
                c.status.not_in(_TERMINAL),
                not_parked(saga),
                sa.or_(free, c.lease_owner == sa.bindparam("b_owner")),
            )
            .values(**lease_values)
        )
        self._claim = claim.returning(*self._record_columns) if self.update_returning else claim
        self._claim_many = (
            sa.update(saga)
            .where(c.saga_id.in_(sa.bindparam("b_ids", expanding=True)))
            .values(**lease_values)
        )
        self._claim_many_returning = self._claim_many.returning(
            c.saga_id, c.version, c.attempts, c.updated_at, c.lease_expires_at
        )
        # Writes of the lease's owner (renew_lease, park): one conditional UPDATE each; a
        # parked or released saga has no owner, so it never matches.
        owned = sa.and_(
            c.saga_id == sa.bindparam("b_id"),
            c.lease_owner == sa.bindparam("b_owner"),
            c.status.not_in(_TERMINAL),
        )
        self._renew = self._returning_id(
            sa.update(saga).where(owned).values(lease_expires_at=expires)
        )
        # What parking writes: the dead-letter flag, the reason, no lease, a new version.
        parked = {
            "parked": True,
            "error": sa.bindparam("b_reason"),
            "lease_owner": None,
            "lease_expires_at": None,
            "version": c.version + 1,
            "updated_at": now,
        }
        self._park = self._returning_id(sa.update(saga).where(owned).values(**parked))
        # A damaged row a recovery claim met (locked by it, leased to nobody in particular).
        self._park_damaged_row = (
            sa.update(saga)
            .where(c.saga_id == sa.bindparam("b_id"), c.status.not_in(_TERMINAL))
            .values(**parked)
        )
        unpark = (
            sa.update(saga)
            .where(c.saga_id == sa.bindparam("b_id"), c.parked == sa.true())
            .values(parked=False, attempts=0, updated_at=now)
        )
        self._unpark = unpark.returning(*self._record_columns) if self.update_returning else unpark

    def _returning_id(self, update: sa.Update) -> sa.Update:
        """``update`` saying itself whether it matched (RETURNING) where the dialect can: the
        rowcount of some drivers is unreliable; elsewhere the caller reads the rowcount."""
        return update.returning(self.tables.saga.c.saga_id) if self.update_returning else update

    def _matched(self, result: sa.CursorResult[Any]) -> bool:
        if self.update_returning:
            return result.first() is not None
        return result.rowcount == 1

    # --- parameters --------------------------------------------------------------------------

    def _clock(self, lease_seconds: float | None) -> dict[str, Any]:
        """The time parameters of a write: the lease as an interval on PostgreSQL (the
        database adds it to ``now()``), else this process's now and expiry."""
        if self.db_clock:
            return {"b_lease": None if lease_seconds is None else timedelta(seconds=lease_seconds)}
        now = datetime.now(_UTC)
        expires = None if lease_seconds is None else now + timedelta(seconds=lease_seconds)
        return {"b_now": now, "b_expires": expires}

    def _checkpoint_params(self, checkpoint: Checkpoint) -> dict[str, Any]:
        terminal = checkpoint.status in _TERMINAL_STATUSES
        lease = None if terminal else checkpoint.lease_seconds
        params = self._clock(lease)
        params.update(
            b_id=checkpoint.saga_id,
            b_expected=checkpoint.expected_version,
            b_status=checkpoint.status.value,
            b_cursor=checkpoint.cursor,
            b_applied=encode_applied(checkpoint.applied),
            b_context=checkpoint.context,
            b_error=checkpoint.error,
            b_owner=None if lease is None else checkpoint.lease_owner,
            b_next_step=checkpoint.next_step,
            b_journal=encode_journal(checkpoint.journal),
        )
        return params

    def _new_params(self, saga: NewSaga) -> dict[str, Any]:
        params = self._clock(saga.lease_seconds)
        params.update(
            b_id=saga.saga_id,
            b_name=saga.saga_name,
            b_context=saga.context,
            b_owner=saga.lease_owner,
            b_next_step=saga.next_step,
            b_journal=encode_journal(saga.journal),
        )
        return params

    # --- writes ------------------------------------------------------------------------------

    def write_batch(
        self, connection: Connection, commit: Commit, writes: Sequence[Write]
    ) -> list[SagaError | None]:
        """Apply creates and checkpoints in one transaction; return each one's refusal.

        A refused write (id taken, version moved on, saga finished or unknown) writes nothing
        and does not disturb the others. The transaction commits when any write succeeded.
        """
        outcomes: list[SagaError | None] = [None] * len(writes)
        refused: dict[UUID, int] = {}
        for index, write in enumerate(writes):
            if isinstance(write, Checkpoint):
                result = connection.execute(self._update, self._checkpoint_params(write))
                if result.rowcount != 1:
                    refused[write.saga_id] = index
            elif not self._insert_new(connection, write):
                outcomes[index] = SagaAlreadyExistsError(
                    f"saga {write.saga_id} already exists; start the saga with a new id, "
                    f"or recover the existing one"
                )
        if refused:
            found = {
                row[0]: row for row in connection.execute(self._diagnose, {"b_ids": list(refused)})
            }
            for saga_id, index in refused.items():
                write = writes[index]
                assert isinstance(write, Checkpoint)
                outcomes[index] = _checkpoint_refusal(write, found.get(saga_id))
        if any(outcome is None for outcome in outcomes):
            commit()
        return outcomes

    def _insert_new(self, connection: Connection, saga: NewSaga) -> bool:
        params = self._new_params(saga)
        if self._insert_on_conflict:
            return connection.execute(self._insert_saga, params).first() is not None
        savepoint = connection.begin_nested()
        try:
            connection.execute(self._insert_saga, params)
        except sa.exc.IntegrityError:
            savepoint.rollback()
            return False
        savepoint.commit()
        return True

    def claim(
        self,
        connection: Connection,
        commit: Commit,
        saga_id: UUID,
        owner: str,
        lease_seconds: float,
    ) -> SagaRecord:
        """Lease one saga to ``owner`` (see ``SagaStorage.claim``)."""
        params = self._clock(lease_seconds)
        params.update(b_id=saga_id, b_owner=owner)
        result = connection.execute(self._claim, params)
        row: Any
        if self.update_returning:
            row = result.first()
        else:
            row = None
            if result.rowcount == 1:
                row = connection.execute(self._load, {"b_id": saga_id}).first()
        if row is None:
            found = connection.execute(self._diagnose, {"b_ids": [saga_id]}).first()
            raise _claim_refusal(saga_id, found)
        record = record_from_row(row)
        commit()
        return record

    def claim_recoverable(
        self,
        connection: Connection,
        commit: Commit,
        owner: str,
        lease_seconds: float,
        limit: int,
    ) -> list[SagaRecord]:
        """Claim up to ``limit`` recoverable sagas, oldest update first; concurrent callers
        never get the same saga (row locks skipped on PostgreSQL, one writer on SQLite).

        The chosen rows are read (and locked) first: a row that cannot be decoded is parked
        in the same transaction, with the decode error as the reason (so no claim meets it
        again until an operator repairs and unparks it), and only the others are claimed.
        """
        if limit <= 0:
            return []
        if self.is_sqlite:
            _begin_immediate(connection)
        params = self._clock(lease_seconds)
        params["b_owner"] = owner
        chosen = (
            sa.select(*self._record_columns)
            .where(self._recoverable)
            .order_by(*self._recoverable_order)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        read = read_records(connection.execute(chosen, params), record_from_row)
        if read.corrupt:
            self._park_damaged(connection, read.corrupt)
        records = read.records
        if records:
            records = self._lease_to(connection, records, owner, params)
        if records or read.corrupt:
            commit()
        return records

    def _lease_to(
        self,
        connection: Connection,
        records: list[SagaRecord],
        owner: str,
        params: dict[str, Any],
    ) -> list[SagaRecord]:
        """Lease the (locked) sagas of ``records`` to ``owner``; return them as claimed."""
        ids = [record.saga_id for record in records]
        if not self.update_returning:
            connection.execute(self._claim_many, {**params, "b_ids": ids})
            rows = {row[0]: row for row in connection.execute(self._load_many, {"b_ids": ids})}
            return [record_from_row(rows[saga_id]) for saga_id in ids]
        claimed = {
            row[0]: row
            for row in connection.execute(self._claim_many_returning, {**params, "b_ids": ids})
        }
        result = []
        for record in records:
            _, version, attempts, updated_at, expires = claimed[record.saga_id]
            result.append(
                record._replace(
                    version=version,
                    attempts=attempts,
                    updated_at=updated_at,
                    lease_owner=owner,
                    lease_expires_at=expires,
                )
            )
        return result

    def _park_damaged(
        self, connection: Connection, errors: Sequence[StorageCorruptedError]
    ) -> None:
        """Park the (locked) sagas whose rows could not be decoded, each with its error as the
        reason, as :meth:`park` does: parked, no lease, a new version."""
        params = self._clock(None)
        for error in errors:
            if error.saga_id is None:  # not this storage's decode errors: they name the saga
                continue
            connection.execute(
                self._park_damaged_row,
                {**params, "b_id": error.saga_id, "b_reason": describe_error(error)},
            )

    def renew_lease(
        self,
        connection: Connection,
        commit: Commit,
        saga_id: UUID,
        owner: str,
        lease_seconds: float,
    ) -> None:
        """Extend ``owner``'s lease; nothing else changes (see ``SagaStorage.renew_lease``)."""
        params = self._clock(lease_seconds)
        params.update(b_id=saga_id, b_owner=owner)
        if not self._matched(connection.execute(self._renew, params)):
            raise self._not_owned(connection, saga_id, owner, "renew its lease")
        commit()

    def park(
        self, connection: Connection, commit: Commit, saga_id: UUID, owner: str, reason: str
    ) -> None:
        """Move a saga leased to ``owner`` to the dead-letter state (``SagaStorage.park``)."""
        params = self._clock(None)
        params.update(b_id=saga_id, b_owner=owner, b_reason=reason)
        if not self._matched(connection.execute(self._park, params)):
            raise self._not_owned(connection, saga_id, owner, "park it")
        commit()

    def unpark(self, connection: Connection, commit: Commit, saga_id: UUID) -> SagaRecord:
        """Take a parked saga out of the dead-letter state and return its record; return the
        record of a saga that is not parked unchanged (``SagaStorage.unpark``)."""
        params = self._clock(None)
        params["b_id"] = saga_id
        result = connection.execute(self._unpark, params)
        row: Any = None
        if self.update_returning:
            row = result.first()
        updated = row is not None or (not self.update_returning and result.rowcount == 1)
        if row is None:
            row = connection.execute(self._load, {"b_id": saga_id}).first()
            if row is None:
                raise _not_found(saga_id)
        record = record_from_row(row)
        if updated:
            commit()
        return record

    def _not_owned(
        self, connection: Connection, saga_id: UUID, owner: str, action: str
    ) -> SagaError:
        """Why a write of the lease's owner matched nothing."""
        found = connection.execute(self._diagnose, {"b_ids": [saga_id]}).first()
        if found is None:
            return _not_found(saga_id)
        status, held_by = found[1], found[3]
        if status in _TERMINAL:
            return SagaFinishedError(
                f"saga {saga_id} is {status}, a final state that is never written again"
            )
        holder = "it holds no lease" if held_by is None else f"its lease is {held_by!r}'s"
        return SagaLeaseHeldError(
            f"saga {saga_id} is not leased to {owner!r} ({holder}), so {owner!r} cannot "
            f"{action}: it was taken over or released; stop without writing"
        )

    # --- reads -------------------------------------------------------------------------------

    def load(self, connection: Connection, commit: Commit, saga_id: UUID) -> SagaRecord:
        row = connection.execute(self._load, {"b_id": saga_id}).first()
        if row is None:
            raise _not_found(saga_id)
        return record_from_row(row)

    def history(self, connection: Connection, commit: Commit, saga_id: UUID) -> list[JournalEntry]:
        row = connection.execute(self._history, {"b_id": saga_id}).first()
        if row is None:
            raise _not_found(saga_id)
        return decode_journal(saga_id, row[0])

    def list_recoverable(
        self, connection: Connection, commit: Commit, limit: int
    ) -> list[SagaRecord]:
        if limit <= 0:
            return []
        query = (
            sa.select(*self._record_columns)
            .where(self._recoverable)
            .order_by(*self._recoverable_order)
            .limit(limit)
        )
        return read_records(connection.execute(query, self._clock(None)), record_from_row).records

    def list_sagas(
        self,
        connection: Connection,
        commit: Commit,
        status: SagaStatus | None,
        saga_name: str | None,
        parked: bool | None,
        updated_before: datetime | None,
        limit: int,
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas matching every filter given, oldest update first."""
        if limit <= 0:
            return []
        c = self.tables.saga.c
        query = sa.select(*self._record_columns)
        if status is not None:
            query = query.where(c.status == status.value)
        if saga_name is not None:
            query = query.where(c.saga_name == saga_name)
        if parked is not None:
            query = query.where(c.parked == (sa.true() if parked else sa.false()))
        if updated_before is not None:
            query = query.where(c.updated_at < updated_before)
        query = query.order_by(*self._recoverable_order).limit(limit)
        return read_records(connection.execute(query), record_from_row).records

    def check_schema(self, connection: Connection, commit: Commit) -> None:
        for probe in schema_probes(self.tables):
            connection.execute(probe).all()


def _begin_immediate(connection: Connection) -> None:
    """Take SQLite's write lock before reading, so the read and the write that follows see one
    state (a deferred transaction would fail with SQLITE_BUSY on the upgrade instead)."""
    driver = connection.connection.driver_connection
    if not getattr(driver, "in_transaction", False):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _not_found(saga_id: UUID) -> SagaNotFoundError:
    return SagaNotFoundError(f"no saga with id {saga_id} in storage")


def _checkpoint_refusal(checkpoint: Checkpoint, found: Any) -> SagaError:
    saga_id = checkpoint.saga_id
    if found is None:
        return _not_found(saga_id)
    status, version = found[1], found[2]
    if status in _TERMINAL:
        return SagaFinishedError(
            f"saga {saga_id} is {status}, a final state that is never written again"
        )
    return SagaVersionConflictError(
        f"saga {saga_id} is at version {version}, not the expected "
        f"{checkpoint.expected_version}: another runner wrote it; stop without writing"
    )


def _claim_refusal(saga_id: UUID, found: Any) -> SagaError:
    if found is None:
        return _not_found(saga_id)
    status, owner, expires, parked, error = found[1], found[3], found[4], found[5], found[6]
    if status in _TERMINAL:
        return SagaFinishedError(
            f"saga {saga_id} is {status}, a final state that is never written again"
        )
    if parked:
        return SagaParkedError(
            f"saga {saga_id} is parked in the dead-letter state ({error}); unpark it to let "
            f"recovery try again"
        )
    if owner is not None:
        until = f" until {expires.isoformat()}" if isinstance(expires, datetime) else ""
        return SagaLeaseHeldError(
            f"saga {saga_id} is leased to {owner!r}{until}; it is not stalled, leave it to "
            f"its owner"
        )
    return SagaVersionConflictError(f"saga {saga_id} changed while it was being claimed; retry")
