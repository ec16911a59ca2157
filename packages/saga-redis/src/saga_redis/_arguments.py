"""The protocol's arguments checked and turned into script arguments (text).

Each function raises :class:`~saga_core.SagaUsageError` for a caller's mistake, before
anything is sent to Redis.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from saga_core import SagaStatus, SagaUsageError
from saga_core.storage import require_lease_owner_filter, require_saga_id

#: How long a finished (COMPLETED or COMPENSATED) saga is kept by default: 7 days.
DEFAULT_RETAIN_FINISHED_SECONDS = 7 * 24 * 3600.0
#: How many journal entries a saga keeps by default; older ones are dropped first.
DEFAULT_MAX_JOURNAL_ENTRIES = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_INF = math.inf
# Lease lengths seen so far, in microseconds as text: a program uses few.
_MICROS_TEXT: dict[float, str] = {}


def next_step_arg(next_step: object) -> str | None:
    """``next_step`` if it is a step id or None, else raise SagaUsageError."""
    if next_step is None or isinstance(next_step, str):
        return next_step
    raise SagaUsageError(f"next_step must be a step id (str) or None, got {next_step!r}")


def parent_arg(parent_id: object) -> str:
    """``NewSaga.parent_id`` (a UUID or None) as its canonical text, ``''`` for None."""
    if parent_id is None:
        return ""
    return str(require_saga_id(parent_id, where="NewSaga.parent_id"))


def owner_arg(owner: object) -> str:
    if not isinstance(owner, str) or not owner:
        raise SagaUsageError(f"a lease owner must be a non-empty string, got {owner!r}")
    return owner


def micros_arg(seconds: object) -> str:
    """``lease_seconds`` as whole microseconds, in digits."""
    if type(seconds) is float or type(seconds) is int:  # not bool
        text = _MICROS_TEXT.get(seconds)
        if text is not None:
            return text
        if 0 <= seconds < _INF:
            text = str(round(seconds * 1_000_000))
            if len(_MICROS_TEXT) < 256:
                _MICROS_TEXT[seconds] = text
            return text
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise SagaUsageError(f"lease_seconds must be a finite number >= 0, got {seconds!r}")
    return str(round(seconds * 1_000_000))


def instant_arg(value: object, name: str) -> str:
    """An aware datetime (``wake_at``, ``deadline_at``) as µs since the epoch in digits, ``''``
    for ``None``."""
    if value is None:
        return ""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise SagaUsageError(
            f"{name} must be an aware datetime (e.g. datetime.now(timezone.utc)) or None, got "
            f"{value!r}"
        )
    return str((value - _EPOCH) // _MICROSECOND)


def text_arg(value: object, name: str, *, empty: bool = True) -> str:
    """``value`` if it is a str (non-empty unless ``empty``), else raise SagaUsageError."""
    if not isinstance(value, str) or (not empty and not value):
        wanted = "a string" if empty else "a non-empty string"
        raise SagaUsageError(f"{name} must be {wanted}, got {value!r}")
    return value


def cursor_arg(value: object, name: str) -> str:
    """A cursor (an int >= 0) in digits."""
    if type(value) is int and value >= 0:
        return str(value)
    raise SagaUsageError(f"{name} must be an int >= 0, got {value!r}")


def list_filters(
    status: object,
    saga_name: object,
    parked: object,
    updated_before: object,
    lease_owner: object,
) -> list[str]:
    """``list_sagas``'s filters as the list script's arguments: status, name, parked, the
    highest update time (exclusive) and the lease owner, each ``''`` / ``'+inf'`` when not
    applied."""
    owner = require_lease_owner_filter(lease_owner)
    if status is not None and not isinstance(status, SagaStatus):
        raise SagaUsageError(f"status must be a SagaStatus or None, got {status!r}")
    if saga_name is not None and not isinstance(saga_name, str):
        raise SagaUsageError(f"saga_name must be a string or None, got {saga_name!r}")
    if parked is not None and not isinstance(parked, bool):
        raise SagaUsageError(f"parked must be True, False or None, got {parked!r}")
    before = "+inf"
    if updated_before is not None:
        if not isinstance(updated_before, datetime) or updated_before.utcoffset() is None:
            raise SagaUsageError(
                f"updated_before must be an aware datetime (e.g. datetime.now(timezone.utc)) "
                f"or None, got {updated_before!r}"
            )
        before = f"({(updated_before - _EPOCH) // _MICROSECOND}"
    return [
        "" if status is None else status.value,
        "" if saga_name is None else f"={saga_name}",
        "" if parked is None else ("1" if parked else "0"),
        before,
        "" if owner is None else owner,
    ]


def check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise SagaUsageError(f"limit must be an int >= 0, got {limit!r}")


def saga_version_arg(saga_version: object) -> str:
    """``NewSaga.saga_version`` (an int >= 1) in digits."""
    if type(saga_version) is int and saga_version >= 1:
        return str(saga_version)
    raise SagaUsageError(
        f"saga_version must be an int >= 1 (the saga definition's version), got {saga_version!r}"
    )


def retention_arg(retain_finished_seconds: object) -> str:
    """``retain_finished_seconds`` (``None``, or seconds >= 0.001) as whole milliseconds in
    digits, ``''`` for ``None``."""
    if retain_finished_seconds is None:
        return ""
    if (
        isinstance(retain_finished_seconds, bool)
        or not isinstance(retain_finished_seconds, (int, float))
        or not math.isfinite(retain_finished_seconds)
        or retain_finished_seconds < 0.001
    ):
        raise SagaUsageError(
            f"retain_finished_seconds must be None (keep finished sagas) or a positive "
            f"number of seconds, got {retain_finished_seconds!r}"
        )
    return str(round(retain_finished_seconds * 1000))


def journal_cap_arg(max_journal_entries: object) -> str:
    """``max_journal_entries`` (``None``, or an int >= 1) in digits, ``''`` for ``None``."""
    if max_journal_entries is None:
        return ""
    if (
        isinstance(max_journal_entries, bool)
        or not isinstance(max_journal_entries, int)
        or max_journal_entries < 1
    ):
        raise SagaUsageError(
            f"max_journal_entries must be None (keep every entry) or an int >= 1, got "
            f"{max_journal_entries!r}"
        )
    return str(max_journal_entries)
