"""The ``redis`` and ``rediss`` entry points of the ``saga_core.storages`` group."""

from __future__ import annotations

from typing import Any

from saga_core import SagaUsageError

from ._storage import RedisSagaStorage

_OPTIONS = frozenset(
    {
        "key_prefix",
        "retain_finished_seconds",
        "max_journal_entries",
        "shards",
        "max_connections",
        "connect_timeout",
        "command_timeout",
        "ssl_context",
    }
)


def open_redis_storage(url: str, **options: Any) -> RedisSagaStorage:
    """Open a :class:`RedisSagaStorage` for a ``redis://`` or ``rediss://`` URL.

    This is what ``saga_core.open_storage("redis://127.0.0.1:6379/0", ...)`` calls. The
    options are :meth:`RedisSagaStorage.from_url`'s: ``key_prefix``,
    ``retain_finished_seconds``, ``max_journal_entries``, ``shards``, ``max_connections``,
    ``connect_timeout``, ``command_timeout`` and ``ssl_context``.

    Raises:
        SagaUsageError: the URL is not a Redis URL, or an option is unknown or invalid.
    """
    unknown = sorted(options.keys() - _OPTIONS)
    if unknown:
        raise SagaUsageError(
            f"unknown Redis storage option(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(sorted(_OPTIONS))}"
        )
    return RedisSagaStorage.from_url(url, **options)
