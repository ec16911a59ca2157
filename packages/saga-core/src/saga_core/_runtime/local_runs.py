"""The sagas this process is running right now, whoever runs them: a mediator, a worker or
``recover_saga``.

A process that takes back the sagas leased to its own name (``RecoveryWorker.recover_own``)
must leave alone the ones it is running itself: their leases name it too, and a claim would
fence off its own live runner. Each runner registers its saga here before its first write
(the create, or the claim) and removes it when it stops.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from uuid import UUID

# Saga id -> runners of it in this process (more than one only for a moment: a runner being
# fenced off while another takes over).
_running: Counter[UUID] = Counter()


@contextlib.contextmanager
def running_here(saga_id: UUID) -> Iterator[None]:
    """Count ``saga_id`` as run by this process for the block."""
    _running[saga_id] += 1
    try:
        yield
    finally:
        _running[saga_id] -= 1
        if not _running[saga_id]:
            del _running[saga_id]


def is_running_here(saga_id: UUID) -> bool:
    """Whether a runner of this process runs ``saga_id`` now."""
    return saga_id in _running
