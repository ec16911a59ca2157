"""Storage rules that every write path states in its own SQL, written here once.

The write paths send different SQL (SQLAlchemy Core, PostgreSQL text for SQLAlchemy and for
asyncpg, ``sqlite3`` text) but must keep the same rules. A rule that lives in a statement's
text is rendered here from the placeholders each path uses, so the paths say it in the same
words; a rule decided in Python is a function here.
"""

from __future__ import annotations

from collections.abc import Callable

from saga_core import SagaStatus
from saga_core.storage import Checkpoint, NewSaga

from ._outcomes import Write

_WAITING = SagaStatus.WAITING


def cancel_guard(status: str, cursor: str, column: Callable[[str], str]) -> str:
    """The compare-and-set's term that refuses a checkpoint moving a cancelled saga forward.

    While ``cancel_reason`` is set, a checkpoint to COMPLETED, to WAITING from another status,
    or to a greater cursor matches no row; its refusal is then diagnosed (see ``_outcomes``).
    It is a term of the UPDATE's WHERE, read from the row the UPDATE locks, so a cancel that
    commits while the checkpoint waits for the row is seen (PostgreSQL re-checks the WHERE on
    the newest row), and a checkpoint of a saga never cancelled costs nothing more.

    Args:
        status, cursor: the checkpoint's new status and cursor (placeholders or columns).
        column: the SQL of a column of the stored row, by name.
    """
    return (
        f"({column('cancel_reason')} IS NULL OR NOT ({status} = 'completed' OR "
        f"({status} = '{_WAITING.value}' AND {column('status')} <> '{_WAITING.value}') OR "
        f"{cursor} > {column('cursor')}))"
    )


def needs_wait_rules(write: Write) -> bool:
    """Whether ``write`` uses durable waits (a WAITING status, a deadline, a signal to
    consume or to lose to) or creates a child saga (a ``parent_id``), and is then written by
    the statements that keep those rules and store those columns (``_waits``) rather than by
    a path's plain compare-and-set or INSERT, which store a saga that does not wait: RUNNING,
    leased, no ``wake_at``, no ``waiting_for``, no deadline, no parent."""
    if isinstance(write, Checkpoint):
        return (
            write.status is _WAITING
            or write.consume_signal is not None
            or write.unless_signal is not None
        )
    assert isinstance(write, NewSaga)
    return write.status is _WAITING or write.deadline_at is not None or write.parent_id is not None


def running_lease(saga: NewSaga) -> tuple[str, float]:
    """The lease owner and seconds of a saga a path's plain INSERT creates: RUNNING, which
    ``check_new_saga`` made sure holds a lease."""
    owner, seconds = saga.lease_owner, saga.lease_seconds
    assert owner is not None and seconds is not None, "a RUNNING saga is created leased"
    return owner, seconds
