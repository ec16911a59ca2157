"""The Redis Cluster and Sentinel setups of ``servers.py`` are what the saga tests assume: three
masters sharing every slot (and clusters of one to three masters on ports of their own, formed
the same way, as the benchmarks start them), and a primary that a failover moves to its
replica without losing an acknowledged write, while a client that asks the sentinels keeps
writing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, MovedError
from redis.sentinel import Sentinel

from . import servers
from .servers import HOST, SERVICE_NAME, ask, pairs

# --- the cluster -----------------------------------------------------------------------------


def _owner(cluster: RedisCluster, key: str) -> int:
    """The port of the node that holds ``key``'s slot."""
    return int(cluster.get_node_from_key(key).port)  # type: ignore[no-untyped-call]


#: Ports of the clusters a test starts of its own, by their number of masters.
OWN_CLUSTERS = {1: (7111,), 2: (7121, 7122), 3: (7131, 7132, 7133)}


def _slot_owners(port: int) -> dict[int, tuple[str, int]]:
    """Every slot's master as the node on ``port`` names it to clients; no slot has replicas."""
    owners: dict[int, tuple[str, int]] = {}
    for start, end, *nodes in ask(port, "CLUSTER", "SLOTS"):
        assert len(nodes) == 1, f"slots {start}-{end} have replicas: {nodes}"
        owners.update(dict.fromkeys(range(start, end + 1), (nodes[0][0], nodes[0][1])))
    return owners


def _assert_masters_share_every_slot(ports: tuple[int, ...]) -> None:
    """Every node names the same owners: each master one run of slots, all of about one
    size, together every slot."""
    views = [_slot_owners(port) for port in ports]
    assert all(view == views[0] for view in views)
    owners = views[0]
    assert sorted(owners) == list(range(servers.CLUSTER_SLOTS))
    runs = [sorted(s for s, owner in owners.items() if owner == (HOST, p)) for p in ports]
    assert all(run == list(range(run[0], run[-1] + 1)) for run in runs)
    assert max(map(len, runs)) - min(map(len, runs)) <= 1


def test_three_masters_without_replicas_share_every_slot(
    redis_cluster_nodes: list[tuple[str, int]],
) -> None:
    assert {port for _, port in redis_cluster_nodes} == set(servers.CLUSTER_PORTS)
    _assert_masters_share_every_slot(servers.CLUSTER_PORTS)


@pytest.mark.redis_cluster
@pytest.mark.parametrize("masters", sorted(OWN_CLUSTERS))
def test_a_cluster_of_one_to_three_masters_forms_serves_and_stops_by_pid(
    masters: int, own_setup: Callable[[servers.Setup], None], tmp_path: Path
) -> None:
    setup = servers.ClusterSetup(f"cluster-{masters}", OWN_CLUSTERS[masters], under=tmp_path)
    own_setup(setup)
    assert servers.status(setup) is None
    _assert_masters_share_every_slot(setup.ports)
    cluster = RedisCluster(host=HOST, port=setup.ports[0], decode_responses=True)
    try:
        # A key on every master, through a client that found the others from the first.
        keys = {_owner(cluster, f"{{{n}}}"): f"{{{n}}}:key" for n in range(100)}
        assert set(keys) == set(setup.ports)
        for owner, key in keys.items():
            cluster.set(key, owner)
    finally:
        cluster.close()
    for owner, key in keys.items():
        assert ask(owner, "GET", key) == str(owner)
    assert sorted(servers.stop(setup)) == sorted(setup.ports)
    for port in setup.ports:
        with pytest.raises(redis.ConnectionError):
            ask(port, "PING")


def test_keys_with_different_hash_tags_land_on_different_nodes(
    redis_cluster_nodes: list[tuple[str, int]], cluster_key_prefix: str
) -> None:
    host, port = redis_cluster_nodes[0]
    cluster = RedisCluster(host=host, port=port, decode_responses=True)
    try:
        # A hash tag for each node: the first of {0}, {1}, {2} ... whose slot the node holds.
        tags: dict[int, str] = {}
        for number in range(100):
            owner = _owner(cluster, f"{{{number}}}")
            tags.setdefault(owner, str(number))
        assert set(tags) == set(servers.CLUSTER_PORTS)
        keys = {owner: f"{cluster_key_prefix}{{{tag}}}:key" for owner, tag in tags.items()}
        for owner, key in keys.items():
            cluster.set(key, owner)
    finally:
        cluster.close()
    for owner, key in keys.items():
        assert ask(owner, "GET", key) == str(owner)
        for other in set(keys) - {owner}:
            # The node does not hold the others' keys: it redirects to their owner.
            with pytest.raises(MovedError) as moved:
                ask(owner, "GET", keys[other])
            assert (moved.value.host, moved.value.port) == (HOST, other)


