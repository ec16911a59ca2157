"""Turning records and journal entries into Redis values and back.

A record is a hash of a few text fields (see the README's key layout): ``name``,
``saga_version`` (absent from records written before it was stored: version 1), ``created``,
``head`` (what the scripts check, see ``lua/prelude.lua``), ``body`` (written by the
client; the scripts read only its cursor and next step), ``error``, for durable waits
``wait`` (WAITING only), ``deadline`` and ``cancel``, and ``parent``, the id of the saga that
started this one as a child (each absent when unset, as in records stored before they
existed). The scripts that read a record add its pending signals as fields
``signal:<id>`` (see ``record_fields`` in ``lua/prelude.lua``). A journal entry is one list
element, in
saga-core's journal entry form (:func:`saga_core.storage.encode_journal_entry`:
``[step_id, direction, event, attempt, at (µs since the epoch), error]``)::

    ["orders.Reserve", "act", "failed", 2, 1767323045678901, "TimeoutError: stock service"]

Everything read back is checked: a value this storage would not have written raises
:class:`~saga_core.StorageCorruptedError` naming the saga (its ``saga_id`` set) and the key,
never a bare ``KeyError``, ``ValueError`` or ``RecursionError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from saga_core import SagaRecord, SagaStatus, StorageCorruptedError
from saga_core.storage import JournalEntry, PendingSignal, decode_journal_entry, storable_text

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_STATUSES = {status.value: status for status in SagaStatus}

# A JSON string literal of a str, non-ASCII kept as it is (json's own C function).
_quote = json.encoder.encode_basestring

# JSON arrays of the applied step ids seen so far: a saga definition has few distinct ones.
# Bounded so that unusual callers cannot grow it.
_APPLIED: dict[tuple[str, ...], str] = {}
_APPLIED_MAX = 4096


def encode_applied(applied: Sequence[str]) -> str:
    """Return the applied step ids as a JSON array."""
    if type(applied) is tuple:
        text = _APPLIED.get(applied)
        if text is None:
            text = _applied_text(applied)
            if len(_APPLIED) < _APPLIED_MAX:
                _APPLIED[applied] = text
        return text
    return _applied_text(applied)


def _applied_text(applied: Sequence[str]) -> str:
    if not applied:
        return "[]"
    return f"[{','.join(map(_quote, applied))}]"


def micros_to_datetime(micros: int) -> datetime:
    """Return the aware UTC datetime ``micros`` microseconds after the epoch, exactly."""
    return _EPOCH + timedelta(microseconds=micros)


def quote(value: str) -> str:
    """``value`` as a JSON string literal: how signal names and step ids are stored where the
    scripts compare them."""
    return _quote(value)


def text(value: object) -> str:
    """A reply element as ``str``, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    return str(value)


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """``[k1, v1, k2, v2, ...]`` (an ``HGETALL`` reply inside a script) as a dict with str
    keys; the values are left as the client returned them.

    A field name that is not UTF-8 is none of a record's fields: it is kept, with its bad
    bytes replaced, so that it cannot stop the record's own fields from being read."""
    return {_name(flat[index]): flat[index + 1] for index in range(0, len(flat) - 1, 2)}


