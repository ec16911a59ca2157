"""The entry points of the ``saga_core.storages`` group: one factory for every Redis scheme."""

from __future__ import annotations

from typing import Any

from ._options import resolve_url
from ._storage import RedisSagaStorage


def open_redis_storage(url: str, **options: Any) -> RedisSagaStorage:
    """Open a :class:`RedisSagaStorage` for a Redis URL.

    This is what ``saga_core.open_storage(url, ...)`` calls for the schemes ``redis``,
    ``rediss``, ``unix``, ``redis+cluster``, ``rediss+cluster``, ``redis+sentinel`` and
    ``rediss+sentinel``. The options are :meth:`RedisSagaStorage.from_url`'s (the package
    README's table), given here or in the URL's query; a text value reads as in the query
    (``shards="16"``), which is how the CLI's ``--option shards=16`` arrives.

    Raises:
        SagaUsageError: the URL is not a Redis URL, or an option is unknown, invalid or
            contradicts the URL. Messages never repeat a part of a URL with credentials.
    """
    # Read here too, so that text options reach from_url as the values they stand for.
    _, resolved = resolve_url(url, options)
    given = {name: getattr(resolved, name) for name in options}
    return RedisSagaStorage.from_url(url, **given)
