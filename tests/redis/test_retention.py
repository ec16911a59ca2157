"""Retention: finished sagas expire, running ones never do, the journal is bounded, and
finished sagas leave the recovery indexes."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
import redis

from saga_core import SagaNotFoundError, SagaStatus
from saga_core.testing import make_checkpoint, make_entry, make_new_saga
from saga_redis import DEFAULT_RETAIN_FINISHED_SECONDS, RedisSagaStorage

from ._support import keys_under

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _ttl_ms(raw: redis.Redis, storage: RedisSagaStorage, saga_id: object) -> tuple[int, int]:
    return raw.pttl(storage.record_key(saga_id)), raw.pttl(storage.journal_key(saga_id))  # type: ignore[arg-type]


@pytest.mark.parametrize("final", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED])
async def test_a_finished_saga_expires_after_the_retention_time_and_a_running_one_never(
    redis_url: str, redis_key_prefix: str, raw: redis.Redis, final: SagaStatus
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, retain_finished_seconds=600
    ) as storage:
        new = make_new_saga(journal=[make_entry("a")])
        await storage.create(new)
        version = 1
        path = [SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED]
        if final is SagaStatus.COMPENSATED:
            path.append(SagaStatus.COMPENSATING)
        for status in path:
            await storage.checkpoint(
                make_checkpoint(new.saga_id, version, status=status, journal=[make_entry("a")])
            )
            version += 1
            assert _ttl_ms(raw, storage, new.saga_id) == (-1, -1), status  # no expiry
        await storage.checkpoint(
            make_checkpoint(new.saga_id, version, status=final, journal=[make_entry("a")])
        )
        for ttl in _ttl_ms(raw, storage, new.saga_id):
            assert 590_000 < ttl <= 600_000


async def test_the_default_retention_is_seven_days(
    redis_url: str, redis_key_prefix: str, raw: redis.Redis
) -> None:
    assert DEFAULT_RETAIN_FINISHED_SECONDS == 7 * 24 * 3600
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
        new = make_new_saga(journal=[make_entry()])
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED))
        record_ttl, journal_ttl = _ttl_ms(raw, storage, new.saga_id)
        assert 7 * 24 * 3600 * 1000 - 60_000 < record_ttl == pytest.approx(journal_ttl, abs=1000)


async def test_retention_none_keeps_finished_sagas(
    redis_url: str, redis_key_prefix: str, raw: redis.Redis
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, retain_finished_seconds=None
    ) as storage:
        new = make_new_saga(journal=[make_entry()])
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED))
        assert _ttl_ms(raw, storage, new.saga_id) == (-1, -1)


async def test_an_expired_saga_is_gone_with_its_journal_and_index_entries(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, retain_finished_seconds=0.2
    ) as storage:
        running = make_new_saga(lease_seconds=0.1)
        await storage.create(running)
        finished = make_new_saga(journal=[make_entry()])
        await storage.create(finished)
        await storage.checkpoint(make_checkpoint(finished.saga_id, 1, status=SagaStatus.COMPLETED))
        await anyio.sleep(0.4)
        with pytest.raises(SagaNotFoundError, match="expired"):
            await storage.load(finished.saga_id)
        with pytest.raises(SagaNotFoundError):
            await storage.history(finished.saga_id)
        # The running saga is still there, and recoverable now that its lease ran out.
        assert [r.saga_id for r in await storage.list_recoverable()] == [running.saga_id]
        shard = f"{redis_key_prefix}{{0}}:"
        assert keys_under(redis_url, redis_key_prefix) == [
            f"{shard}meta",
            f"{shard}record:{running.saga_id}",
            f"{shard}updated",
        ]


async def test_finished_sagas_leave_the_recovery_indexes(
    redis_url: str, redis_key_prefix: str, raw: redis.Redis
) -> None:
    async with RedisSagaStorage.from_url(redis_url, key_prefix=redis_key_prefix) as storage:
        new = make_new_saga()
        await storage.create(new)
        updated = f"{redis_key_prefix}{{0}}:updated"
        member = str(new.saga_id)
        assert raw.zscore(updated, member) is not None
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, lease_seconds=None))
        assert raw.zscore(updated, member) is not None  # unleased: recoverable
        await storage.checkpoint(make_checkpoint(new.saga_id, 2, status=SagaStatus.COMPLETED))
        assert raw.zscore(updated, member) is None


async def test_the_journal_keeps_the_newest_entries_up_to_its_bound(
    redis_url: str, redis_key_prefix: str, raw: redis.Redis
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, max_journal_entries=5
    ) as storage:
        written = [make_entry(f"s{i}") for i in range(12)]
        new = make_new_saga(journal=written[:3])
        await storage.create(new)
        assert [e.step_id for e in await storage.history(new.saga_id)] == ["s0", "s1", "s2"]
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=written[3:7]))
        await storage.checkpoint(make_checkpoint(new.saga_id, 2, journal=written[7:]))
        assert await storage.history(new.saga_id) == written[-5:]
        assert raw.llen(storage.journal_key(new.saga_id)) == 5


async def test_a_journal_bound_of_none_keeps_every_entry(
    redis_url: str, redis_key_prefix: str
) -> None:
    async with RedisSagaStorage.from_url(
        redis_url, key_prefix=redis_key_prefix, max_journal_entries=None
    ) as storage:
        written = [make_entry(f"s{i}") for i in range(2500)]  # more than one RPUSH batch
        new = make_new_saga(journal=written[:1200])
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, journal=written[1200:]))
        assert await storage.history(new.saga_id) == written
