"""Turning records and journal entries into Redis values and back.

A record is a hash of text fields (see the README's key layout); a journal entry is one JSON
object per list element::

    {"step_id": "orders.Reserve", "direction": "act", "event": "failed", "attempt": 2,
     "at": "2026-01-02T03:04:05.678901+00:00", "error": "TimeoutError: stock service"}

Everything read back is checked: a value this storage would not have written raises
:class:`~saga_core.StorageCorruptedError` naming the key, never a bare ``KeyError`` or
``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from saga_core import (
    JournalEntry,
    SagaRecord,
    SagaStatus,
    SagaUsageError,
    StepDirection,
    StepEvent,
    StorageCorruptedError,
)

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_dumps = json.dumps
_STATUSES = {status.value: status for status in SagaStatus}
_DIRECTIONS = {direction.value: direction for direction in StepDirection}
_EVENTS = {event.value: event for event in StepEvent}

# JSON text of step ids seen so far: a process runs few distinct steps, and quoting them is
# most of the cost of encoding an entry. Bounded so that unusual callers cannot grow it.
_QUOTED: dict[str, str] = {}
_QUOTED_MAX = 4096


def _quoted(text: str) -> str:
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = _dumps(text, ensure_ascii=False)
        if len(_QUOTED) < _QUOTED_MAX:
            _QUOTED[text] = quoted
    return quoted


# The second of the last entry encoded (from, to) and its ISO 8601 text without the fraction:
# entries come in bursts within a second, and datetime.isoformat costs more than the rest of
# an entry. One tuple, replaced whole.
_ONE_SECOND = timedelta(seconds=1)
_last_second: tuple[datetime, datetime, str] = (_EPOCH, _EPOCH, "")


def encode_entry(entry: JournalEntry) -> str:
    """Return ``entry`` as the JSON object stored in the journal list.

    Raises:
        SagaUsageError: ``entry.at`` is a naive datetime (its time zone would be a guess).
    """
    at = entry.at
    tz = at.tzinfo
    if tz is not _UTC:
        if tz is None or at.utcoffset() is None:
            raise SagaUsageError(
                f"journal entry of step {entry.step_id!r} has a naive 'at' ({at!r}); give it a "
                f"time zone, e.g. datetime.now(timezone.utc)"
            )
        at = at.astimezone(_UTC)
    # ISO 8601 in UTC with microseconds, as at.isoformat(timespec="microseconds") writes it.
    last = _last_second
    if not last[0] <= at < last[1]:
        last = _second_of(at)
    error = entry.error
    step_id = entry.step_id
    # `_value_` is the member's value as a plain attribute; `.value` is a property, slower.
    return (
        f'{{"step_id":{_QUOTED.get(step_id) or _quoted(step_id)},'
        f'"direction":"{entry.direction._value_}","event":"{entry.event._value_}",'
        f'"attempt":{int(entry.attempt)},"at":"{last[2]}.{str(1_000_000 + at.microsecond)[1:]}'
        f'+00:00","error":{"null" if error is None else _dumps(error, ensure_ascii=False)}}}'
    )


def _second_of(at: datetime) -> tuple[datetime, datetime, str]:
    global _last_second
    start = at.replace(microsecond=0)
    try:
        end = start + _ONE_SECOND
    except OverflowError:  # the last second a datetime has: matched by no time, never kept
        end = start
    _last_second = last = (start, end, start.replace(tzinfo=None).isoformat())
    return last


# JSON arrays of the applied step ids seen so far: a saga definition has few distinct ones.
_APPLIED: dict[tuple[str, ...], str] = {}


def encode_applied(applied: Sequence[str]) -> str:
    """Return the applied step ids as a JSON array."""
    if type(applied) is tuple:
        text = _APPLIED.get(applied)
        if text is None:
            text = _applied_text(applied)
            if len(_APPLIED) < _QUOTED_MAX:
                _APPLIED[applied] = text
        return text
    return _applied_text(applied)


def _applied_text(applied: Sequence[str]) -> str:
    if not applied:
        return "[]"
    return f"[{','.join(_quoted(step_id) for step_id in applied)}]"


def micros_to_datetime(micros: int) -> datetime:
    """Return the aware UTC datetime ``micros`` microseconds after the epoch, exactly."""
    return _EPOCH + timedelta(microseconds=micros)


def text(value: object) -> str:
    """A reply element as ``str``, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    return str(value)


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """``[k1, v1, k2, v2, ...]`` (an ``HGETALL`` reply inside a script) as a dict with str
    keys; the values are left as the client returned them."""
    return {text(flat[index]): flat[index + 1] for index in range(0, len(flat) - 1, 2)}


