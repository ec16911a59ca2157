"""Turning stored rows into saga-core records, and refusing rows that cannot be read back."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from saga_core import SagaRecord, SagaStatus, StorageCorruptedError
from saga_core.storage import PendingSignal

#: The columns of the saga table in the order :func:`record_from_row` reads them.
RECORD_COLUMNS = (
    "saga_id",
    "saga_name",
    "saga_version",
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
    "wake_at",
    "waiting_for",
    "deadline_at",
    "cancel_reason",
    "parent_id",
)

#: The columns of the signals table :func:`signal_from_row` reads, after ``saga_id``.
SIGNAL_COLUMNS = ("saga_id", "signal_id", "name", "payload", "delivered_at")

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
        StorageCorruptedError: (``saga_id`` set) the status is unknown, ``applied`` is not a
            JSON array of strings, the context is not valid JSON (or is nested too deeply to
            parse), a timestamp is not one, or a counter is not an integer.
    """
    (
        saga_id,
        name,
        saga_version,
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
        wake_at,
        waiting_for,
        deadline_at,
        cancel_reason,
        parent_id,
    ) = row
    record_id = _uuid(saga_id)
    where = f"stored saga {saga_id}"
    try:
        status_value = _STATUSES[status]
    except (KeyError, TypeError):
        raise _corrupted(record_id, f"{where} has an unknown status {status!r}") from None
    try:
        steps = json.loads(applied)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _corrupted(
            record_id, f"{where}: its applied step ids are not valid JSON ({_reason(exc)})"
        ) from exc
    if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
        raise _corrupted(record_id, f"{where}: its applied step ids are not a list of strings")
    check_context(record_id, context)
    try:
        numbers = (int(version), int(cursor), int(attempts), int(saga_version))
    except (TypeError, ValueError) as exc:
        raise _corrupted(record_id, f"{where} has a counter that is not an integer") from exc
    return SagaRecord(
        saga_id=record_id,
        saga_name=name,
        status=status_value,
        version=numbers[0],
        cursor=numbers[1],
        applied=tuple(steps),
        context=context,
        error=error,
        created_at=_when(created, record_id, "created_at"),
        updated_at=_when(updated, record_id, "updated_at"),
        lease_owner=owner,
        lease_expires_at=None if expires is None else _when(expires, record_id, "lease_expires_at"),
        next_step=next_step,
        attempts=numbers[2],
        parked=bool(parked),
        saga_version=numbers[3],
        wake_at=None if wake_at is None else _when(wake_at, record_id, "wake_at"),
        waiting_for=waiting_for,
        deadline_at=None if deadline_at is None else _when(deadline_at, record_id, "deadline_at"),
        cancel_reason=cancel_reason,
        parent_id=None if parent_id is None else _uuid(parent_id),
    )


def signal_from_row(row: Sequence[Any]) -> PendingSignal:
    """A :class:`PendingSignal` from a row of :data:`SIGNAL_COLUMNS`.

    Raises:
        StorageCorruptedError: (``saga_id`` set) its ``delivered_at`` is not a timestamp.
    """
    saga_id, signal_id, name, payload, delivered_at = row
    record_id = _uuid(saga_id)
    return PendingSignal(
        signal_id, name, payload, _when(delivered_at, record_id, f"signal {signal_id!r}")
    )


def check_context(saga_id: UUID, context: object) -> None:
    """Raise StorageCorruptedError (naming ``saga_id``) unless ``context`` is valid JSON text
    that a parser can read (JSON nested deeper than Python's recursion limit cannot be)."""
    if not isinstance(context, str):
        raise _corrupted(saga_id, f"stored saga {saga_id}: its context is not text")
    try:
        json.loads(context)
    except (ValueError, RecursionError) as exc:
        raise _corrupted(
            saga_id,
            f"stored saga {saga_id}: its context is not valid JSON ({_reason(exc)}); the row was "
            f"changed outside saga-core, restore it from a backup or fix it by hand",
        ) from exc


def _corrupted(saga_id: UUID, message: str) -> StorageCorruptedError:
    return StorageCorruptedError(message, saga_id=saga_id)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to parse"
    return str(exc)


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _when(value: object, saga_id: UUID, column: str) -> datetime:
    if not isinstance(value, datetime):
        raise _corrupted(
            saga_id, f"stored saga {saga_id}: its {column} is not a timestamp: {value!r:.100}"
        )
    return value
