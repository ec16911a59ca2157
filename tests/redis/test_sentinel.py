"""Sagas through the Sentinel setup (``servers.py``): runs through the sentinels, and a failover
in the middle of many runs that loses, duplicates and fails no saga.

The storage is opened as applications open it, ``RedisSagaStorage.from_url("redis+sentinel://
...")``; those tests are marked xfail, and not run, while from_url refuses such URLs (until the
coredis transport). A redis-py client from ``Sentinel.master_for`` runs the plain runs today.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis.sentinel import Sentinel

from saga_core import SagaStatus
from saga_redis import RedisSagaStorage

from . import servers
from .test_cluster import Parcel, mediator_for, needs_from_url

pytestmark = [pytest.mark.anyio, pytest.mark.redis_sentinel]

NEEDS_SENTINEL_URLS = needs_from_url("redis+sentinel://127.0.0.1:7211/sagaprimary")


def _primary_client() -> Any:
    """A redis-py client (untyped) on the primary the sentinels name."""
    addresses = [(servers.HOST, port) for port in servers.SENTINEL_PORTS]
    sentinel: Any = Sentinel(addresses, socket_timeout=2.0)  # type: ignore[no-untyped-call]
    return sentinel.master_for(servers.SERVICE_NAME, socket_timeout=2.0)


@pytest.fixture(params=[pytest.param("from_url", marks=NEEDS_SENTINEL_URLS), "redis-py client"])
async def storage(
    request: pytest.FixtureRequest,
    sentinel_setup: servers.SentinelSetup,
    redis_sentinel_url: str,
    sentinel_key_prefix: str,
) -> AsyncIterator[RedisSagaStorage]:
    """A storage on the Sentinel setup's primary (7201) under the test's key prefix, opened
    from the URL or given redis-py's Sentinel-managed client."""
    if request.param == "from_url":
        opened = RedisSagaStorage.from_url(redis_sentinel_url, key_prefix=sentinel_key_prefix)
        async with opened as storage:
            yield storage
        return
    client = _primary_client()
    try:
        async with RedisSagaStorage(client, key_prefix=sentinel_key_prefix) as storage:
            yield storage
    finally:
        client.close()


async def test_sagas_run_through_the_sentinels_and_reach_the_replica(
    storage: RedisSagaStorage,
) -> None:
    mediator = mediator_for(storage)
    done = await mediator.run(Parcel(label="done"))
    refused = await mediator.run(Parcel(label="refused", refuse_charge=True))
    assert (done.status, refused.status) == (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)

    # Once the replica has every write so far (WAIT), it holds the same records.
    assert servers.ask(servers.PRIMARY_PORT, "WAIT", "1", "1000") == 1
    for outcome in (done, refused):
        assert (await storage.load(outcome.saga_id)).status is outcome.status
        key = storage.record_key(outcome.saga_id)
        record = servers.ask(servers.PRIMARY_PORT, "HGETALL", key)
        assert record
        assert servers.ask(servers.REPLICA_PORT, "HGETALL", key) == record


@NEEDS_SENTINEL_URLS
async def test_a_failover_mid_run_loses_duplicates_and_fails_no_saga(
    sentinel_setup: servers.SentinelSetup, redis_sentinel_url: str, sentinel_key_prefix: str
) -> None:
    storage = RedisSagaStorage.from_url(redis_sentinel_url, key_prefix=sentinel_key_prefix)
    mediator = mediator_for(storage)
    started: list[uuid.UUID] = []
    completed: list[uuid.UUID] = []
    enough_before = anyio.Event()
    switched = anyio.Event()
    completed_after: list[uuid.UUID] = []

    async def produce() -> None:
        # Runs sagas one after another until 20 more completed after the switch.
        while len(completed_after) < 20:
            saga_id = uuid.uuid4()
            started.append(saga_id)
            outcome = await mediator.run(Parcel(label="failover"), saga_id=saga_id)
            assert outcome.status is SagaStatus.COMPLETED, outcome.error
            completed.append(saga_id)
            if switched.is_set():
                completed_after.append(saga_id)
            if len(completed) >= 20:
                enough_before.set()

    async with storage:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as task_group:
                for _ in range(4):
                    task_group.start_soon(produce)
                await enough_before.wait()
                # Writes pause while the replica catches up and is promoted; the runs in
                # flight wait, then go on against the new primary.
                await anyio.to_thread.run_sync(sentinel_setup.switch_primary)
                switched.set()
        assert servers.SENTINEL.primary_port() == servers.REPLICA_PORT

        # Read back through the new primary: every saga started is there once, COMPLETED.
        listed = await storage.list_sagas(limit=len(started) + 10)
        assert sorted(record.saga_id for record in listed) == sorted(started)
        for saga_id in completed:
            assert (await storage.load(saga_id)).status is SagaStatus.COMPLETED
    assert len(started) == len(completed) == len(set(started))
