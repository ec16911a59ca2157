"""What a write is, and the errors that say why the database refused one.

Every write path (see ``_write_paths``) reports a refused write the same way: a create whose
id is taken, or a checkpoint whose compare-and-set matched nothing, which a read of the
stored ``(status, version, cancel_reason)`` then explains. The messages are defined here
once, so that a caller sees the same words whichever path wrote.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from saga_core import (
    SagaAlreadyExistsError,
    SagaCancelledError,
    SagaError,
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaNotFoundError,
    SagaParkedError,
    SagaVersionConflictError,
)
from saga_core.storage import Checkpoint, NewSaga

#: One write of the storage's hot path: a new saga, or a checkpoint of one.
Write = NewSaga | Checkpoint

#: A write's outcome: None when it was written, else the error that refused it.
Outcome = SagaError | None

#: What explains a refused checkpoint: the saga's stored status, version and cancel reason.
Stored = tuple[str, int, "str | None"]

#: The stored status words of the final states, which no write changes again.
TERMINAL_VALUES = ("completed", "compensated")


def describe_write(write: Write) -> str:
    """What a write does, for the message of the error it failed with."""
    if isinstance(write, Checkpoint):
        return f"checkpoint of saga {write.saga_id}"
    return f"creating saga {write.saga_id}"


def not_found(saga_id: UUID) -> SagaNotFoundError:
    return SagaNotFoundError(f"no saga with id {saga_id} in storage")


def finished(saga_id: UUID, status: str) -> SagaFinishedError:
    return SagaFinishedError(
        f"saga {saga_id} is {status}, a final state that is never written again"
    )


def stored(row: Any) -> Stored | None:
    """A diagnosis row (``status, version, cancel_reason``) as :data:`Stored` (None: none)."""
    return None if row is None else (row[0], row[1], row[2])


def refusal(write: Write, found: Stored | None) -> SagaError:
    """Why ``write`` wrote nothing: a create's id is taken; a checkpoint's saga is unknown
    (``found`` None), finished, at another version, or cancelled and the checkpoint would
    move it forward (``found`` is its stored ``(status, version, cancel_reason)``)."""
    saga_id = write.saga_id
    if isinstance(write, NewSaga):
        return SagaAlreadyExistsError(
            f"saga {saga_id} already exists; start the saga with a new id, or recover the "
            f"existing one"
        )
    if found is None:
        return not_found(saga_id)
    status, version, cancel_reason = found
    if status in TERMINAL_VALUES:
        return finished(saga_id, status)
    if version == write.expected_version and cancel_reason is not None:
        # At the expected version, so the cancel guard refused it (see _rules).
        return cancelled(saga_id, cancel_reason)
    return SagaVersionConflictError(
        f"saga {saga_id} is at version {version}, not the expected {write.expected_version}: "
        f"another runner wrote it; stop without writing"
    )


def cancelled(saga_id: UUID, reason: str) -> SagaCancelledError:
    return SagaCancelledError(
        f"saga {saga_id} was cancelled ({reason}); it may not move forward: compensate it"
    )


def claim_refusal(saga_id: UUID, found: Any, *, forced: bool = False) -> SagaError:
    """Why a claim of ``saga_id`` matched nothing, from its diagnosis row (``saga_id,
    status, version, lease_owner, lease_expires_at, parked, error``; None: no such saga).
    A ``forced`` claim is never refused for a lease: if the row read afterwards shows
    neither an end nor the dead-letter state, the saga changed in between."""
    if found is None:
        return not_found(saga_id)
    status, owner, expires, parked, error = found[1], found[3], found[4], found[5], found[6]
    if status in TERMINAL_VALUES:
        return finished(saga_id, status)
    if parked:
        return SagaParkedError(
            f"saga {saga_id} is parked in the dead-letter state ({error}); unpark it to let "
            f"recovery try again"
        )
    if owner is not None and not forced:
        until = f" until {expires.isoformat()}" if isinstance(expires, datetime) else ""
        return SagaLeaseHeldError(
            f"saga {saga_id} is leased to {owner!r}{until}; it is not stalled, leave it to "
            f"its owner"
        )
    return SagaVersionConflictError(f"saga {saga_id} changed while it was being claimed; retry")


def not_owned(saga_id: UUID, found: Any, owner: str, action: str) -> SagaError:
    """Why a write of the lease's owner (renew, park) matched nothing, from the saga's
    diagnosis row (as :func:`claim_refusal`'s)."""
    if found is None:
        return not_found(saga_id)
    status, held_by = found[1], found[3]
    if status in TERMINAL_VALUES:
        return finished(saga_id, status)
    holder = "it holds no lease" if held_by is None else f"its lease is {held_by!r}'s"
    return SagaLeaseHeldError(
        f"saga {saga_id} is not leased to {owner!r} ({holder}), so {owner!r} cannot "
        f"{action}: it was taken over or released; stop without writing"
    )
