"""PostgreSQL: a whole batch of creates and checkpoints in ONE statement (one round trip).

The statement takes every write as arrays (``unnest``), inserts the new sagas
(``ON CONFLICT DO NOTHING``), applies the checkpoints as one compare-and-set ``UPDATE ... FROM``,
appends the journal rows of the writes that succeeded, and returns, for each refused write, the
stored status and version it was refused on, all in one statement. Run outside an explicit
transaction, it is its own transaction: a checkpoint costs one round trip and one commit, and a
group-commit batch of a hundred sagas costs the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from saga_core import (
    Checkpoint,
    NewSaga,
    SagaAlreadyExistsError,
    SagaError,
    SagaFinishedError,
    SagaNotFoundError,
    SagaVersionConflictError,
)

from ._operations import Commit, Write
from ._rows import encode_applied
from ._schema import SagaTables

_TERMINAL_VALUES = ("completed", "compensated")

#: The middle of both batch statements (this module's and the asyncpg one's): create the new
#: sagas, apply the compare-and-set checkpoints, and name what was written (for the journal).
#: Their inputs come in CTEs ``new_sagas`` and ``changes``, however each driver sends them.
BATCH_WRITES = """), inserted AS (
    INSERT INTO {saga} (saga_id, saga_name, status, version, "cursor", applied, context, error,
                        created_at, updated_at, lease_owner, lease_expires_at, next_step)
    SELECT n.saga_id, n.saga_name, 'running', 1, 0, '[]', n.context, NULL, now(), now(),
           n.owner, now() + make_interval(secs => n.lease), n.next_step
    FROM new_sagas AS n
    ON CONFLICT (saga_id) DO NOTHING
    RETURNING saga_id, version
), updated AS (
    UPDATE {saga} AS s
    SET status = c.status, version = s.version + 1, "cursor" = c."cursor",
        applied = c.applied, context = c.context, error = c.error, updated_at = now(),
        lease_owner = c.owner, lease_expires_at = now() + make_interval(secs => c.lease),
        next_step = c.next_step
    FROM changes AS c
    WHERE s.saga_id = c.saga_id AND s.version = c.expected
      AND s.status NOT IN ('completed', 'compensated')
    RETURNING s.saga_id, s.version
), written AS (
    SELECT saga_id, version FROM inserted UNION ALL SELECT saga_id, version FROM updated
"""

_TEMPLATE = (
    """
WITH new_sagas AS (
    SELECT * FROM unnest(
        CAST(:n_id AS uuid[]), CAST(:n_name AS text[]), CAST(:n_context AS text[]),
        CAST(:n_owner AS text[]), CAST(:n_lease AS float8[]), CAST(:n_next_step AS text[])
    ) AS n(saga_id, saga_name, context, owner, lease, next_step)
), changes AS (
    SELECT * FROM unnest(
        CAST(:c_id AS uuid[]), CAST(:c_expected AS int[]), CAST(:c_status AS text[]),
        CAST(:c_cursor AS int[]), CAST(:c_applied AS text[]), CAST(:c_context AS text[]),
        CAST(:c_error AS text[]), CAST(:c_owner AS text[]), CAST(:c_lease AS float8[]),
        CAST(:c_next_step AS text[])
    ) AS c(saga_id, expected, status, "cursor", applied, context, error, owner, lease,
           next_step)
"""
    + BATCH_WRITES
    + """), journal AS (
    INSERT INTO {journal} (saga_id, version, position, step_id, direction, event, attempt, at,
                           error)
    SELECT e.saga_id, w.version, e.position, e.step_id, e.direction, e.event, e.attempt, e.at,
           e.error
    FROM unnest(
        CAST(:j_id AS uuid[]), CAST(:j_position AS int[]), CAST(:j_step AS text[]),
        CAST(:j_direction AS text[]), CAST(:j_event AS text[]), CAST(:j_attempt AS int[]),
        CAST(:j_at AS timestamptz[]), CAST(:j_error AS text[])
    ) AS e(saga_id, position, step_id, direction, event, attempt, at, error)
    JOIN written AS w ON w.saga_id = e.saga_id
)
SELECT w.saga_id, TRUE, NULL, NULL FROM written AS w
UNION ALL
SELECT s.saga_id, FALSE, s.status, s.version FROM {saga} AS s
WHERE s.saga_id IN (SELECT saga_id FROM changes)
  AND s.saga_id NOT IN (SELECT saga_id FROM updated)
"""
)

# One write alone (the common case when sagas run one at a time): simpler statements that
# PostgreSQL plans faster. A refused checkpoint returns no row and is diagnosed afterwards.
_JOURNAL_ONE = """
j AS (
    INSERT INTO {journal} (saga_id, version, position, step_id, direction, event, attempt, at,
                           error)
    SELECT w.saga_id, w.version, e.position, e.step_id, e.direction, e.event, e.attempt, e.at,
           e.error
    FROM w, unnest(
        CAST(:j_position AS int[]), CAST(:j_step AS text[]), CAST(:j_direction AS text[]),
        CAST(:j_event AS text[]), CAST(:j_attempt AS int[]), CAST(:j_at AS timestamptz[]),
        CAST(:j_error AS text[])
    ) AS e(position, step_id, direction, event, attempt, at, error)
)
SELECT w.version FROM w
"""
_CHECKPOINT_ONE = (
    """
WITH w AS (
    UPDATE {saga}
    SET status = :c_status, version = version + 1, "cursor" = :c_cursor, applied = :c_applied,
        context = :c_context, error = :c_error, updated_at = now(), lease_owner = :c_owner,
        lease_expires_at = now() + make_interval(secs => CAST(:c_lease AS float8)),
        next_step = :c_next_step
    WHERE saga_id = :c_id AND version = :c_expected
      AND status NOT IN ('completed', 'compensated')
    RETURNING saga_id, version
), """
    + _JOURNAL_ONE
)
_CREATE_ONE = (
    """
WITH w AS (
    INSERT INTO {saga} (saga_id, saga_name, status, version, "cursor", applied, context, error,
                        created_at, updated_at, lease_owner, lease_expires_at, next_step)
    VALUES (:n_id, :n_name, 'running', 1, 0, '[]', :n_context, NULL, now(), now(), :n_owner,
            now() + make_interval(secs => CAST(:n_lease AS float8)), :n_next_step)
    ON CONFLICT (saga_id) DO NOTHING
    RETURNING saga_id, version
), """
    + _JOURNAL_ONE
)
_DIAGNOSE_ONE = "SELECT status, version FROM {saga} WHERE saga_id = :c_id"

_JOURNAL_ONE_ARRAYS = (
    "j_position",
    "j_step",
    "j_direction",
    "j_event",
    "j_attempt",
    "j_at",
    "j_error",
)
_ARRAYS = (
    "n_id",
    "n_name",
    "n_context",
    "n_owner",
    "n_lease",
    "n_next_step",
    "c_id",
    "c_expected",
    "c_status",
    "c_cursor",
    "c_applied",
    "c_context",
    "c_error",
    "c_owner",
    "c_lease",
    "c_next_step",
    "j_id",
    "j_position",
    "j_step",
    "j_direction",
    "j_event",
    "j_attempt",
    "j_at",
    "j_error",
)


class PostgresBatch:
    """The one-statement writes of one storage's tables."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.format_table
        names = {"saga": quote(tables.saga), "journal": quote(tables.journal)}
        self.text = sa.text(_TEMPLATE.format(**names))
        self.checkpoint_one = sa.text(_CHECKPOINT_ONE.format(**names))
        self.create_one = sa.text(_CREATE_ONE.format(**names))
        self.diagnose_one = sa.text(_DIAGNOSE_ONE.format(**names))

    def statement_for(self, writes: Sequence[Write]) -> sa.TextClause:
        """The statement that writes ``writes``: a single-write one for one write."""
        if len(writes) != 1:
            return self.text
        return self.create_one if isinstance(writes[0], NewSaga) else self.checkpoint_one

    def parameters_for(self, writes: Sequence[Write]) -> dict[str, Any]:
        """The parameters of :meth:`statement_for`."""
        if len(writes) != 1:
            return self.parameters(writes)
        (write,) = writes
        p: dict[str, Any] = {name: [] for name in _JOURNAL_ONE_ARRAYS}
        if isinstance(write, Checkpoint):
            terminal = write.status.is_terminal
            lease = None if terminal else write.lease_seconds
            p.update(
                c_id=write.saga_id,
                c_expected=write.expected_version,
                c_status=write.status.value,
                c_cursor=write.cursor,
                c_applied=encode_applied(write.applied),
                c_context=write.context,
                c_error=write.error,
                c_owner=None if lease is None else write.lease_owner,
                c_lease=None if lease is None else float(lease),
                c_next_step=write.next_step,
            )
        else:
            p.update(
                n_id=write.saga_id,
                n_name=write.saga_name,
                n_context=write.context,
                n_owner=write.lease_owner,
                n_lease=float(write.lease_seconds),
                n_next_step=write.next_step,
            )
        for position, entry in enumerate(write.journal):
            p["j_position"].append(position)
            p["j_step"].append(entry.step_id)
            p["j_direction"].append(entry.direction.value)
            p["j_event"].append(entry.event.value)
            p["j_attempt"].append(entry.attempt)
            p["j_at"].append(entry.at)
            p["j_error"].append(entry.error)
        return p

    def single_outcome(self, write: Write, written: bool, found: Any) -> SagaError | None:
        """The refusal of a single write from its statement's result and, when it wrote
        nothing, the stored ``(status, version)`` (None when there is no such saga)."""
        if written:
            return None
        return refusal(write, None if found is None else (found[0], found[1]))

    @staticmethod
    def parameters(writes: Sequence[Write]) -> dict[str, list[Any]]:
        """The statement's array parameters for ``writes`` (at most one write per saga)."""
        p: dict[str, list[Any]] = {name: [] for name in _ARRAYS}
        for write in writes:
            if isinstance(write, Checkpoint):
                terminal = write.status.is_terminal
                lease = None if terminal else write.lease_seconds
                p["c_id"].append(write.saga_id)
                p["c_expected"].append(write.expected_version)
                p["c_status"].append(write.status.value)
                p["c_cursor"].append(write.cursor)
                p["c_applied"].append(encode_applied(write.applied))
                p["c_context"].append(write.context)
                p["c_error"].append(write.error)
                p["c_owner"].append(None if lease is None else write.lease_owner)
                p["c_lease"].append(None if lease is None else float(lease))
                p["c_next_step"].append(write.next_step)
            else:
                p["n_id"].append(write.saga_id)
                p["n_name"].append(write.saga_name)
                p["n_context"].append(write.context)
                p["n_owner"].append(write.lease_owner)
                p["n_lease"].append(float(write.lease_seconds))
                p["n_next_step"].append(write.next_step)
            for position, entry in enumerate(write.journal):
                p["j_id"].append(write.saga_id)
                p["j_position"].append(position)
                p["j_step"].append(entry.step_id)
                p["j_direction"].append(entry.direction.value)
                p["j_event"].append(entry.event.value)
                p["j_attempt"].append(entry.attempt)
                p["j_at"].append(entry.at)
                p["j_error"].append(entry.error)
        return p

    @staticmethod
    def outcomes(writes: Sequence[Write], rows: Sequence[Sequence[Any]]) -> list[SagaError | None]:
        """Each write's refusal (None when it was written) from the statement's rows."""
        written: set[UUID] = set()
        refused: dict[UUID, tuple[str, int]] = {}
        for saga_id, ok, status, version in rows:
            if ok:
                written.add(saga_id)
            else:
                refused[saga_id] = (status, version)
        return [
            None if write.saga_id in written else refusal(write, refused.get(write.saga_id))
            for write in writes
        ]

    def write_batch(
        self, connection: Connection, commit: Commit, writes: Sequence[Write]
    ) -> list[SagaError | None]:
        """Run the writes through SQLAlchemy (any PostgreSQL driver), then commit."""
        statement = self.statement_for(writes)
        rows = connection.execute(statement, self.parameters_for(writes)).all()
        if len(writes) == 1:
            found = None
            if not rows and isinstance(writes[0], Checkpoint):
                found = connection.execute(self.diagnose_one, {"c_id": writes[0].saga_id}).first()
            outcomes = [self.single_outcome(writes[0], bool(rows), found)]
        else:
            outcomes = self.outcomes(writes, [tuple(row) for row in rows])
        if any(outcome is None for outcome in outcomes):
            commit()
        return outcomes


def refusal(write: Write, found: tuple[str, int] | None) -> SagaError:
    saga_id = write.saga_id
    if isinstance(write, NewSaga):
        return SagaAlreadyExistsError(
            f"saga {saga_id} already exists; start the saga with a new id, or recover the "
            f"existing one"
        )
    if found is None:
        return SagaNotFoundError(f"no saga with id {saga_id} in storage")
    status, version = found
    if status in _TERMINAL_VALUES:
        return SagaFinishedError(
            f"saga {saga_id} is {status}, a final state that is never written again"
        )
    return SagaVersionConflictError(
        f"saga {saga_id} is at version {version}, not the expected {write.expected_version}: "
        f"another runner wrote it; stop without writing"
    )
