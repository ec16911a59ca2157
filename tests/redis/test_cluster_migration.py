"""A live slot migration of the Redis Cluster (``servers.py``) while 40 producers run sagas:
nothing lost, nothing left in the wrong index, no runner told a false conflict.

A saga's keys and its shard's indexes share one hash slot (``{N}``, see ``saga_redis._keys``),
so moving a shard's slot moves both at once, under sagas that are writing them. The test moves
every shard's slot to another master, one at a time, with the protocol ``redis-cli --cluster
reshard`` uses: ``CLUSTER SETSLOT <slot> IMPORTING`` on the target, ``MIGRATING`` on the
source, ``MIGRATE`` of the slot's keys in batches, then ``SETSLOT <slot> NODE`` on every
master. The keys move in a few batches with pauses between them, so the slot stays split
between the two nodes for about a second, as a slot of many thousand sagas would.

While a slot migrates, Redis refuses every script of that shard that names a key the node
does not hold (``TRYAGAIN``, or ``ASK`` once the source holds none); each phase of a move
waits until the servers' error counters (``INFO errorstats``) show that a write met it. Once
the slot has moved, the old owner answers ``MOVED`` to a client that still sends it the
slot's writes: the producers' client may have refreshed its view of the slots by then, so a
second storage, which last wrote before the move, runs one saga of the shard after it.

A second test holds one slot mid-migration for longer than the cluster client follows
``TRYAGAIN`` by itself: the write waits until the slot has moved, as it waits out a failover.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial

import anyio
import anyio.to_thread
import pytest
import redis

from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaMediator,
    SagaOutcome,
    SagaStatus,
    SagaStepHandler,
    bootstrap,
)
from saga_core.storage import StepDirection, StepEvent
from saga_redis import RedisSagaStorage
from saga_redis._keys import KeyLayout

from . import servers

pytestmark = [pytest.mark.anyio, pytest.mark.redis_cluster]

#: The shards, each a hash slot of its own; every one is migrated during the run.
SHARDS = 4
PRODUCERS = 40
#: Sagas each producer runs at least; it goes on running sagas until every move is done.
SAGAS_EACH = 3
#: Each step's pause: runs overlap each other and the moves.
STEP_PAUSE_SECONDS = 0.02
#: A slot's keys move in this many MIGRATE calls, this long apart.
MIGRATE_BATCHES = 6
BATCH_PAUSE_SECONDS = 0.15
#: Sagas of a shard that must be mid-run (written, not finished) when its move starts.
MID_RUN = 2
#: The longest a move waits for a write to meet one of its phases, or for mid-run sagas.
PHASE_WAIT_SECONDS = 20.0
_POLL_SECONDS = 0.01
#: How long the focused test keeps a slot mid-migration: longer than a cluster client follows
#: TRYAGAIN by itself (16 tries, well under a second).
HOLD_SECONDS = 2.0


# --- the sagas -------------------------------------------------------------------------------


@dataclasses.dataclass
class Delivery(SagaContext):
    producer: int
    done: list[str] = dataclasses.field(default_factory=list)


class _Step(SagaStepHandler[Delivery, Response]):
    async def act(self, context: Delivery) -> Response:
        await anyio.sleep(STEP_PAUSE_SECONDS)
        context.done.append(self.step_id)
        return Response()

    async def compensate(self, context: Delivery) -> None:
        context.done.remove(self.step_id)


class Reserve(_Step):
    name = "reserve"


class Charge(_Step):
    name = "charge"


class Ship(_Step):
    name = "ship"


STEP_NAMES = ["reserve", "charge", "ship"]


class DeliverySaga(Saga[Delivery]):
    name = "delivery"
    steps = [Reserve, Charge, Ship]


def _mediator(storage: RedisSagaStorage) -> SagaMediator:
    return bootstrap(sagas_mapper=lambda m: m.bind(Delivery, DeliverySaga), saga_storage=storage)


# --- moving slots ----------------------------------------------------------------------------


def owner_of(slot: int, port: int) -> int:
    """The port of the master that owns ``slot``, as the node on ``port`` sees it."""
    for start, end, (_host, owner, *_rest), *_replicas in servers.ask(port, "CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(owner)
    raise AssertionError(f"no node owns slot {slot}")


def redirects(ports: tuple[int, ...], reply: str) -> dict[int, int]:
    """How many times each node has answered with the error ``reply`` (``MOVED``, ``ASK``,
    ``TRYAGAIN``) since it started."""
    counts = {}
    for port in ports:
        stats = servers.ask(port, "INFO", "errorstats")
        counts[port] = int(stats.get(f"errorstat_{reply}", {}).get("count", 0))
    return counts


@dataclasses.dataclass
class Move:
    """One slot's move, and what the servers showed during it."""

    slot: int
    source: int
    target: int
    mid_run: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)
    """The sagas of the slot written and not finished when the move started, by version."""
    met: set[str] = dataclasses.field(default_factory=set)
    """The replies writes got from the servers: TRYAGAIN and ASK during the move, MOVED
    from the old owner after it."""


