"""PostgreSQL through asyncpg's own connection: the writes as asyncpg takes them.

Same statements as ``_postgres`` (one statement per write or per group-commit batch, its own
transaction, one round trip), with parameters built for asyncpg's binary protocol at the
lowest Python cost:

* a single write sends scalars only: its journal entries are a ``VALUES`` list of the write's
  own size (one prepared statement per entry count, up to :data:`MAX_VALUES_ENTRIES`), so no
  array is encoded (asyncpg checks every element of an array parameter);
* a batch sends three JSON texts (creates, checkpoints, journal entries), read back with
  ``json_to_recordset``: one ``json.dumps`` instead of 24 arrays of up to a hundred elements.

Text round-trips exactly through JSON (contexts stay byte for byte); journal times travel as
ISO 8601 with their offset, to the microsecond.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Dialect

from saga_core import Checkpoint, SagaError, SagaStatus

from ._operations import Write
from ._postgres import BATCH_WRITES, PostgresBatch, refusal
from ._rows import encode_applied
from ._schema import SagaTables

_TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})

#: Journal entries of a single write sent as scalars; a write with more goes as a batch.
MAX_VALUES_ENTRIES = 8

_JOURNAL_COLUMNS = "saga_id, version, position, step_id, direction, event, attempt, at, error"

_CHECKPOINT = """
WITH w AS (
    UPDATE {saga}
    SET status = $1, version = version + 1, "cursor" = $2, applied = $3, context = $4,
        error = $5, updated_at = now(), lease_owner = $6,
        lease_expires_at = now() + make_interval(secs => $7::float8), next_step = $10
    WHERE saga_id = $8 AND version = $9 AND status NOT IN ('completed', 'compensated')
    RETURNING saga_id, version
){journal_cte}
SELECT w.version FROM w
"""
_CHECKPOINT_ARGS = 10

_CREATE = """
WITH w AS (
    INSERT INTO {saga} (saga_id, saga_name, status, version, "cursor", applied, context, error,
                        created_at, updated_at, lease_owner, lease_expires_at, next_step)
    VALUES ($1, $2, 'running', 1, 0, '[]', $3, NULL, now(), now(), $4,
            now() + make_interval(secs => $5::float8), $6)
    ON CONFLICT (saga_id) DO NOTHING
    RETURNING saga_id, version
){journal_cte}
SELECT w.version FROM w
"""
_CREATE_ARGS = 6

_JOURNAL = """, j AS (
    INSERT INTO {journal} ({columns})
    SELECT w.saga_id, w.version, e.position, e.step_id, e.direction, e.event, e.attempt, e.at,
           e.error
    FROM w, (VALUES {rows}) AS e(position, step_id, direction, event, attempt, at, error)
)"""

_BATCH = (
    """
