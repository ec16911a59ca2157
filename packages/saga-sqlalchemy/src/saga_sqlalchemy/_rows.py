"""Turning stored rows into saga-core records, and refusing rows that cannot be read back."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from saga_core import SagaRecord, SagaStatus, StorageCorruptedError

#: The columns of the saga table in the order :func:`record_from_row` reads them.
RECORD_COLUMNS = (
    "saga_id",
    "saga_name",
    "status",
    "version",
    "cursor",
    "applied",
    "context",
    "error",
    "created_at",
    "updated_at",
    "lease_owner",
    "lease_expires_at",
    "next_step",
    "attempts",
    "parked",
)

_STATUSES = {status.value: status for status in SagaStatus}


def encode_applied(applied: Sequence[str]) -> str:
    """The stored form of a checkpoint's applied step ids: a JSON array."""
    if type(applied) is tuple:
        return _encode_applied_tuple(applied)
    return json.dumps(list(applied), ensure_ascii=False)


# A saga's applied ids are always a prefix of its steps (plus fallback branches): a small set
# of tuples in a process, each encoded once instead of at every checkpoint.
@functools.lru_cache(maxsize=4096)
def _encode_applied_tuple(applied: tuple[str, ...]) -> str:
    return json.dumps(list(applied), ensure_ascii=False)


def record_from_row(row: Sequence[Any]) -> SagaRecord:
    """Build a :class:`SagaRecord` from a row of :data:`RECORD_COLUMNS`.

    Raises:
        StorageCorruptedError: the status is unknown, ``applied`` is not a JSON array of
            strings, or the context is not valid JSON.
    """
    (
        saga_id,
        name,
        status,
        version,
        cursor,
        applied,
        context,
        error,
        created,
        updated,
        owner,
        expires,
        next_step,
        attempts,
        parked,
    ) = row
    where = f"stored saga {saga_id}"
    try:
        status_value = _STATUSES[status]
    except KeyError:
        raise StorageCorruptedError(f"{where} has an unknown status {status!r}") from None
    try:
        steps = json.loads(applied)
    except (TypeError, ValueError) as exc:
        raise StorageCorruptedError(f"{where}: its applied step ids are not valid JSON") from exc
    if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
        raise StorageCorruptedError(f"{where}: its applied step ids are not a list of strings")
    check_context(saga_id, context)
    return SagaRecord(
        saga_id=_uuid(saga_id),
        saga_name=name,
        status=status_value,
        version=int(version),
        cursor=int(cursor),
        applied=tuple(steps),
        context=context,
        error=error,
        created_at=_when(created, where),
        updated_at=_when(updated, where),
        lease_owner=owner,
        lease_expires_at=None if expires is None else _when(expires, where),
        next_step=next_step,
        attempts=int(attempts),
        parked=bool(parked),
    )


def check_context(saga_id: object, context: object) -> None:
    """Raise StorageCorruptedError unless ``context`` is valid JSON text."""
    if not isinstance(context, str):
        raise StorageCorruptedError(f"stored saga {saga_id}: its context is not text")
    try:
        json.loads(context)
    except ValueError as exc:
        raise StorageCorruptedError(
            f"stored saga {saga_id}: its context is not valid JSON ({exc}); the row was changed "
            f"outside saga-core, restore it from a backup or fix it by hand"
        ) from exc


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _when(value: object, where: str) -> datetime:
    if not isinstance(value, datetime):
        raise StorageCorruptedError(f"{where} has a timestamp that is not one: {value!r}")
    return value