def decode_record(saga_id: UUID, key: str, fields: Mapping[str, Any]) -> SagaRecord:
    """Build the record of ``saga_id`` from its hash ``fields`` read from ``key``.

    Raises:
        StorageCorruptedError: a field is missing or holds a value this storage never writes.
    """
    field = "name"
    try:
        name = text(fields["name"])
        field = "status"
        status = _STATUSES[text(fields["status"])]
        field = "version"
        version = int(fields["version"])
        field = "cursor"
        cursor = int(fields["cursor"])
        field = "applied"
        applied = json.loads(fields["applied"])
        if not isinstance(applied, list) or not all(isinstance(s, str) for s in applied):
            raise ValueError("not a JSON array of step ids")
        field = "context"
        context = text(fields["context"])
        json.loads(context)
        field = "error"
        raw_error = fields.get("error")
        error = None if raw_error is None else text(raw_error)
        field = "created"
        created = micros_to_datetime(int(fields["created"]))
        field = "updated"
        updated = micros_to_datetime(int(fields["updated"]))
        # Records written before next_step was stored have no field: None.
        field = "next_step"
        raw_next_step = fields.get("next_step")
        next_step = None if raw_next_step is None else text(raw_next_step)
        field = "owner"
        raw_owner = fields.get("owner")
        owner = None if raw_owner is None else text(raw_owner)
        field = "expires"
        raw_expires = fields.get("expires")
        expires = None if raw_expires is None else micros_to_datetime(int(raw_expires))
        # Records written before recovery bookkeeping existed have neither field.
        field = "attempts"
        raw_attempts = fields.get("attempts")
        attempts = 0 if raw_attempts is None else int(raw_attempts)
        if attempts < 0:
            raise ValueError(f"negative attempts {attempts}")
        field = "parked"
        raw_parked = fields.get("parked")
        parked = raw_parked is not None and _flag(text(raw_parked))
    except (KeyError, ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        missing = isinstance(exc, KeyError)
        problem = "is missing" if missing else f"holds an invalid value ({exc})"
        raise StorageCorruptedError(
            f"saga {saga_id}: field {field!r} of the Redis hash {key!r} {problem}; the key was "
            f"not written by saga-redis or was changed by hand. Nothing was changed; inspect the "
            f"key (HGETALL) and delete or repair it"
        ) from exc
    return SagaRecord(
        saga_id=saga_id,
        saga_name=name,
        status=status,
        version=version,
        cursor=cursor,
        applied=tuple(applied),
        context=context,
        error=error,
        created_at=created,
        updated_at=updated,
        lease_owner=owner,
        lease_expires_at=expires,
        next_step=next_step,
        attempts=attempts,
        parked=parked,
    )


def _flag(value: str) -> bool:
    if value == "1":
        return True
    if value == "0":
        return False
    raise ValueError(f"{value!r} is not '1' or '0'")


def decode_journal(saga_id: UUID, key: str, items: Iterable[Any]) -> list[JournalEntry]:
    """Build the journal of ``saga_id`` from the list elements read from ``key``.

    Raises:
        StorageCorruptedError: an element is not a journal entry this storage wrote.
    """
    return [_decode_entry(saga_id, key, index, item) for index, item in enumerate(items)]


def _decode_entry(saga_id: UUID, key: str, index: int, item: Any) -> JournalEntry:
    try:
        data = json.loads(item)
        at = datetime.fromisoformat(data["at"])
        if at.utcoffset() != timedelta(0):
            raise ValueError(f"'at' is not in UTC: {data['at']!r}")
        error = data["error"]
        attempt = data["attempt"]
        step_id = data["step_id"]
        if not isinstance(step_id, str) or type(attempt) is not int:
            raise ValueError("'step_id' must be a string and 'attempt' an integer")
        if error is not None and not isinstance(error, str):
            raise ValueError("'error' must be a string or null")
        return JournalEntry(
            step_id=step_id,
            direction=_DIRECTIONS[data["direction"]],
            event=_EVENTS[data["event"]],
            attempt=attempt,
            at=at.replace(tzinfo=_UTC),
            error=error,
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise StorageCorruptedError(
            f"saga {saga_id}: element {index} of the Redis list {key!r} is not a journal entry "
            f"({type(exc).__name__}: {exc}); the key was not written by saga-redis or was "
            f"changed by hand. Nothing was changed; inspect it with LRANGE"
        ) from exc
