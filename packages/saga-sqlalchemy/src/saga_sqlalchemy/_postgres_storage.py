"""``PostgresSagaStorage``: the SQL storage on PostgreSQL through asyncpg or psycopg, which
also tells workers in every process when work becomes due (``LISTEN``/``NOTIFY``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from saga_core import SagaUsageError, StorageUnavailableError

from ._listen import can_listen, engine_of, listen
from ._runner import bind_dialect
from ._storage import SqlAlchemySagaStorage


class PostgresSagaStorage(SqlAlchemySagaStorage):
    """:class:`SqlAlchemySagaStorage` on PostgreSQL through asyncpg or psycopg (sync or
    async), with the optional capability :class:`saga_core.storage.WorkNotifications`: a
    worker on it listens for due work and claims it at once instead of at its next poll.

    ``open_storage`` returns one for a ``postgresql`` URL; build it yourself around your own
    engine (it takes :class:`SqlAlchemySagaStorage`'s arguments). Every SQL storage on
    PostgreSQL, through any driver, sends the notifications (see the README's "Work
    notifications"); only this class listens.

    Raises:
        SagaUsageError: ``bind`` is not a PostgreSQL database through asyncpg or psycopg.
    """

    def __init__(self, bind: Any, **options: Any) -> None:
        dialect = bind_dialect(bind)
        if not can_listen(dialect):
            found = "an unsupported bind" if dialect is None else f"{dialect.name}+{dialect.driver}"
            raise SagaUsageError(
                f"PostgresSagaStorage needs a PostgreSQL engine through asyncpg or psycopg, got "
                f"{found}; use SqlAlchemySagaStorage for other databases (its workers poll)"
            )
        super().__init__(bind, **options)

    @property
    def notify_channel(self) -> str:
        """The ``NOTIFY`` channel of this storage's table (``<schema>.<table>:work``)."""
        channel = self._waits.channel
        assert channel is not None, "a PostgreSQL storage has a channel"
        return channel

    @contextlib.asynccontextmanager
    async def work_notifications(self) -> AsyncIterator[AsyncIterator[None]]:
        """Listen for sagas that become due, on a connection of its own (see
        :class:`saga_core.storage.WorkNotifications`): a WAITING saga stored due (a
        detached start), a signal a WAITING saga waits for, a cancel of a WAITING saga.
        The value yields once per notification until the context exits.

        Raises:
            StorageUnavailableError: on entering, the storage is closed or PostgreSQL cannot
                be reached; while iterating, the listening connection was lost.
        """
        if self._closed:
            raise StorageUnavailableError("storage is closed")
        async with listen(engine_of(self._runner), self.notify_channel) as notifications:
            yield notifications