def test_one_command_may_touch_keys_of_one_hash_tag_only(
    redis_cluster_nodes: list[tuple[str, int]], cluster_key_prefix: str
) -> None:
    # Each write of the storage is one script over one saga's keys, which share a tag.
    host, port = redis_cluster_nodes[0]
    cluster = RedisCluster(host=host, port=port, decode_responses=True)
    try:
        same = [f"{cluster_key_prefix}{{7}}:a", f"{cluster_key_prefix}{{7}}:b"]
        assert cluster.eval("return redis.call('MSET', KEYS[1], 1, KEYS[2], 2)", 2, *same) == "OK"
        assert cluster.mget(same) == ["1", "2"]
        # Keys of two tags, even on one node, are refused together.
        owner = _owner(cluster, same[0])
        number = next(n for n in range(8, 10_000) if _owner(cluster, f"{{{n}}}") == owner)
        apart = [same[0], f"{cluster_key_prefix}{{{number}}}:a"]
        with pytest.raises(ClusterCrossSlotError):
            ask(owner, "MSET", apart[0], "1", apart[1], "2")
    finally:
        cluster.close()


# --- the Sentinel setup ----------------------------------------------------------------------


def _sentinel() -> Any:
    """redis-py's Sentinel client (untyped) on the three sentinels."""
    addresses = [(HOST, port) for port in servers.SENTINEL_PORTS]
    return Sentinel(addresses, socket_timeout=2.0)  # type: ignore[no-untyped-call]


def test_the_sentinels_know_the_primary_its_replica_and_each_other(
    sentinel_setup: servers.SentinelSetup, sentinel_key_prefix: str
) -> None:
    sentinel = _sentinel()
    assert sentinel.discover_master(SERVICE_NAME) == (HOST, servers.PRIMARY_PORT)
    assert sentinel.discover_slaves(SERVICE_NAME) == [(HOST, servers.REPLICA_PORT)]
    for port in servers.SENTINEL_PORTS:
        others = set(servers.SENTINEL_PORTS) - {port}
        known = ask(port, "SENTINEL", "SENTINELS", SERVICE_NAME)
        assert {int(pairs(entry)["port"]) for entry in known} == others
        assert ask(port, "SENTINEL", "CKQUORUM", SERVICE_NAME).startswith("OK 3 usable")
    # A write to the primary reaches the replica (WAIT: once one replica acknowledged it).
    primary = sentinel.master_for(SERVICE_NAME, decode_responses=True)
    replica = sentinel.slave_for(SERVICE_NAME, decode_responses=True)
    try:
        primary.set(f"{sentinel_key_prefix}copied", "yes")
        assert primary.execute_command("WAIT", 1, 0) == 1
        assert replica.get(f"{sentinel_key_prefix}copied") == "yes"
    finally:
        primary.close()
        replica.close()


@pytest.mark.anyio
async def test_a_failover_moves_the_primary_and_a_sentinel_client_keeps_writing(
    sentinel_setup: servers.SentinelSetup, sentinel_key_prefix: str
) -> None:
    client = _sentinel().master_for(SERVICE_NAME, socket_timeout=2.0, decode_responses=True)
    acknowledged: list[int] = []

    def write(number: int) -> bool:
        try:
            client.set(f"{sentinel_key_prefix}{number}", number)
        except redis.RedisError:
            # The old primary refuses writes (NOREPLICAS) once its replica is promoted: drop
            # the connections, so that the next ones ask the sentinels where the primary is.
            client.connection_pool.disconnect()
            return False
        return True

    async def write_next() -> None:
        number = len(acknowledged)
        if await anyio.to_thread.run_sync(write, number):
            acknowledged.append(number)
        else:
            await anyio.sleep(0.05)

    switched = anyio.Event()
    new_primary = []

    async def switch() -> None:
        new_primary.append(await anyio.to_thread.run_sync(sentinel_setup.switch_primary))
        switched.set()

    try:
        with anyio.fail_after(60):
            while len(acknowledged) < 20:
                await write_next()
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(switch)
                while not switched.is_set():
                    await write_next()
            after_switch = len(acknowledged) + 20
            while len(acknowledged) < after_switch:
                await write_next()
    finally:
        client.close()

    assert new_primary == [servers.REPLICA_PORT]
    for port in servers.SENTINEL_PORTS:
        assert sentinel_setup.primary_port(port) == servers.REPLICA_PORT
    # Every acknowledged write is on the new primary, those from before the switch included.
    keys = [f"{sentinel_key_prefix}{number}" for number in acknowledged]
    assert ask(servers.REPLICA_PORT, "MGET", *keys) == [str(n) for n in acknowledged]
    # The old primary takes no write that the new one would not see.
    with pytest.raises(redis.ResponseError, match=r"^(NOREPLICAS|READONLY) "):
        ask(servers.PRIMARY_PORT, "SET", f"{sentinel_key_prefix}late", "lost")
