"""Checks of arguments that many entry points share, written once."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from .errors import SagaUsageError


def require_saga_id(saga_id: Any, *, where: str = "saga_id") -> UUID:
    """Return ``saga_id`` if it is a :class:`uuid.UUID`, else raise
    :class:`~saga_core.SagaUsageError` saying what was given (before anything is written).

    Storage plugins call it on every saga id their public methods receive, so a caller's
    mistake is never reported as an outage or as corrupt data.
    """
    if isinstance(saga_id, UUID):
        return saga_id
    hint = " (convert a string with uuid.UUID(text))" if isinstance(saga_id, str) else ""
    raise SagaUsageError(
        f"{where} must be a uuid.UUID, got {saga_id!r} of type {type(saga_id).__qualname__}{hint}"
    )


def require_lease_owner_filter(owner: Any) -> str | None:
    """Return ``owner`` if it is ``None`` or a non-empty string, else raise
    :class:`~saga_core.SagaUsageError`: the ``lease_owner`` filter of ``list_sagas``, which
    storage plugins check with this before they query."""
    if owner is None or (isinstance(owner, str) and owner):
        return owner
    raise SagaUsageError(
        f"list_sagas(lease_owner=...) needs an owner name (a non-empty string) or None, "
        f"got {owner!r}"
    )


def check_new_saga(saga: Any) -> None:
    """Raise :class:`~saga_core.SagaUsageError` unless ``saga`` (a ``NewSaga``) is RUNNING
    with a lease owner and ``lease_seconds >= 0`` and no ``wake_at``, or WAITING without a
    lease and with a ``wake_at``; ``wake_at`` and ``deadline_at`` aware (or ``None``);
    ``parent_id`` a UUID (or ``None``). Storage plugins call it in ``create`` before they
    write."""
    status = getattr(saga.status, "value", saga.status)
    if status == "running":
        if not saga.lease_owner or saga.lease_seconds is None or saga.lease_seconds < 0:
            raise SagaUsageError(
                f"a new RUNNING saga needs a lease_owner and lease_seconds >= 0, got "
                f"{saga.lease_owner!r} and {saga.lease_seconds!r}"
            )
        if saga.wake_at is not None:
            raise SagaUsageError("only a WAITING saga has a wake_at")
    elif status == "waiting":
        if saga.lease_owner is not None or saga.lease_seconds is not None:
            raise SagaUsageError(
                "a new WAITING saga holds no lease: pass lease_owner=None, lease_seconds=None"
            )
        if saga.wake_at is None:
            raise SagaUsageError("a new WAITING saga needs a wake_at: when a worker may run it")
    else:
        raise SagaUsageError(f"a new saga is RUNNING or WAITING, not {status!r}")
    for name in ("wake_at", "deadline_at"):
        value = getattr(saga, name)
        if value is not None and value.utcoffset() is None:
            raise SagaUsageError(f"NewSaga.{name} must be an aware datetime, got {value!r}")
    if saga.parent_id is not None:
        require_saga_id(saga.parent_id, where="NewSaga.parent_id")


def check_wake_at(wake_at: Any) -> None:
    """Raise :class:`~saga_core.SagaUsageError` unless a WAITING checkpoint's ``wake_at`` is
    ``None`` or an aware datetime (storage plugins check it before a WAITING write)."""
    if wake_at is not None and wake_at.utcoffset() is None:
        raise SagaUsageError(f"Checkpoint.wake_at must be an aware datetime, got {wake_at!r}")