class SlotMover:
    """Moves hash slots between the masters on ``ports`` (blocking: run it in a thread)."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        #: The moves begun, in order: :meth:`settle` undoes them.
        self.moves: list[Move] = []
        self.ids = {port: servers.ask(port, "CLUSTER", "MYID") for port in ports}

    def move(self, move: Move, *, paced: bool) -> None:
        """Move ``move.slot`` from its source to its target. ``paced``: in batches with
        pauses, and the TRYAGAIN and ASK phases each held until a write has met it (recorded
        in ``move.met``)."""
        source = move.source
        before = {reply: redirects(self.ports, reply) for reply in ("TRYAGAIN", "ASK")}

        def hold(reply: str, *ports: int) -> None:
            """Wait until a node of ``ports`` (default: any) has answered ``reply`` since the
            move began, for at most PHASE_WAIT_SECONDS; record ``reply`` if it did."""
            deadline = time.monotonic() + PHASE_WAIT_SECONDS
            while time.monotonic() < deadline:
                now = redirects(self.ports, reply)
                if any(now[port] > before[reply][port] for port in ports or self.ports):
                    move.met.add(reply)
                    return
                time.sleep(_POLL_SECONDS)

        self.begin(move)
        if paced:
            # Every write of the shard now names a key one of the two nodes lacks (the
            # `parked` index, if nothing else): refused with TRYAGAIN until the move ends.
            hold("TRYAGAIN")
        self.transfer(move, paced=paced)
        if paced:
            # The source holds none of the slot's keys: it sends every write on with ASK.
            hold("ASK", source)
        self.assign(move)

    def settle(self, move: Move) -> None:
        """Finish ``move`` wherever it stopped, then move the slot back to its source."""
        self.begin(move, tolerant=True)
        self.transfer(move, paced=False)
        self.assign(move)
        self.move(Move(move.slot, source=move.target, target=move.source), paced=False)

    def begin(self, move: Move, *, tolerant: bool = False) -> None:
        """The target imports the slot, the source migrates it. ``tolerant``: either may
        have been done already, or the move be past it (the target owns the slot)."""
        slot = str(move.slot)
        steps = ((move.target, "IMPORTING", move.source), (move.source, "MIGRATING", move.target))
        for port, state, other in steps:
            command = ("CLUSTER", "SETSLOT", slot, state, self.ids[other])
            if tolerant:
                with contextlib.suppress(redis.ResponseError):
                    servers.ask(port, *command)
            else:
                servers.ask(port, *command)

    def transfer(self, move: Move, *, paced: bool) -> None:
        """MIGRATE every key of the slot from the source to the target; ``paced``: in
        MIGRATE_BATCHES calls, BATCH_PAUSE_SECONDS apart."""
        slot, source = str(move.slot), move.source
        batch = 1000
        if paced:
            count = int(servers.ask(source, "CLUSTER", "COUNTKEYSINSLOT", slot))
            batch = max(1, -(-count // MIGRATE_BATCHES))
        while keys := servers.ask(source, "CLUSTER", "GETKEYSINSLOT", slot, str(batch)):
            address = (servers.HOST, str(move.target))
            servers.ask(source, "MIGRATE", *address, "", "0", "5000", "KEYS", *keys)
            if paced:
                time.sleep(BATCH_PAUSE_SECONDS)

    def assign(self, move: Move) -> None:
        """Give the slot to the target on every master, the target first."""
        others = [port for port in self.ports if port not in (move.source, move.target)]
        for port in (move.target, move.source, *others):
            servers.ask(port, "CLUSTER", "SETSLOT", str(move.slot), "NODE", self.ids[move.target])


# --- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Load:
    """What the producers started, hold and got back."""

    started: list[uuid.UUID] = dataclasses.field(default_factory=list)
    in_flight: set[uuid.UUID] = dataclasses.field(default_factory=set)
    outcomes: dict[uuid.UUID, SagaOutcome[Delivery]] = dataclasses.field(default_factory=dict)
    failures: list[tuple[uuid.UUID, Exception]] = dataclasses.field(default_factory=list)
    """Every error a run raised: a false conflict, or a write that gave up."""


@pytest.fixture
async def storage(
    redis_cluster_url: str, cluster_key_prefix: str
) -> AsyncIterator[RedisSagaStorage]:
    async with RedisSagaStorage.from_url(
        redis_cluster_url, key_prefix=cluster_key_prefix, shards=SHARDS
    ) as storage:
        yield storage


@pytest.fixture
def mover(
    redis_cluster_nodes: list[tuple[str, int]], cluster_key_prefix: str
) -> Iterator[SlotMover]:
    """Moves slots; afterwards every slot it began to move is back with its owner, before
    ``cluster_key_prefix`` deletes the test's keys (node by node, so they must be where
    their node serves them) and for the tests after this one."""
    mover = SlotMover(tuple(port for _host, port in redis_cluster_nodes))
    yield mover
    for move in reversed(mover.moves):
        mover.settle(move)


def _read_heads(
    storage: RedisSagaStorage, port: int, saga_ids: list[uuid.UUID]
) -> list[str | None]:
    """The ``head`` field of each saga's record on the node on ``port`` (None: not there)."""
    return [servers.ask(port, "HGET", storage.record_key(saga_id), "head") for saga_id in saga_ids]


