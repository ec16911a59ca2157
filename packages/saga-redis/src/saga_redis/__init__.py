"""saga-redis: saga-core storage on Redis, with atomic checkpoints, leases and retention.

Use it directly::

    from saga_redis import RedisSagaStorage

    storage = RedisSagaStorage(redis.asyncio.Redis(), key_prefix="shop:sagas:")

or through ``saga_core.open_storage("redis://127.0.0.1:6379/0")``, which finds this package
by its entry points. The key layout, durability and cluster notes are in the README.
"""

from ._arguments import DEFAULT_MAX_JOURNAL_ENTRIES as DEFAULT_MAX_JOURNAL_ENTRIES
from ._arguments import DEFAULT_RETAIN_FINISHED_SECONDS as DEFAULT_RETAIN_FINISHED_SECONDS
from ._factory import open_redis_storage as open_redis_storage
from ._keys import DEFAULT_KEY_PREFIX as DEFAULT_KEY_PREFIX
from ._storage import RedisSagaStorage as RedisSagaStorage

__all__ = (
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_JOURNAL_ENTRIES",
    "DEFAULT_RETAIN_FINISHED_SECONDS",
    "RedisSagaStorage",
    "open_redis_storage",
)
