"""RedisSagaStorage runs the saga-core storage contract, with every kind of client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from saga_core import SagaStorage
from saga_core.testing import SagaStorageContract
from saga_redis import RedisSagaStorage

pytestmark = pytest.mark.redis


class TestAsyncioClientContract(SagaStorageContract):
    """A ``redis.asyncio`` client, awaited directly: asyncio only."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            async with RedisSagaStorage(client, key_prefix=redis_key_prefix) as storage:
                yield storage
        finally:
            await client.aclose()


class TestSyncClientContract(SagaStorageContract):
    """A synchronous ``redis.Redis`` client in worker threads: asyncio and trio."""

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        client = redis.Redis.from_url(redis_url)
        try:
            async with RedisSagaStorage(client, key_prefix=redis_key_prefix) as storage:
                yield storage
        finally:
            client.close()


class TestFromUrlContract(SagaStorageContract):
    """``RedisSagaStorage.from_url`` (what ``open_storage`` uses): it picks the asyncio client
    on asyncio and the threaded synchronous client on trio."""

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
            yield storage


class TestShardedContract(SagaStorageContract):
    """Sagas spread over 4 hash slots: the recovery queries fan out across shards."""

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        async with RedisSagaStorage.from_url(
            redis_url, key_prefix=redis_key_prefix, shards=4
        ) as storage:
            yield storage
