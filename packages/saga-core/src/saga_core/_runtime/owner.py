"""The name a process's runners put in their leases.

A lease names its owner. A process that always runs under the same name (``bootstrap(owner=
"orders-7")``, as a service instance keeps its name across restarts) can take back the sagas
it held when it died at once: its claims succeed on leases that are already its own, where
another name would wait for them to expire. Runners built without a name take the one the
process was given, in the current context (a :class:`contextvars.ContextVar`, so tasks
started afterwards inherit it), or a name unique to them.

A name made up here (:func:`default_owner` without a given name) names no lease written before
this process started, so a worker under it has nothing to take back: :func:`is_made_up_here`
tells, and the worker skips the listing (on a storage without an index by owner, such as Redis,
that listing reads every saga).
"""

from __future__ import annotations

import itertools
import os
import socket
import uuid
from contextvars import ContextVar

from saga_core._model.errors import SagaUsageError

_named: ContextVar[str | None] = ContextVar("saga_core_owner", default=None)

#: Random per process (per import), so that no other process makes up a name of this one's:
#: made-up names are "<host>:<pid>:<token>-<n>".
_TOKEN = uuid.uuid4().hex[:8]
_made_up_count = itertools.count(1)


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
    caller: ``"<host>:<pid>:<random>-<n>"``."""
    named = _named.get()
    if named is not None:
        return named
    return f"{_made_up_prefix()}{next(_made_up_count)}"


def is_made_up_here(owner: str) -> bool:
    """Whether ``owner`` is a name :func:`default_owner` made up in this process: no lease
    written by a process that is gone can name it."""
    prefix = _made_up_prefix()
    return owner.startswith(prefix) and owner[len(prefix) :].isdigit()


def _made_up_prefix() -> str:
    # The pid is read on each call: a forked child makes up names of its own.
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}-"
