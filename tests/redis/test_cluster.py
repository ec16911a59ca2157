"""Sagas on the Redis Cluster of three masters (``servers.py``): the storage contract, whole
runs spread over every node, a worker recovering stalled sagas, and the CLI.

The storage is opened as applications open it, ``RedisSagaStorage.from_url("redis+cluster://
...")``, and also given a cluster client: a coredis one (the runs), or a redis-py one, driven in
worker threads (the contract too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.to_thread
import coredis
import pytest
import redis.asyncio
from coredis.typing import Node
from redis.cluster import RedisCluster

from saga_core import (
    RecoveryWorker,
    Response,
    Saga,
    SagaContext,
    SagaMediator,
    SagaStatus,
    SagaStepHandler,
    SagaStorage,
    bootstrap,
)
from saga_core._cli.main import main as cli_main
from saga_redis import RedisSagaStorage

from . import servers
from .test_contract import RedisDamage

pytestmark = [pytest.mark.anyio, pytest.mark.redis_cluster]

#: The hash slots the sagas are spread over: shards {0} to {5} fall on all three nodes.
SHARDS = 6


def _cluster_client(nodes: list[tuple[str, int]]) -> RedisCluster:
    host, port = nodes[0]
    return RedisCluster(host=host, port=port)


@contextlib.asynccontextmanager
async def _coredis_cluster(
    nodes: list[tuple[str, int]],
) -> AsyncIterator[coredis.RedisCluster[bytes]]:
    """A coredis cluster client, open."""
    startup = [Node(host=host, port=port) for host, port in nodes]
    client = coredis.RedisCluster(startup_nodes=startup)
    async with client:
        yield client


# --- the storage contract --------------------------------------------------------------------


class ClusterDamage(RedisDamage):
    """Damages records through a cluster client, which finds the node of each record."""

    @pytest.fixture(autouse=True)
    def raw(self, redis_cluster_nodes: list[tuple[str, int]]) -> Iterator[RedisCluster]:
        host, port = redis_cluster_nodes[0]
        self._raw = client = RedisCluster(host=host, port=port, decode_responses=True)
        self._undamaged = {}
        yield client
        client.close()


class TestClusterFromUrlContract(ClusterDamage):
    """``RedisSagaStorage.from_url("redis+cluster://...")``."""

    @pytest.fixture
    async def storage(
        self, redis_cluster_url: str, cluster_key_prefix: str
    ) -> AsyncIterator[SagaStorage]:
        async with RedisSagaStorage.from_url(
            redis_cluster_url, key_prefix=cluster_key_prefix, shards=SHARDS
        ) as storage:
            yield storage


class TestClusterRedisPyContract(ClusterDamage):
    """A synchronous redis-py ``RedisCluster`` client, in worker threads."""

    @pytest.fixture
    async def storage(
        self, redis_cluster_nodes: list[tuple[str, int]], cluster_key_prefix: str
    ) -> AsyncIterator[SagaStorage]:
        client = _cluster_client(redis_cluster_nodes)
        try:
            async with RedisSagaStorage(
                client, key_prefix=cluster_key_prefix, shards=SHARDS
            ) as storage:
                yield storage
        finally:
            client.close()


# --- sagas -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Parcel(SagaContext):
    label: str
    refuse_charge: bool = False
    packed: bool = False
    charged: bool = False


@dataclasses.dataclass
class Stall:
    """While ``on``, every saga waits forever in its ``pack`` step, as if its process hung;
    ``arrived`` is set once ``expected`` sagas wait there."""

    on: bool = False
    expected: int = 0
    waiting: int = 0
    arrived: anyio.Event | None = None


STALL = Stall()


class Pack(SagaStepHandler[Parcel, Response]):
    name = "pack"

    async def act(self, context: Parcel) -> Response:
        if STALL.on:
            STALL.waiting += 1
            if STALL.waiting == STALL.expected and STALL.arrived is not None:
                STALL.arrived.set()
            await anyio.sleep_forever()
        context.packed = True
        return Response()

    async def compensate(self, context: Parcel) -> None:
        context.packed = False


class Charge(SagaStepHandler[Parcel, Response]):
    name = "charge"

    async def act(self, context: Parcel) -> Response:
        if context.refuse_charge:
            raise RuntimeError("card refused")
        context.charged = True
        return Response()

    async def compensate(self, context: Parcel) -> None:
        context.charged = False


class ParcelSaga(Saga[Parcel]):
    name = "parcel"
    steps = [Pack, Charge]


def mediator_for(storage: SagaStorage) -> SagaMediator:
    return bootstrap(sagas_mapper=lambda m: m.bind(Parcel, ParcelSaga), saga_storage=storage)


def ids_on_every_shard(rounds: int = 1) -> list[uuid.UUID]:
    """``rounds`` saga ids per shard, so that every node holds sagas (a saga's shard is its
    id modulo the shard count)."""
    ids: list[uuid.UUID] = []
    for shard in range(SHARDS):
        while len(ids) < (shard + 1) * rounds:
            saga_id = uuid.uuid4()
            if saga_id.int % SHARDS == shard:
                ids.append(saga_id)
    return ids


@pytest.fixture(autouse=True)
def _no_stall() -> Iterator[None]:
    yield
    STALL.on, STALL.expected, STALL.waiting, STALL.arrived = False, 0, 0, None


@pytest.fixture(params=["from_url", "coredis client", "redis-py client"])
async def storage(
    request: pytest.FixtureRequest,
    redis_cluster_nodes: list[tuple[str, int]],
    redis_cluster_url: str,
    cluster_key_prefix: str,
) -> AsyncIterator[RedisSagaStorage]:
    """A storage on the cluster under the test's key prefix, opened from the URL or given a
    cluster client."""
    if request.param == "from_url":
        async with RedisSagaStorage.from_url(
            redis_cluster_url, key_prefix=cluster_key_prefix, shards=SHARDS
        ) as storage:
            yield storage
        return
    if request.param == "coredis client":
        async with (
            _coredis_cluster(redis_cluster_nodes) as cluster,
            RedisSagaStorage(cluster, key_prefix=cluster_key_prefix, shards=SHARDS) as storage,
        ):
            yield storage
        return
    client = _cluster_client(redis_cluster_nodes)
    try:
        async with RedisSagaStorage(client, key_prefix=cluster_key_prefix, shards=SHARDS) as opened:
            yield opened
    finally:
        client.close()


def _nodes_holding(prefix: str) -> set[int]:
    """The ports of the nodes that hold a saga record under ``prefix``."""
    pattern = f"{prefix}*:record:*"
    return {port for port in servers.CLUSTER_PORTS if servers.ask(port, "KEYS", pattern)}


async def test_sagas_run_to_their_end_on_every_node(
    storage: RedisSagaStorage, cluster_key_prefix: str
) -> None:
    mediator = mediator_for(storage)
    saga_ids = ids_on_every_shard(rounds=2)
    refused = set(saga_ids[::3])
    outcomes = {}

    async def run(saga_id: uuid.UUID) -> None:
        parcel = Parcel(label=str(saga_id), refuse_charge=saga_id in refused)
        outcomes[saga_id] = await mediator.run(parcel, saga_id=saga_id)

    async with anyio.create_task_group() as task_group:
        for saga_id in saga_ids:
            task_group.start_soon(run, saga_id)

    for saga_id, outcome in outcomes.items():
        record = await storage.load(saga_id)
        if saga_id in refused:
            assert (outcome.status, record.status) == (SagaStatus.COMPENSATED,) * 2
            assert (outcome.context.packed, outcome.context.charged) == (False, False)
            assert record.error == "RuntimeError: card refused"
        else:
            assert (outcome.status, record.status) == (SagaStatus.COMPLETED,) * 2
            assert (outcome.context.packed, outcome.context.charged) == (True, True)
        assert json.loads(record.context)["label"] == str(saga_id)
    assert outcomes.keys() == set(saga_ids)
    assert _nodes_holding(cluster_key_prefix) == set(servers.CLUSTER_PORTS)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # an asyncio client
async def test_sagas_run_one_after_another_through_a_redis_py_asyncio_cluster_client(
    redis_cluster_nodes: list[tuple[str, int]], cluster_key_prefix: str
) -> None:
    # One at a time, its layout learned first: redis-py 8.1's asyncio cluster client fails
    # some of many concurrent first calls (see the package README's table of clients).
    host, port = redis_cluster_nodes[0]
    client = redis.asyncio.RedisCluster(host=host, port=port)
    try:
        await client.initialize()
        async with RedisSagaStorage(client, key_prefix=cluster_key_prefix, shards=SHARDS) as opened:
            mediator = mediator_for(opened)
            for saga_id in ids_on_every_shard():
                refuse = saga_id.int % 2 == 0
                outcome = await mediator.run(
                    Parcel(label="asyncio", refuse_charge=refuse), saga_id=saga_id
                )
                expected = SagaStatus.COMPENSATED if refuse else SagaStatus.COMPLETED
                assert (outcome.status, (await opened.load(saga_id)).status) == (expected,) * 2
    finally:
        await client.aclose()
    assert _nodes_holding(cluster_key_prefix) == set(servers.CLUSTER_PORTS)


async def test_a_worker_recovers_the_stalled_sagas_of_every_node(
    storage: RedisSagaStorage, cluster_key_prefix: str
) -> None:
    mediator = mediator_for(storage)
    saga_ids = ids_on_every_shard()
    STALL.on, STALL.expected, STALL.arrived = True, len(saga_ids), anyio.Event()
    async with anyio.create_task_group() as task_group:
        for saga_id in saga_ids:
            task_group.start_soon(mediator.run, Parcel(label="stalled"), saga_id)
        await STALL.arrived.wait()
        # The processes 'die': their sagas stay RUNNING, handed back for recovery.
        task_group.cancel_scope.cancel()
    STALL.on = False
    assert {r.saga_id for r in await storage.list_recoverable()} == set(saga_ids)
    assert _nodes_holding(cluster_key_prefix) == set(servers.CLUSTER_PORTS)

    worker = RecoveryWorker(mediator.saga_map, storage, batch_size=len(saga_ids))
    report = await worker.run_once()

    assert (report.claimed, report.completed) == (len(saga_ids), len(saga_ids))
    for saga_id in saga_ids:
        record = await storage.load(saga_id)
        assert (record.status, record.lease_owner) == (SagaStatus.COMPLETED, None)
    assert await storage.list_recoverable() == []


# --- the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["from_url"], indirect=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the CLI picks its own backend
async def test_the_cli_lists_the_sagas_on_the_cluster(
    storage: RedisSagaStorage,
    redis_cluster_url: str,
    cluster_key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mediator = mediator_for(storage)
    saga_ids = ids_on_every_shard()
    for saga_id in saga_ids:
        await mediator.run(Parcel(label="listed"), saga_id=saga_id)
    capsys.readouterr()

    arguments = ["--url", redis_cluster_url, "--option", f"key_prefix={cluster_key_prefix}"]
    arguments += ["--option", f"shards={SHARDS}", "list", "--json"]
    code = await anyio.to_thread.run_sync(cli_main, arguments)

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    listed = json.loads(out)
    assert {uuid.UUID(saga["saga_id"]) for saga in listed} == set(saga_ids)
    assert {saga["status"] for saga in listed} == {"completed"}
