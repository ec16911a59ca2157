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
