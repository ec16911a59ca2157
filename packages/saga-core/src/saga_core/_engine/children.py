"""What the driver needs to run the child saga of a ``SubSaga`` node.

The driver (:mod:`saga_core._engine.executor`) reaches a ``SubSaga`` node and asks a
:class:`ChildRunner` to bring the child to its end in this runner if it can: start it (or
take it over, when an earlier runner left it), run it in place and say how it ended. Starting
and taking over sagas is the runtime's job (:mod:`saga_core._runtime.children`), so the engine
sees it only through this protocol. A child that cannot end here now — it waits for a signal
or a timer, or another runner holds it — is reported as not ended, and the parent suspends
until the child's end wakes it (:func:`wake_parent`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from saga_core._model.errors import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaFailedError,
)
from saga_core._model.saga import Node
from saga_core._model.status import SagaStatus, StepDirection, StepEvent
from saga_core._storage.protocol import JournalEntry

if TYPE_CHECKING:
    from .executor import SagaRun

#: Child saga ids are derived from the parent's id and the node's, in this namespace, so that
#: a parent that runs its node again finds the child it started.
_CHILD_NAMESPACE = uuid.UUID("6f1d2d8e-3a8b-5c1e-9a51-1c0c5a9e2b7d")


def child_saga_id(parent_id: uuid.UUID, node_id: str) -> uuid.UUID:
    """The id of the child saga the ``SubSaga`` node ``node_id`` of saga ``parent_id``
    starts: the same every time it is asked."""
    return uuid.uuid5(_CHILD_NAMESPACE, f"{parent_id}/{node_id}")


def child_signal(child_id: uuid.UUID) -> str:
    """The name of the signal that wakes a parent waiting for child ``child_id``."""
    return f"child:{child_id}"


class ChildEnd(NamedTuple):
    """How a child saga stands once the parent's runner did what it could."""

    child_id: uuid.UUID
    status: SagaStatus | None
    """Its terminal status, or None: not ended, and it cannot end in this runner now."""
    context: Any = None
    """COMPLETED: its final context."""
    applied: tuple[str, ...] = ()
    """COMPLETED: its applied steps, in order (the parent compensates them, if it must)."""
    error: str | None = None
    """Rolled back: why."""


def child_failure(node_id: str, end: ChildEnd) -> SagaFailedError:
    """The error that makes the parent compensate after its child (of the ``SubSaga`` node
    ``node_id``) ended rolled back (COMPENSATED, or FAILED)."""
    assert end.status is not None
    what = "was rolled back" if end.status is SagaStatus.COMPENSATED else "failed"
    message = f"child saga {end.child_id} ({node_id}) {what}: {end.error}"
    if end.status is SagaStatus.COMPENSATED:
        return SagaCompensatedError(message, saga_id=end.child_id)
    return SagaCompensationFailedError(message, saga_id=end.child_id)


def child_entry(node_id: str, end: ChildEnd) -> JournalEntry:
    """The parent's journal entry for where its child stands (the child's id as its detail):
    COMPLETED, FAILED when it was rolled back (with why), STARTED while the parent waits for
    it. The child's own steps are in the child's journal."""
    if end.status is None:
        event, error = StepEvent.STARTED, None
    elif end.status is SagaStatus.COMPLETED:
        event, error = StepEvent.COMPLETED, None
    else:
        event, error = StepEvent.FAILED, f"{end.status.value}: {end.error}"
    now = datetime.now(timezone.utc)
    return JournalEntry(node_id, StepDirection.ACT, event, 1, now, error, str(end.child_id))


class ChildRunner(Protocol):
    """Brings the child of a ``SubSaga`` node to its end in the parent's runner, if it can."""

    async def settle(
        self, parent: SagaRun, node: Node, branch_context: Any | None = None
    ) -> ChildEnd:
        """Start the child of ``node`` (its context built from ``parent.context``, or from
        ``branch_context`` when the node is a ``Parallel`` branch), or take it over when it
        is stalled, and run it here until it ends or cannot go on; the step results of its
        run are queued on the parent (:meth:`SagaRun.queue_result`). The parent's cancel
        reaches a child it runs itself through ``parent.child``; a branch's, through the
        branch (:meth:`stop`).

        Raises:
            SagaChildError: the node's ``context`` factory raised or built the wrong type
                (nothing written).
        """
        ...

    async def stop(self, parent: SagaRun, node: Node, reason: Exception) -> ChildEnd:
        """The parent stops going forward at ``node`` (a cancel, its deadline): cancel the
        child, which compensates itself — here, when this runner can take it — and say how
        it stands (COMPLETED: the parent compensates its steps)."""
        ...
