"""A group-commit batch that one write's own data fails: split, and written again.

A write the database refuses for its own data (an application's constraint or trigger, an
encoding error, a value too large for its column) or that the storage cannot encode fails the
whole transaction, which then wrote nothing. The batch is split in halves and each written
again, halving what fails, down to the writes that fail alone: only those get an error, each
its own. A failure that is not one write's (connection lost, server gone, table missing: see
``is_shared_failure``) is every write's outcome and is raised as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from saga_core import SagaError

from ._errors import is_shared_failure
from ._group_commit import shared_failure
from ._outcomes import Outcome, Write
from ._write_paths import WritePath


async def write_splitting(path: WritePath, writes: Sequence[Write]) -> list[Outcome]:
    """Write ``writes`` on ``path`` in one transaction; return each write's outcome.

    Raises:
        SagaStorageError: the database failed as a whole (every write's outcome).
    """
    if len(writes) == 1:
        return [await path.write_one(writes[0])]
    try:
        return await path.write_batch(writes)
    except SagaError as exc:
        if is_shared_failure(exc):
            raise
    # Outside the except clause, so that no error of the retries chains this failure: its
    # text may quote the parameters of every write in the batch, other sagas' data.
    return await _isolate(path, writes)


async def _isolate(path: WritePath, writes: Sequence[Write]) -> list[Outcome]:
    """Write the halves of a batch that failed for one write's sake, each in its own
    transaction and split again while it fails. This is the failure path only: a batch with
    one refused write costs about two transactions per halving, and the writes of the halves
    that pass are committed at once."""
    middle = len(writes) // 2
    outcomes: list[Outcome] = []
    shared: SagaError | None = None
    for part in (writes[:middle], writes[middle:]):
        if shared is None:
            try:
                if len(part) == 1:
                    outcomes.append(await path.write_one(part[0]))
                else:
                    outcomes.extend(await write_splitting(path, part))
                continue
            except SagaError as exc:
                if len(part) == 1 and not is_shared_failure(exc):
                    outcomes.append(exc)
                    continue
                shared = exc
        # The database failed as a whole meanwhile: every write not yet written shares that
        # outcome (each writer raises an instance of its own).
        outcomes.extend(shared_failure(shared) for _ in part)
    return outcomes
