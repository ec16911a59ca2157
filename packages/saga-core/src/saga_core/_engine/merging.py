"""Merging the context changes of a ``Parallel`` group's branches into the saga's context.

Each branch runs on its own copy of the context, decoded from the last checkpoint (the
group's *base*), so that it sees its own changes only. When a branch completes, the fields
its copy holds differently from the base — compared as the context codec stores them — are
set on the saga's context, in place. A field changed by two branches of one group cannot keep
both changes: the second is refused with :class:`~saga_core.SagaBranchConflictError`.
"""

from __future__ import annotations

import json
from typing import Any

from saga_core._codec.context import ContextCodec
from saga_core._model.errors import SagaBranchConflictError

from .isolation import restore_in_place


class ContextMerge:
    """Merges completed branches' changes into the saga's context for one run of a group."""

    __slots__ = ("_base", "_codec", "_group_id", "_owners")

    def __init__(self, codec: ContextCodec[Any], base_text: str, group_id: str) -> None:
        self._codec = codec
        self._base: dict[str, Any] = json.loads(base_text)
        self._group_id = group_id
        # Which branch (by its step id) changed each field so far.
        self._owners: dict[str, str] = {}

    def take(self, context: Any, branch_context: Any, step_id: str) -> None:
        """Set on ``context`` (in place) the fields ``branch_context`` changed from the base;
        ``step_id`` names the branch.

        Raises:
            SagaBranchConflictError: another branch of the group changed one of those fields
                (``context`` is left as it was).
            SagaContextError: ``branch_context`` cannot be encoded.
        """
        changed = json.loads(self._codec.encode(branch_context))
        missing = object()
        changes = {
            name: value for name, value in changed.items() if self._base.get(name, missing) != value
        }
        for name in changes:
            owner = self._owners.get(name)
            if owner is not None and owner != step_id:
                raise SagaBranchConflictError(
                    f"branches {owner} and {step_id} of {self._group_id} both changed the "
                    f"context field {name!r}, so one change would be lost; let each branch "
                    "change its own fields, and combine them in a step after the group"
                )
        if not changes:
            return
        merged = self._codec.to_jsonable(context)
        merged.update(changes)
        restore_in_place(context, self._codec.from_jsonable(merged))
        for name in changes:
            self._owners[name] = step_id
