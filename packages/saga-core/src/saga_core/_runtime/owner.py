"""The name a process's runners put in their leases.

A lease names its owner. A process that always runs under the same name (``bootstrap(owner=
"orders-7")``, as a service instance keeps its name across restarts) can take back the sagas
it held when it died at once: its claims succeed on leases that are already its own, where
another name would wait for them to expire. Runners built without a name take the one the
process was given, in the current context (a :class:`contextvars.ContextVar`, so tasks
started afterwards inherit it), or a name unique to them.
"""

from __future__ import annotations

import os
import socket
import uuid
from contextvars import ContextVar

from saga_core._model.errors import SagaUsageError

_named: ContextVar[str | None] = ContextVar("saga_core_owner", default=None)


def name_owner(owner: str) -> str:
    """Make ``owner`` the default owner name of the runners built from now on in this
    context (``recover_saga``, ``RecoveryWorker``, mediators); return it.

    Raises:
        SagaUsageError: ``owner`` is not a non-empty string.
    """
    if not isinstance(owner, str) or not owner:
        raise SagaUsageError(f"owner must be a non-empty string, got {owner!r}")
    _named.set(owner)
    return owner


def default_owner() -> str:
    """The owner name given to :func:`name_owner` in this context, else a name unique to the
    caller: ``"<host>:<pid>:<random>"``."""
    named = _named.get()
    if named is not None:
        return named
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