async def _mid_run(
    storage: RedisSagaStorage, load: Load, shard: int, slot: int, port: int
) -> dict[uuid.UUID, int]:
    """At least MID_RUN sagas of ``shard`` that are written (on the node on ``port``) and
    not finished, each with its stored version."""
    deadline = anyio.current_time() + PHASE_WAIT_SECONDS
    while anyio.current_time() < deadline:
        candidates = [saga_id for saga_id in load.in_flight if saga_id.int % SHARDS == shard]
        heads = await anyio.to_thread.run_sync(_read_heads, storage, port, candidates)
        found = {
            saga_id: int(head.split(" ")[0])
            for saga_id, head in zip(candidates, heads, strict=True)
            if head is not None and head.split(" ")[1] == "running"
        }
        if len(found) >= MID_RUN:
            for saga_id in found:
                for key in (storage.record_key(saga_id), storage.journal_key(saga_id)):
                    assert servers.ask(port, "CLUSTER", "KEYSLOT", key) == slot
            return found
        await anyio.sleep(_POLL_SECONDS)
    raise AssertionError(f"no {MID_RUN} sagas of shard {shard} were mid-run on {port}")


async def test_a_live_slot_migration_loses_no_saga_and_no_runner_sees_a_conflict(
    storage: RedisSagaStorage, mover: SlotMover, redis_cluster_url: str, cluster_key_prefix: str
) -> None:
    layout = KeyLayout(cluster_key_prefix, SHARDS)
    ports = mover.ports
    slots = [
        servers.ask(ports[0], "CLUSTER", "KEYSLOT", shard.updated) for shard in layout.all_shards()
    ]
    load = Load()
    moved = anyio.Event()

    async def run(mediator: SagaMediator, producer: int, saga_id: uuid.UUID) -> None:
        load.started.append(saga_id)
        load.in_flight.add(saga_id)
        try:
            outcome = await mediator.run(Delivery(producer=producer), saga_id=saga_id)
        except Exception as exc:
            load.failures.append((saga_id, exc))
        else:
            load.outcomes[saga_id] = outcome
        finally:
            load.in_flight.discard(saga_id)

    async def produce(mediator: SagaMediator, producer: int) -> None:
        runs = 0
        while runs < SAGAS_EACH or not moved.is_set():
            await run(mediator, producer, uuid.uuid4())
            runs += 1

    async def migrate(latecomer: SagaMediator) -> None:
        try:
            for shard, slot in enumerate(slots):
                source = owner_of(slot, ports[0])
                target = ports[(ports.index(source) + 1) % len(ports)]
                move = Move(slot, source, target)
                move.mid_run = await _mid_run(storage, load, shard, slot, source)
                mover.moves.append(move)
                await anyio.to_thread.run_sync(partial(mover.move, move, paced=True))
                told = redirects((source,), "MOVED")[source]
                await run(latecomer, PRODUCERS, *_ids_in_shard(shard, 1))
                if redirects((source,), "MOVED")[source] > told:
                    move.met.add("MOVED")
        finally:
            moved.set()

    async with RedisSagaStorage.from_url(
        redis_cluster_url, key_prefix=cluster_key_prefix, shards=SHARDS
    ) as second:
        latecomer = _mediator(second)
        # Its client learns the slots' owners now, and keeps that view while it is idle.
        await run(latecomer, PRODUCERS, uuid.uuid4())
        mediator = _mediator(storage)
        async with anyio.create_task_group() as task_group:
            for producer in range(PRODUCERS):
                task_group.start_soon(produce, mediator, producer)
            task_group.start_soon(migrate, latecomer)

    # No runner was told a conflict, nor gave up on a write.
    assert [f"{saga_id}: {exc!r}" for saga_id, exc in load.failures] == []
    # Every slot moved under writes: each phase of each move met one, and the sagas mid-run
    # when it began were written on after it, where the slot is now.
    assert [move.slot for move in mover.moves] == slots
    for move in mover.moves:
        assert move.met == {"TRYAGAIN", "ASK", "MOVED"}, move
        assert {owner_of(move.slot, port) for port in ports} == {move.target}
        for saga_id, version in move.mid_run.items():
            assert (await storage.load(saga_id)).version > version
            assert servers.ask(move.target, "EXISTS", storage.record_key(saga_id)) == 1
    # Nothing lost: every saga started ran each step once, to its end.
    assert load.outcomes.keys() == set(load.started)
    for saga_id, outcome in load.outcomes.items():
        assert (outcome.status, outcome.context.done) == (SagaStatus.COMPLETED, STEP_NAMES)
        record = await storage.load(saga_id)
        assert record.status == SagaStatus.COMPLETED
        assert json.loads(record.context)["done"] == STEP_NAMES
        acts = [
            entry.step_id
            for entry in await storage.history(saga_id)
            if (entry.direction, entry.event) == (StepDirection.ACT, StepEvent.COMPLETED)
        ]
        assert acts == STEP_NAMES
    # The storage's own listing finds each saga once, finished; none is left to recover.
    listed = await storage.list_sagas(limit=len(load.started) + 1)
    assert sorted(record.saga_id for record in listed) == sorted(load.started)
    assert {record.status for record in listed} == {SagaStatus.COMPLETED}
    assert await storage.list_recoverable(limit=len(load.started)) == []
    # Each shard's indexes, on the slot's owner alone: no unfinished saga in the recovery
    # index, none parked, and every saga of the shard in the finished index.
    for shard, slot in zip(layout.all_shards(), slots, strict=True):
        owner = owner_of(slot, ports[0])
        ids = {str(saga_id) for saga_id in load.started if layout.shard_of(saga_id) == shard}
        assert servers.ask(owner, "ZCARD", shard.updated) == 0
        assert servers.ask(owner, "EXISTS", shard.parked) == 0
        assert set(servers.ask(owner, "ZRANGE", shard.finished, "0", "-1")) == ids
        for port in ports:
            if port != owner:
                assert servers.ask(port, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) == 0