WITH new_sagas AS (
    SELECT * FROM json_to_recordset($1::json)
        AS n(saga_id uuid, saga_name text, context text, owner text, lease float8,
             next_step text)
), changes AS (
    SELECT * FROM json_to_recordset($2::json)
        AS c(saga_id uuid, expected int, status text, "cursor" int, applied text,
             context text, error text, owner text, lease float8, next_step text)
"""
    + BATCH_WRITES
    + """), journal AS (
    INSERT INTO {journal} ({columns})
    SELECT e.saga_id, w.version, e.position, e.step_id, e.direction, e.event, e.attempt, e.at,
           e.error
    FROM json_to_recordset($3::json)
        AS e(saga_id uuid, position int, step_id text, direction text, event text,
             attempt int, at timestamptz, error text)
    JOIN written AS w ON w.saga_id = e.saga_id
)
SELECT w.saga_id, TRUE, NULL, NULL FROM written AS w
UNION ALL
SELECT c.saga_id, FALSE, s.status, s.version
FROM changes AS c JOIN {saga} AS s ON s.saga_id = c.saga_id
WHERE NOT EXISTS (SELECT FROM updated AS u WHERE u.saga_id = c.saga_id)
"""
)

_DIAGNOSE = "SELECT status, version FROM {saga} WHERE saga_id = $1"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _values(count: int, first: int) -> str:
    rows = []
    for position in range(count):
        n = first + position * 6
        rows.append(
            f"({position}, ${n}::text, ${n + 1}::text, ${n + 2}::text, ${n + 3}::int, "
            f"${n + 4}::timestamptz, ${n + 5}::text)"
        )
    return ", ".join(rows)


class AsyncpgWrites:
    """The SQL of one storage's writes as asyncpg takes it (``$n`` parameters)."""

    def __init__(self, tables: SagaTables, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.format_table
        self._names = {
            "saga": quote(tables.saga),
            "journal": quote(tables.journal),
            "columns": _JOURNAL_COLUMNS,
        }
        self.batch_sql = _BATCH.format(**self._names)
        self.diagnose_sql = _DIAGNOSE.format(**self._names)
        self._checkpoint_sql = [
            self._single(_CHECKPOINT, count, _CHECKPOINT_ARGS + 1)
            for count in range(MAX_VALUES_ENTRIES + 1)
        ]
        self._create_sql = [
            self._single(_CREATE, count, _CREATE_ARGS + 1)
            for count in range(MAX_VALUES_ENTRIES + 1)
        ]

    def _single(self, template: str, count: int, first: int) -> str:
        journal = ""
        if count:
            journal = _JOURNAL.format(rows=_values(count, first), **self._names)
        return template.format(journal_cte=journal, **self._names)

    @staticmethod
    def fits_single(write: Write) -> bool:
        """Whether ``write`` goes as a single-write statement of scalars."""
        return len(write.journal) <= MAX_VALUES_ENTRIES

    def single(self, write: Write) -> tuple[str, list[Any]]:
        """The statement and arguments of one write: it returns one row if it wrote."""
        args: list[Any]
        if isinstance(write, Checkpoint):
            lease = None if write.status in _TERMINAL else write.lease_seconds
            args = [
                write.status.value,
                write.cursor,
                encode_applied(write.applied),
                write.context,
                write.error,
                None if lease is None else write.lease_owner,
                None if lease is None else float(lease),
                write.saga_id,
                write.expected_version,
                write.next_step,
            ]
            sql = self._checkpoint_sql[len(write.journal)]
        else:
            args = [
                write.saga_id,
                write.saga_name,
                write.context,
                write.lease_owner,
                float(write.lease_seconds),
                write.next_step,
            ]
            sql = self._create_sql[len(write.journal)]
        for entry in write.journal:
            args += (
                entry.step_id,
                entry.direction.value,
                entry.event.value,
                entry.attempt,
                entry.at,
                entry.error,
            )
        return sql, args

    @staticmethod
    def batch_args(writes: Sequence[Write]) -> tuple[str, str, str]:
        """The three JSON texts of :attr:`batch_sql` for ``writes`` (at most one per saga)."""
        creates: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        journal: list[dict[str, Any]] = []
        for write in writes:
            saga_id = str(write.saga_id)
            if isinstance(write, Checkpoint):
                lease = None if write.status in _TERMINAL else write.lease_seconds
                changes.append(
                    {
                        "saga_id": saga_id,
                        "expected": write.expected_version,
                        "status": write.status.value,
                        "cursor": write.cursor,
                        "applied": encode_applied(write.applied),
                        "context": write.context,
                        "error": write.error,
                        "owner": None if lease is None else write.lease_owner,
                        "lease": None if lease is None else float(lease),
                        "next_step": write.next_step,
                    }
                )
            else:
                creates.append(
                    {
                        "saga_id": saga_id,
                        "saga_name": write.saga_name,
                        "context": write.context,
                        "owner": write.lease_owner,
                        "lease": float(write.lease_seconds),
                        "next_step": write.next_step,
                    }
                )
            for position, entry in enumerate(write.journal):
                journal.append(
                    {
                        "saga_id": saga_id,
                        "position": position,
                        "step_id": entry.step_id,
                        "direction": entry.direction.value,
                        "event": entry.event.value,
                        "attempt": entry.attempt,
                        "at": entry.at.isoformat(),
                        "error": entry.error,
                    }
                )
        return _dumps(creates), _dumps(changes), _dumps(journal)

    async def write(self, driver: Any, writes: Sequence[Write]) -> list[SagaError | None]:
        """Write ``writes`` on asyncpg's connection ``driver``, outside any transaction (the
        statement is its own transaction); return each write's refusal."""
        if len(writes) == 1 and self.fits_single(writes[0]):
            (write,) = writes
            sql, args = self.single(write)
            if await driver.fetchrow(sql, *args) is not None:
                return [None]
            found = None
            if isinstance(write, Checkpoint):
                found = await driver.fetchrow(self.diagnose_sql, write.saga_id)
            return [refusal(write, None if found is None else (found[0], found[1]))]
        rows = await driver.fetch(self.batch_sql, *self.batch_args(writes))
        return PostgresBatch.outcomes(writes, rows)