def _name(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return text(value)


def encode_body(cursor: int, next_step: str | None, applied: str, context: str) -> str:
    """The record's ``body`` field: the cursor, the next step's id as a JSON string (empty for
    none), the applied step ids (JSON array) and the context, one per line (the context last,
    as it is: the others are JSON, which never holds a raw line break)."""
    quoted = "" if next_step is None else _quote(next_step)
    return f"{cursor}\n{quoted}\n{applied}\n{context}"


#: The parts of a record's ``head`` field, in order (see ``lua/prelude.lua``).
HEAD_PARTS = ("version", "status", "updated", "expires", "attempts", "flags", "token", "owner")


def decode_record(saga_id: UUID, key: str, fields: Mapping[str, Any]) -> SagaRecord:
    """Build the record of ``saga_id`` from its hash ``fields`` read from ``key``.

    Raises:
        StorageCorruptedError: a field is missing or holds a value this storage never writes
            (JSON nested too deeply for the parser included); ``saga_id`` is set.
    """
    field = "name"
    try:
        name = text(fields["name"])
        field = "created"
        created = micros_to_datetime(int(fields["created"]))
        field = "head"
        parts = text(fields["head"]).split(" ", 7)
        if len(parts) != len(HEAD_PARTS):
            raise ValueError(f"{len(parts)} parts, not {len(HEAD_PARTS)}")
        raw_version, raw_status, raw_updated, raw_expires, raw_attempts, raw_flags, _, owner = parts
        if max(len(raw_version), len(raw_updated), len(raw_expires), len(raw_attempts)) > 18:
            raise ValueError("a number of more than 18 digits")  # the scripts refuse it too
        status = _STATUSES[raw_status]
        version = int(raw_version)
        updated = micros_to_datetime(int(raw_updated))
        attempts = int(raw_attempts)
        flags = int(raw_flags)
        if version < 1 or attempts < 0 or not 0 <= flags <= 7:
            raise ValueError("version, attempts or flags out of range")
        if (owner == "") != (raw_expires == ""):
            raise ValueError("a lease owner without an expiry, or the reverse")
        expires = None if raw_expires == "" else micros_to_datetime(int(raw_expires))
        field = "body"
        raw_cursor, raw_next_step, raw_applied, context = text(fields["body"]).split("\n", 3)
        cursor = int(raw_cursor)
        next_step = None if raw_next_step == "" else json.loads(raw_next_step)
        if next_step is not None and not isinstance(next_step, str):
            raise ValueError("the next step is not a JSON string")
        applied = json.loads(raw_applied)
        if not isinstance(applied, list) or not all(isinstance(s, str) for s in applied):
            raise ValueError("not a JSON array of step ids")
        json.loads(context)
        field = "saga_version"
        raw_saga_version = fields.get("saga_version")
        # Records written before the definition's version was stored are version 1.
        saga_version = 1
        if raw_saga_version is not None:
            digits = text(raw_saga_version)
            if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
                raise ValueError("not a number of 1 to 18 digits")
            saga_version = int(digits)
            if saga_version < 1:
                raise ValueError("not a version >= 1")
        field = "error"
        raw_error = fields.get("error")
        error = None if raw_error is None else text(raw_error)
        if (error is not None) != (flags % 4 >= 2):
            raise ValueError("the head's error flag does not match the field")
        field = "cancel"
        raw_cancel = fields.get("cancel")
        cancel_reason = None if raw_cancel is None else text(raw_cancel)
        if (cancel_reason is not None) != (flags >= 4):
            raise ValueError("the head's cancel flag does not match the field")
        field = "deadline"
        raw_deadline = fields.get("deadline")
        deadline_at = None if raw_deadline is None else micros_to_datetime(int(raw_deadline))
        field = "parent"
        raw_parent = fields.get("parent")
        parent_id = None
        if raw_parent is not None:
            parent_text = text(raw_parent)
            parent_id = UUID(parent_text)
            if str(parent_id) != parent_text:
                raise ValueError("not a saga id as saga-redis writes it")
        field = "wait"
        wake_at = waiting_for = None
        raw_wait = fields.get("wait")
        if status is SagaStatus.WAITING and raw_wait is not None:
            raw_wake, raw_name = text(raw_wait).split(" ", 1)
            wake_at = None if raw_wake == "" else micros_to_datetime(int(raw_wake))
            if raw_name:
                waiting_for = json.loads(raw_name)
                if not isinstance(waiting_for, str):
                    raise ValueError("the signal name is not a JSON string")
        field = "signals"
        signals = _decode_signals(fields)
    except (KeyError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # ValueError covers json's errors and UnicodeDecodeError; RecursionError is json's
        # answer to a text nested deeper than it recurses.
        if isinstance(exc, KeyError):
            problem = "is missing"
        elif isinstance(exc, RecursionError):
            problem = "holds JSON nested too deeply to be read"
        else:
            problem = f"holds an invalid value ({storable_text(str(exc), limit=200)})"
        where = f"field {field!r} of the Redis hash {key!r}"
        if field == "signals":
            where = f"the Redis hash {signals_key(key)!r} of its signals"
        raise StorageCorruptedError(
            f"saga {saga_id}: {where} {problem}; the key was "
            f"not written by saga-redis or was changed by hand. Nothing was changed; inspect the "
            f"key (HGETALL) and delete or repair it",
            saga_id=saga_id,
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
        lease_owner=owner or None,
        lease_expires_at=expires,
        next_step=next_step,
        attempts=attempts,
        parked=flags % 2 == 1,
        saga_version=saga_version,
        wake_at=wake_at,
        waiting_for=waiting_for,
        deadline_at=deadline_at,
        cancel_reason=cancel_reason,
        signals=signals,
        parent_id=parent_id,
    )


#: The prefix of the fields a record read carries for its pending signals.
SIGNAL_FIELD = "signal:"
#: The field a record read carries, holding a Redis type, when its signals key has that type.
SIGNALS_TYPE_FIELD = "~signals"


def signals_key(record_key: str) -> str:
    """The key of the signals of the saga whose record is ``record_key`` (same hash tag)."""
    stem, _, saga_id = record_key.rpartition("}:record:")
    return f"{stem}}}:signals:{saga_id}"


def _decode_signals(fields: Mapping[str, Any]) -> tuple[PendingSignal, ...]:
    """The pending signals among a record read's fields, in delivery order."""
    found = fields.get(SIGNALS_TYPE_FIELD)
    if found is not None:
        raise ValueError(f"a {text(found)}, not a hash")
    pending: list[tuple[int, PendingSignal]] = []
    for name, value in fields.items():
        if not name.startswith(SIGNAL_FIELD):
            continue
        header, payload = text(value).split("\n", 1)
        raw_seq, raw_at, _token, raw_name = header.split(" ", 3)
        signal_name = json.loads(raw_name)
        if not isinstance(signal_name, str):
            raise ValueError("a signal name is not a JSON string")
        signal = PendingSignal(
            signal_id=name[len(SIGNAL_FIELD) :],
            name=signal_name,
            payload=payload,
            delivered_at=micros_to_datetime(int(raw_at)),
        )
        pending.append((int(raw_seq), signal))
    if not pending:
        return ()
    pending.sort(key=lambda entry: entry[0])
    return tuple(signal for _, signal in pending)


def decode_journal(saga_id: UUID, key: str, items: Iterable[Any]) -> list[JournalEntry]:
    """Build the journal of ``saga_id`` from the list elements read from ``key``.

    Raises:
        StorageCorruptedError: an element is not a journal entry this storage wrote.
    """
    return [_decode_entry(saga_id, key, index, item) for index, item in enumerate(items)]


def _decode_entry(saga_id: UUID, key: str, index: int, item: Any) -> JournalEntry:
    try:
        return decode_journal_entry(item)
    except ValueError as exc:
        raise StorageCorruptedError(
            f"saga {saga_id}: element {index} of the Redis list {key!r} is not a journal entry "
            f"({exc}); the key was not written by saga-redis or was changed by hand. Nothing "
            f"was changed; inspect it with LRANGE",
            saga_id=saga_id,
        ) from exc