def _ids_in_shard(shard: int, count: int) -> list[uuid.UUID]:
    """``count`` new saga ids of ``shard`` (a saga's shard is its id modulo SHARDS)."""
    ids: list[uuid.UUID] = []
    while len(ids) < count:
        saga_id = uuid.uuid4()
        if saga_id.int % SHARDS == shard:
            ids.append(saga_id)
    return ids


async def test_a_write_waits_while_its_slot_stays_mid_migration(
    storage: RedisSagaStorage, mover: SlotMover, cluster_key_prefix: str
) -> None:
    """coredis gives up on a slot that keeps answering TRYAGAIN after a fraction of a second
    (ClusterError); the storage waits on, as for a failover, until the slot has moved."""
    mediator = _mediator(storage)
    shard = KeyLayout(cluster_key_prefix, SHARDS).all_shards()[0]
    first, second = _ids_in_shard(0, 2)
    await mediator.run(Delivery(producer=0), saga_id=first)  # the shard's keys exist
    ports = mover.ports
    slot = servers.ask(ports[0], "CLUSTER", "KEYSLOT", shard.updated)
    source = owner_of(slot, ports[0])
    move = Move(slot, source, ports[(ports.index(source) + 1) % len(ports)])
    mover.moves.append(move)
    refused = sum(redirects(ports, "TRYAGAIN").values())
    await anyio.to_thread.run_sync(mover.begin, move)
    outcomes = []

    async def run() -> None:
        outcomes.append(await mediator.run(Delivery(producer=1), saga_id=second))

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(run)
        await anyio.sleep(HOLD_SECONDS)
        assert (outcomes, sum(redirects(ports, "TRYAGAIN").values()) > refused) == ([], True)
        await anyio.to_thread.run_sync(partial(mover.transfer, move, paced=False))
        await anyio.to_thread.run_sync(mover.assign, move)

    assert [(o.saga_id, o.status, o.context.done) for o in outcomes] == [
        (second, SagaStatus.COMPLETED, STEP_NAMES)
    ]
    assert servers.ask(move.target, "EXISTS", storage.record_key(second)) == 1
