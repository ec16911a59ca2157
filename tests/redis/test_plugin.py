"""``open_storage("redis://...")`` finds saga-redis through its entry points."""

from __future__ import annotations

from importlib import metadata

import pytest

from saga_core import installed_storage_schemes, open_storage
from saga_core.testing import make_new_saga
from saga_redis import RedisSagaStorage, open_redis_storage


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_the_entry_points_name_the_factory(scheme: str) -> None:
    (entry_point,) = [
        ep for ep in metadata.entry_points(group="saga_core.storages") if ep.name == scheme
    ]
    assert entry_point.value == "saga_redis._factory:open_redis_storage"
    assert entry_point.dist is not None and entry_point.dist.name == "saga-redis"
    assert entry_point.load() is open_redis_storage
    assert scheme in installed_storage_schemes()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/14", "rediss://127.0.0.1:6380/0"])
def test_open_storage_builds_a_redis_storage_without_connecting(url: str) -> None:
    storage = open_storage(url, key_prefix="plugin:", shards=2)
    assert isinstance(storage, RedisSagaStorage)
    assert (storage.key_prefix, storage.shards) == ("plugin:", 2)


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_storage_opened_by_url_works(redis_url: str, redis_key_prefix: str) -> None:
    async with open_storage(redis_url, key_prefix=redis_key_prefix) as storage:
        new = make_new_saga()
        await storage.create(new)
        assert (await storage.load(new.saga_id)).version == 1
