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
