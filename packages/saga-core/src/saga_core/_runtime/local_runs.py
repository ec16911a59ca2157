"""The sagas this process is running right now, whoever runs them: a mediator, a worker or
``recover_saga``.

A process that takes back the sagas leased to its own name (``RecoveryWorker.recover_own``)
must leave alone the ones it is running itself: their leases name it too, and a claim would
fence off its own live runner. Each runner registers its saga here before its first write
(the create, or the claim) and removes it when it stops.

A runner that can be cancelled (``mediator.cancel`` in this process stops its step at once)
registers itself with :func:`cancellable` while it runs.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Protocol
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


class Cancellable(Protocol):
    """A runner that stops going forward when told why (``SagaRun.cancel``)."""

    saga_id: UUID

    def cancel(self, error: Exception) -> None: ...


_cancellable: dict[UUID, list[Cancellable]] = {}


@contextlib.contextmanager
def cancellable(run: Cancellable) -> Iterator[None]:
    """Let :func:`cancel_here` reach ``run`` for the block."""
    runs = _cancellable.setdefault(run.saga_id, [])
    runs.append(run)
    try:
        yield
    finally:
        runs.remove(run)
        if not runs:
            del _cancellable[run.saga_id]


def cancel_here(saga_id: UUID, error: Exception) -> bool:
    """Tell this process's runners of ``saga_id`` to stop going forward because of ``error``;
    whether one was running."""
    runs = list(_cancellable.get(saga_id, ()))
    for run in runs:
        run.cancel(error)
    return bool(runs)
