"""RedisSagaStorage runs the saga-core storage contract, with every kind of client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import ClassVar
from uuid import UUID

import pytest
import redis
import redis.asyncio

from saga_core import SagaStorage
from saga_core.testing import SagaStorageContract, deeply_nested_json
from saga_redis import RedisSagaStorage

pytestmark = pytest.mark.redis

# Where each kind of damage goes in a record hash (see saga_redis._records): the field, the
# separator of its parts and the part's index (None: the whole field), and the damaged value.
_DAMAGE: dict[str, tuple[str, str, int | None, str]] = {
    "context": ("body", "\n", 3, '{"value": 1'),
    "deep_context": ("body", "\n", 3, deeply_nested_json()),
    "applied": ("body", "\n", 2, '["saga_core.testing.bump", 7]'),
    # The head's status: the scripts cannot read the head, so no claim meets the record.
    "status": ("head", " ", 1, "paused"),
    # The head's update time would be met by no claim either (as the status): the record's
    # other timestamp, its creation time, is read by the client only, so a claim meets it.
    "timestamp": ("created", "", None, "yesterday"),
}


class RedisDamage(SagaStorageContract):
    """Damages records with raw Redis commands on their hash (the key layout is in the
    package README): every kind of :data:`saga_core.testing.DAMAGE_KINDS` a record can hold."""

    damage_kinds: ClassVar[tuple[str, ...]] = tuple(_DAMAGE)
    _raw: redis.Redis | redis.RedisCluster  # a cluster's subclass (test_cluster) sets the latter

    @pytest.fixture(autouse=True)
    def raw(self, redis_url: str) -> Iterator[redis.Redis]:
        """A plain client, behind the storage's back."""
        self._raw = client = redis.Redis.from_url(redis_url, decode_responses=True)
        self._undamaged: dict[tuple[UUID, str], str] = {}
        yield client
        client.close()

    def _split(self, storage: SagaStorage, saga_id: UUID, kind: str) -> tuple[str, list[str]]:
        assert isinstance(storage, RedisSagaStorage)
        field, separator, part, _ = _DAMAGE[kind]
        key = storage.record_key(saga_id)
        value = self._raw.hget(key, field)
        assert isinstance(value, str), (key, field)
        if part is None:
            return key, [value]
        return key, value.split(separator, 3 if separator == "\n" else 7)

    def _write(self, key: str, kind: str, parts: list[str]) -> None:
        field, separator, _, _ = _DAMAGE[kind]
        self._raw.hset(key, field, separator.join(parts))

    async def damage_record(self, storage: SagaStorage, saga_id: UUID, kind: str) -> None:
        key, parts = self._split(storage, saga_id, kind)
        index = _DAMAGE[kind][2] or 0
        self._undamaged[saga_id, kind] = parts[index]
        parts[index] = _DAMAGE[kind][3]
        self._write(key, kind, parts)

    async def repair_record(self, storage: SagaStorage, saga_id: UUID, kind: str) -> None:
        key, parts = self._split(storage, saga_id, kind)
        parts[_DAMAGE[kind][2] or 0] = self._undamaged.pop((saga_id, kind))
        self._write(key, kind, parts)


class TestAsyncioClientContract(RedisDamage):
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


class TestSyncClientContract(RedisDamage):
    """A synchronous ``redis.Redis`` client in worker threads: asyncio and trio."""

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        client = redis.Redis.from_url(redis_url)
        try:
            async with RedisSagaStorage(client, key_prefix=redis_key_prefix) as storage:
                yield storage
        finally:
            client.close()


class TestFromUrlContract(RedisDamage):
    """``RedisSagaStorage.from_url`` (what ``open_storage`` uses): its own coredis client, on
    asyncio and trio alike."""

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
            yield storage


class TestShardedContract(RedisDamage):
    """Sagas spread over 4 hash slots: the recovery queries fan out across shards."""

    @pytest.fixture
    async def storage(self, redis_url: str, redis_key_prefix: str) -> AsyncIterator[SagaStorage]:
        async with RedisSagaStorage.from_url(
            redis_url, key_prefix=redis_key_prefix, shards=4
        ) as storage:
            yield storage
