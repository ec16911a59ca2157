"""``RedisSagaStorage``: the saga storage protocol on Redis, one atomic script per write."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import ssl
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple
from uuid import UUID

import redis
import redis.asyncio

from saga_core import (
    SagaError,
    SagaRecord,
    SagaStatus,
    SagaUsageError,
    StorageCorruptedError,
    StorageUnavailableError,
)
from saga_core.storage import (
    Checkpoint,
    JournalEntry,
    NewSaga,
    describe_error,
    encode_journal_entry,
    read_records,
    require_saga_id,
)

from ._arguments import (
    check_limit,
    list_filters,
    micros_arg,
    next_step_arg,
    owner_arg,
    saga_version_arg,
)
from ._keys import DEFAULT_KEY_PREFIX, LAYOUT_VERSION, KeyLayout, ShardKeys
from ._lua import ArgsT, KeysT, Script, Transport, run_script
from ._reading import Row, is_unreadable, reply_rows, row_decoder
from ._records import (
    decode_journal,
    decode_record,
    encode_applied,
    encode_body,
    pairs,
    text,
)
from ._replies import raise_failure, reply_tag, transport_error
from ._resp import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, RespPool
from ._scripts import (
    CHECKPOINT,
    CLAIM,
    CREATE,
    LIST,
    PARK,
    READ,
    RENEW,
    SCAN,
    UNPARK,
    CheckpointArgs,
    CheckpointKeys,
    ClaimArgs,
    ClaimKeys,
    CreateArgs,
    CreateKeys,
    ListArgs,
    ListKeys,
    ParkArgs,
    ParkKeys,
    ReadArgs,
    ReadKeys,
    RenewArgs,
    RenewKeys,
    ScanArgs,
    ScanKeys,
    UnparkArgs,
    UnparkKeys,
)
from ._transports import AsyncioTransport, RespTransport, ThreadTransport
from ._url import parse_redis_url

#: How long a finished (COMPLETED or COMPENSATED) saga is kept by default: 7 days.
DEFAULT_RETAIN_FINISHED_SECONDS = 7 * 24 * 3600.0
#: How many journal entries a saga keeps by default; older ones are dropped first.
DEFAULT_MAX_JOURNAL_ENTRIES = 1000

# Index members a list_sagas script call reads at most: bounds the time one call holds Redis.
_LIST_PAGE = 500
_TERMINAL_VALUES = frozenset(status.value for status in SagaStatus if status.is_terminal)
# Sagas whose keys a storage keeps for their next writes (about 1 KB each).
_SAGAS_KEPT = 1024
# Rounds of "list the oldest candidates, then claim them" a sharded claim_recoverable makes
# when other workers keep taking its candidates first.
_CLAIM_ROUNDS = 5

logger = logging.getLogger("saga_redis")


class _SagaKeys(NamedTuple):
    """One saga's id as text and the keys its create and checkpoints pass to their scripts."""

    sid: str
    create: CreateKeys
    checkpoint: CheckpointKeys


class RedisSagaStorage:
    """Saga storage on Redis; implements :class:`~saga_core.SagaStorage`.

    Each write (``create``, ``checkpoint``, ``claim``, ``claim_recoverable`` per shard,
    ``renew_lease``, ``park``, ``unpark``) is one server-side script that checks before it
    writes: a compare-and-set on the version, the record, the journal append and the recovery
    indexes happen all at once or not at all, in one round trip. Times come from the Redis
    server's clock. The key layout is in the package README.

    Args:
        client: a ``redis.asyncio.Redis`` (awaited directly; asyncio only) or a synchronous
            ``redis.Redis`` (run in worker threads through ``anyio.to_thread``, so it works on
            asyncio and trio). The ``RedisCluster`` variants work too. The storage does not
            close a client it was given. :meth:`from_url` needs no redis-py client at all and
            is faster on both backends.
        key_prefix: prefix of every key this storage uses; 1 to 100 letters, digits and
            ``_.:/-``. Storages with different prefixes share a database without meeting.
        retain_finished_seconds: how long a COMPLETED or COMPENSATED saga (and its journal)
            stays readable before Redis deletes it; ``None`` keeps it forever. Unfinished
            sagas never expire.
        max_journal_entries: how many journal entries a saga keeps (the oldest are dropped
            first); ``None`` keeps them all.
        shards: how many hash slots the sagas are spread over (a saga's keys always share
            one). Keep 1 on a single server; on a cluster use a few per node. Fixed for a key
            prefix once sagas are stored: a different count is refused.

    Raises:
        SagaUsageError: ``client`` is not a redis-py client, or an argument is invalid.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis
        | redis.asyncio.RedisCluster
        | redis.Redis
        | redis.RedisCluster
        | RespTransport,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        retain_finished_seconds: float | None = DEFAULT_RETAIN_FINISHED_SECONDS,
        max_journal_entries: int | None = DEFAULT_MAX_JOURNAL_ENTRIES,
        shards: int = 1,
    ) -> None:
        transport: Transport
        if isinstance(client, RespTransport):  # the storage's own pool, from from_url
            transport = client
        elif isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            transport = AsyncioTransport(client, owned=False)
        elif isinstance(client, (redis.Redis, redis.RedisCluster)):
            transport = ThreadTransport(client, owned=False)
        else:
            raise SagaUsageError(
                f"RedisSagaStorage needs a redis-py client (redis.asyncio.Redis, or redis.Redis "
                f"for trio), got {type(client).__qualname__}; or use "
                f"RedisSagaStorage.from_url('redis://host:6379/0')"
            )
        self._setup(transport, key_prefix, retain_finished_seconds, max_journal_entries, shards)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        retain_finished_seconds: float | None = DEFAULT_RETAIN_FINISHED_SECONDS,
        max_journal_entries: int | None = DEFAULT_MAX_JOURNAL_ENTRIES,
        shards: int = 1,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> RedisSagaStorage:
        """Open a storage on ``url``: ``redis://[[user]:password@]host[:port][/db]``, or
        ``rediss://`` for TLS.

        The storage talks to Redis through its own small connection pool on anyio streams, so
        it runs natively on asyncio and trio. Nothing connects before the first call, and
        :meth:`aclose` closes the connections. For Sentinel, Cluster or other client features,
        pass a redis-py client to the constructor instead.

        Args:
            url: the server and database; only a ``db`` query parameter is accepted.
            max_connections: connections open at once per event loop; more concurrent calls
                wait for one.
            connect_timeout: seconds to connect (and authenticate) before giving up.
            command_timeout: seconds to wait for one reply before giving up (``None``: no
                limit). A timed-out write may still have happened: the next write's version
                check tells.
            ssl_context: TLS settings for ``rediss://`` (default: the system's trusted CAs,
                hostname checked).
            key_prefix, retain_finished_seconds, max_journal_entries, shards: as for the
                constructor.

        Raises:
            SagaUsageError: the URL is not a Redis URL, or an argument is invalid. Messages
                never repeat the URL, which may hold a password.
        """
        pool = RespPool(
            parse_redis_url(url),
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            ssl_context=ssl_context,
        )
        return cls(
            RespTransport(pool),
            key_prefix,
            retain_finished_seconds=retain_finished_seconds,
            max_journal_entries=max_journal_entries,
            shards=shards,
        )

    def _setup(
        self,
        transport: Transport,
        key_prefix: str,
        retain_finished_seconds: float | None,
        max_journal_entries: int | None,
        shards: int,
    ) -> None:
        layout = KeyLayout(key_prefix, shards)
        if retain_finished_seconds is not None and (
            isinstance(retain_finished_seconds, bool)
            or not isinstance(retain_finished_seconds, (int, float))
            or not math.isfinite(retain_finished_seconds)
            or retain_finished_seconds < 0.001
        ):
            raise SagaUsageError(
                f"retain_finished_seconds must be None (keep finished sagas) or a positive "
                f"number of seconds, got {retain_finished_seconds!r}"
            )
        if max_journal_entries is not None and (
            isinstance(max_journal_entries, bool)
            or not isinstance(max_journal_entries, int)
            or max_journal_entries < 1
        ):
            raise SagaUsageError(
                f"max_journal_entries must be None (keep every entry) or an int >= 1, got "
                f"{max_journal_entries!r}"
            )
        self._transport = transport
        self._layout = layout
        self._retain_finished_seconds = retain_finished_seconds
        self._max_journal_entries = max_journal_entries
        self._retain_arg = (
            "" if retain_finished_seconds is None else str(round(retain_finished_seconds * 1000))
        )
        self._cap_arg = "" if max_journal_entries is None else str(max_journal_entries)
        self._shards_arg = str(shards)
        # Write tokens: unique per write, so a write the client retried after a lost reply is
        # recognised as already applied instead of reported as a conflict.
        self._token_base = f"{os.urandom(6).hex()}-"
        self._tokens = itertools.count()
        # By the id's integer value: a saga's writes pass equal ids, not always the same object.
        self._keys_by_saga: dict[int, _SagaKeys] = {}
        self._closed = False

    # --- introspection ------------------------------------------------------------------

    @property
    def key_prefix(self) -> str:
        """The prefix of every key this storage uses."""
        return self._layout.prefix

    @property
    def shards(self) -> int:
        """How many hash slots the sagas are spread over."""
        return self._layout.shards

    @property
    def retain_finished_seconds(self) -> float | None:
        """How long finished sagas are kept (``None``: forever)."""
        return self._retain_finished_seconds

    @property
    def max_journal_entries(self) -> int | None:
        """How many journal entries a saga keeps (``None``: all)."""
        return self._max_journal_entries

    def record_key(self, saga_id: UUID) -> str:
        """The key of the hash that holds ``saga_id``'s state (for inspection)."""
        return self._layout.record(saga_id)

    def journal_key(self, saga_id: UUID) -> str:
        """The key of the list that holds ``saga_id``'s journal (for inspection)."""
        return self._layout.journal(saga_id)

    # --- protocol -------------------------------------------------------------------------

    async def create(self, saga: NewSaga) -> None:
        """Store a new RUNNING saga at cursor 0 and version 1, leased to ``saga.lease_owner``,
        with its definition's version ``saga.saga_version``.

        Raises:
            SagaAlreadyExistsError: the id is stored already (nothing written).
            StorageCorruptedError: a key of this saga holds data saga-redis did not write.
            StorageUnavailableError: Redis cannot be reached.
            SagaUsageError: the saga id is not a :class:`uuid.UUID`, or ``saga_version`` not
                an int >= 1 (nothing written).
        """
        saga_id = require_saga_id(saga.saga_id)
        keys = self._saga_keys(saga_id)
        args = CreateArgs(
            saga_id=keys.sid,
            saga_name=saga.saga_name,
            saga_version=saga_version_arg(saga.saga_version),
            body=encode_body(0, next_step_arg(saga.next_step), "[]", saga.context),
            owner=owner_arg(saga.lease_owner),
            lease_us=micros_arg(saga.lease_seconds),
            token=self._token(),
            journal_cap=self._cap_arg,
            shards=self._shards_arg,
            layout_version=LAYOUT_VERSION,
            entries=list(map(encode_journal_entry, saga.journal)),
        )
        reply = await self._run(CREATE, keys.create, args)
        if reply != 0:
            raise_failure(reply, saga_id, self._layout)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Apply one checkpoint atomically if the stored version is ``expected_version``.

        A terminal status clears the lease, takes the saga out of the recovery indexes and
        starts its retention time.

        Raises:
            SagaNotFoundError: no such saga (or it finished and expired).
            SagaFinishedError: the saga is COMPLETED or COMPENSATED (checked before the
                version).
            SagaVersionConflictError: another runner wrote the saga.
            SagaUsageError: ``lease_seconds`` without a ``lease_owner``, or a saga id that is
                not a :class:`uuid.UUID` (nothing written).
            StorageCorruptedError: a key of this saga holds data saga-redis did not write.
            StorageUnavailableError: Redis cannot be reached; whether the write happened is
                unknown, and the next write's version check tells.
        """
        saga_id = require_saga_id(checkpoint.saga_id)
        status = checkpoint.status
        if not isinstance(status, SagaStatus):
            raise SagaUsageError(f"checkpoint status must be a SagaStatus, got {status!r}")
        value = status._value_
        lease_seconds = checkpoint.lease_seconds
        # A terminal status releases the lease whatever the checkpoint asks.
        owner, lease_us = "", "0"
        if lease_seconds is not None and value not in _TERMINAL_VALUES:
            if checkpoint.lease_owner is None:
                raise SagaUsageError(
                    f"checkpoint of saga {saga_id} sets lease_seconds without a lease_owner; "
                    f"pass both, or lease_seconds=None to release the lease"
                )
            owner, lease_us = owner_arg(checkpoint.lease_owner), micros_arg(lease_seconds)
        error = checkpoint.error
        keys = self._saga_keys(saga_id)
        args = CheckpointArgs(
            saga_id=keys.sid,
            retention_ms=self._retain_arg,
            journal_cap=self._cap_arg,
            owner=owner,
            lease_us=lease_us,
            expected_version=str(int(checkpoint.expected_version)),
            status=value,
            body=encode_body(
                int(checkpoint.cursor),
                next_step_arg(checkpoint.next_step),
                encode_applied(checkpoint.applied),
                checkpoint.context,
            ),
            token=self._token(),
            has_error="0" if error is None else "1",
            error_text="" if error is None else error,
            entries=list(map(encode_journal_entry, checkpoint.journal)),
        )
        reply = await self._run(CHECKPOINT, keys.checkpoint, args)
        if reply != 0:
            raise_failure(
                reply, saga_id, self._layout, expected_version=checkpoint.expected_version
            )

    async def load(self, saga_id: UUID) -> SagaRecord:
        """Return the saga's record.

        Raises:
            SagaNotFoundError: no such saga.
            StorageCorruptedError: its hash is not a saga record saga-redis wrote.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        require_saga_id(saga_id)
        record = self._layout.record(saga_id)
        reply = await self._read(saga_id, record, "record")
        return decode_record(saga_id, record, pairs(reply))

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        """Return the saga's journal in write order (the newest ``max_journal_entries``).

        Raises:
            SagaNotFoundError: no such saga.
            StorageCorruptedError: a journal element is not an entry saga-redis wrote.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        require_saga_id(saga_id)
        journal = self._layout.journal(saga_id)
        items = await self._read(saga_id, self._layout.record(saga_id), "journal")
        return decode_journal(saga_id, journal, items)

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        """Return up to ``limit`` recoverable sagas, oldest update first, without claiming.

        Recoverable: RUNNING, COMPENSATING or FAILED, not parked, with no lease or an expired
        one. A record that cannot be read back is reported (see
        :func:`saga_core.storage.read_records`) and left out.
        """
        check_limit(limit)
        if limit == 0:
            return []
        found: list[SagaRecord] = []
        for shard in self._layout.all_shards():
            rows = await self._scan(shard, "list", limit, "", "0")
            found.extend(read_records(rows, self._decoder(shard, shard.updated)).records)
        return _oldest(found, limit)

    async def claim(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> SagaRecord:
        """Lease one saga to ``owner`` for recovery and return its record with the new version.

        Succeeds when the saga is recoverable or already leased to ``owner``.

        Raises:
            SagaNotFoundError: no such saga.
            SagaFinishedError: the saga is COMPLETED or COMPENSATED.
            SagaParkedError: the saga is parked (dead-letter state).
            SagaLeaseHeldError: another owner's lease has not expired.
            StorageSchemaError: the key prefix was written with another shard count.
            StorageCorruptedError: the record's head is not one saga-redis wrote (nothing
                written), or another field cannot be read back (the saga is claimed all the
                same: park it, or repair it).
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        require_saga_id(saga_id)
        shard = self._layout.shard_of(saga_id)
        sid = str(saga_id)
        record = shard.record_stem + sid
        keys = ClaimKeys(record=record, updated=shard.updated, meta=shard.meta)
        args = ClaimArgs(
            saga_id=sid,
            owner=owner_arg(owner),
            lease_us=micros_arg(lease_seconds),
            token=self._token(),
            shards=self._shards_arg,
            layout_version=LAYOUT_VERSION,
        )
        reply = await self._run(CLAIM, keys, args)
        if reply_tag(reply) != "ok":
            raise_failure(reply, saga_id, self._layout)
        return decode_record(saga_id, record, pairs(reply[1]))

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        """Atomically claim up to ``limit`` recoverable sagas for ``owner``, oldest update
        first, and return their records with the new versions.

        Two concurrent callers never receive the same saga: each claim re-checks, inside the
        script, that the saga is still recoverable. A claimed record that cannot be read back
        is reported (see :func:`saga_core.storage.read_records`), parked with the error as its
        reason (so it is not claimed again until an operator repairs and unparks it) and left
        out; a record whose ``head`` the scripts cannot read is reported, not claimed and left
        out.
        """
        check_limit(limit)
        owner = owner_arg(owner)
        lease = micros_arg(lease_seconds)
        if limit == 0:
            return []
        shards = self._layout.all_shards()
        if len(shards) == 1:
            return await self._claim_in(shards[0], limit, owner, lease)
        # Sharded: find the globally oldest candidates, then claim them shard by shard. A
        # candidate another worker takes in between is skipped by the claim script.
        claimed: list[SagaRecord] = []
        for _ in range(_CLAIM_ROUNDS):
            wanted = limit - len(claimed)
            candidates: list[SagaRecord] = []
            # Candidates that cannot be read back, by shard: claimed too, to be parked.
            damaged: dict[int, list[str]] = {}
            for number, shard in enumerate(shards):
                rows = await self._scan(shard, "list", wanted, "", "0")
                decode = self._decoder(shard, shard.updated)
                read_records(filter(is_unreadable, rows), decode)  # reported; never claimed
                for row in rows:
                    if not is_unreadable(row):
                        try:
                            candidates.append(decode(row))
                        except StorageCorruptedError as error:  # reported when claimed
                            if error.saga_id is not None:
                                damaged.setdefault(number, []).append(str(error.saga_id))
            if not candidates and not damaged:
                break
            chosen = _oldest(candidates, wanted)
            order = {record.saga_id: index for index, record in enumerate(chosen)}
            taken: list[SagaRecord] = []
            for number, shard in enumerate(shards):
                ids = [str(r.saga_id) for r in chosen if self._layout.shard_of(r.saga_id) is shard]
                ids += damaged.get(number, ())
                if ids:
                    taken.extend(await self._claim_in(shard, len(ids), owner, lease, ids))
            # A damaged candidate repaired meanwhile is claimed and returned, after the others.
            claimed.extend(sorted(taken, key=lambda record: order.get(record.saga_id, wanted)))
            if len(claimed) >= limit:
                break
        return claimed

    async def renew_lease(self, saga_id: UUID, *, owner: str, lease_seconds: float) -> None:
        """Extend ``owner``'s lease on a saga to ``now + lease_seconds`` (the Redis server's
        clock); nothing else changes (not the version, not ``updated_at``).

        Raises:
            SagaNotFoundError: no such saga.
            SagaFinishedError: the saga is COMPLETED or COMPENSATED.
            SagaLeaseHeldError: the lease is not ``owner``'s (taken over, or released): the
                runner must stop.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        require_saga_id(saga_id)
        shard = self._layout.shard_of(saga_id)
        sid = str(saga_id)
        owner = owner_arg(owner)
        keys = RenewKeys(record=shard.record_stem + sid)
        reply = await self._run(RENEW, keys, RenewArgs(owner, micros_arg(lease_seconds)))
        if reply != 0:
            raise_failure(reply, saga_id, self._layout, owner=owner)

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_name: str | None = None,
        parked: bool | None = None,
        updated_before: datetime | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Return up to ``limit`` sagas matching every given filter, oldest update first:
        unfinished, parked and finished ones (while retained); ``None`` filters are not
        applied, ``updated_before`` (aware) keeps the sagas last updated strictly before it.

        An operator query, not a hot path: it pages through the shards' ``updated``,
        ``parked`` and ``finished`` indexes (only those the filters can match) oldest first,
        reading each record to filter it, so it costs O(n) over the prefix's sagas in the
        worst case (filters that match little), in pages of a bounded size so that Redis
        stays responsive. The result is not one snapshot: a saga written meanwhile may show
        its older or newer state.

        Raises:
            SagaUsageError: ``limit`` is negative, or a filter has the wrong type.
        """
        check_limit(limit)
        filters = list_filters(status, saga_name, parked, updated_before)
        if self._closed:
            raise StorageUnavailableError("the Redis saga storage is closed")
        if limit == 0:
            return []
        terminal = status is not None and status.is_terminal
        best: dict[UUID, SagaRecord] = {}
        for shard in self._layout.all_shards():
            indexes: list[str] = []
            if parked is not True and not terminal:
                indexes.append(shard.updated)
            if parked is not False:
                indexes.append(shard.parked)  # a parked saga stays there when it finishes
            if parked is not True and (status is None or terminal):
                indexes.append(shard.finished)
            for index in indexes:
                for record in await self._list_index(shard, index, limit, filters):
                    # A parked saga that finished is in two indexes: keep its newest state.
                    known = best.get(record.saga_id)
                    if known is None or known.version < record.version:
                        best[record.saga_id] = record
        return _oldest(list(best.values()), limit)

    async def park(self, saga_id: UUID, *, owner: str, reason: str) -> None:
        """Move a saga leased to ``owner`` to the dead-letter state: ``parked``, ``reason`` as
        its error, no lease, version + 1 (fencing off any earlier runner). It leaves the
        recovery indexes for the shard's ``parked`` index until :meth:`unpark`.

        Raises:
            SagaNotFoundError: no such saga.
            SagaFinishedError: the saga is COMPLETED or COMPENSATED.
            SagaLeaseHeldError: the lease is not ``owner``'s.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`, or ``reason`` not a str.
        """
        require_saga_id(saga_id)
        if not isinstance(reason, str):
            raise SagaUsageError(f"park reason must be a string, got {reason!r}")
        shard = self._layout.shard_of(saga_id)
        sid = str(saga_id)
        owner = owner_arg(owner)
        keys = ParkKeys(record=shard.record_stem + sid, updated=shard.updated, parked=shard.parked)
        args = ParkArgs(saga_id=sid, owner=owner, reason=reason, token=self._token())
        reply = await self._run(PARK, keys, args)
        if reply != 0:
            raise_failure(reply, saga_id, self._layout, owner=owner)

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        """Take a saga out of the dead-letter state (``parked=False``, ``attempts=0``, a new
        ``updated_at``) and return its record; it is recoverable at once. A saga that is not
        parked is returned unchanged.

        Raises:
            SagaNotFoundError: no such saga.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        require_saga_id(saga_id)
        shard = self._layout.shard_of(saga_id)
        sid = str(saga_id)
        record = shard.record_stem + sid
        keys = UnparkKeys(
            record=record, updated=shard.updated, parked=shard.parked, finished=shard.finished
        )
        reply = await self._run(UNPARK, keys, UnparkArgs(saga_id=sid))
        if reply_tag(reply) != "ok":
            raise_failure(reply, saga_id, self._layout)
        return decode_record(saga_id, record, pairs(reply[1]))

    async def aclose(self) -> None:
        """Close the storage: later calls raise :class:`~saga_core.StorageUnavailableError`.

        Closes the clients the storage opened itself (:meth:`from_url`), never a client it
        was given. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        await self._transport.aclose()

    async def __aenter__(self) -> RedisSagaStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- internals --------------------------------------------------------------------------

    def _saga_keys(self, saga_id: UUID) -> _SagaKeys:
        """The keys of ``saga_id``'s create and checkpoints, built once while it is in flight:
        a saga's writes come one after another, each naming the same keys."""
        found = self._keys_by_saga.get(saga_id.int)
        if found is None:
            sid = str(saga_id)
            shard = self._layout.shard_of(saga_id)
            record = shard.record_stem + sid
            journal = shard.journal_stem + sid
            found = _SagaKeys(
                sid=sid,
                create=CreateKeys(
                    record=record, journal=journal, updated=shard.updated, meta=shard.meta
                ),
                checkpoint=CheckpointKeys(
                    record=record,
                    journal=journal,
                    updated=shard.updated,
                    parked=shard.parked,
                    finished=shard.finished,
                ),
            )
            if len(self._keys_by_saga) >= _SAGAS_KEPT:
                self._keys_by_saga.clear()
            self._keys_by_saga[saga_id.int] = found
        return found

    def _token(self) -> str:
        return f"{self._token_base}{next(self._tokens)}"

    async def _run(self, script: Script[KeysT, ArgsT], keys: KeysT, args: ArgsT) -> Any:
        """Run ``script`` (every operation's one request path) and return its reply, with the
        transport's exceptions translated into the core's errors."""
        if self._closed:
            raise StorageUnavailableError("the Redis saga storage is closed")
        try:
            return await run_script(self._transport, script, keys, args)
        except SagaError:
            raise
        except Exception as exc:
            raise transport_error(exc, self.key_prefix) from exc

    async def _read(self, saga_id: UUID, record: str, what: str) -> Any:
        shard = self._layout.shard_of(saga_id)
        keys = ReadKeys(record=record, journal=f"{shard.journal_stem}{saga_id}")
        reply = await self._run(READ, keys, ReadArgs(what=what))
        if reply_tag(reply) != "ok":
            raise_failure(reply, saga_id, self._layout)
        return reply[1]

    async def _list_index(
        self, shard: ShardKeys, index: str, limit: int, filters: list[str]
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas of one index matching ``filters``, oldest first, one page
        (one script call) at a time; records that cannot be read back are reported and left
        out."""
        status, name, parked, before = filters
        low: str = "-inf"
        offset = 0
        found: list[SagaRecord] = []
        decode = self._decoder(shard, index)
        while True:
            args = ListArgs(
                record_stem=shard.record_stem,
                min_score=low,
                offset=str(offset),
                max_score=before,
                page_size=str(_LIST_PAGE),
                wanted=str(limit - len(found)),
                status_filter=status,
                name_filter=name,
                parked_filter=parked,
                shards=self._shards_arg,
                layout_version=LAYOUT_VERSION,
            )
            reply = await self._run(LIST, ListKeys(index_key=index, meta=shard.meta), args)
            if reply_tag(reply) != "ok":
                raise_failure(reply, None, self._layout)
            read = read_records(reply_rows(reply, 4), decode)
            found.extend(read.records)
            # The script counts what it returns, damaged records included; when it stopped
            # for that count, the next page holds the matches it did not return.
            if len(found) >= limit or (int(reply[1]) and not read.corrupt):
                return found
            low, offset = text(reply[2]), int(reply[3])

    def _decoder(self, shard: ShardKeys, index: str) -> Callable[[Row], SagaRecord]:
        return row_decoder(self._layout, shard.record_stem, index)

    async def _scan(
        self,
        shard: ShardKeys,
        mode: str,
        limit: int,
        owner: str,
        lease: str,
        ids: Iterable[str] = (),
    ) -> list[Row]:
        """The rows of one ``SCAN`` script call on ``shard`` (see :mod:`._reading`)."""
        args = ScanArgs(
            mode=mode,
            limit=str(limit),
            record_stem=shard.record_stem,
            owner=owner,
            lease_us=lease,
            token=self._token(),
            shards=self._shards_arg,
            layout_version=LAYOUT_VERSION,
            only=list(ids),
        )
        keys = ScanKeys(updated=shard.updated, meta=shard.meta, parked=shard.parked)
        reply = await self._run(SCAN, keys, args)
        if reply_tag(reply) != "ok":
            raise_failure(reply, None, self._layout)
        return reply_rows(reply, 1)

    async def _claim_in(
        self, shard: ShardKeys, limit: int, owner: str, lease: str, ids: Iterable[str] = ()
    ) -> list[SagaRecord]:
        """Claim up to ``limit`` recoverable sagas of ``shard`` (of ``ids`` only, if given) and
        return those that read back; park the claimed ones that do not."""
        rows = await self._scan(shard, "claim", limit, owner, lease, ids)
        decode = self._decoder(shard, shard.updated)
        read_records(filter(is_unreadable, rows), decode)  # reported; the script claimed none
        claimed = read_records(itertools.filterfalse(is_unreadable, rows), decode)
        for error in claimed.corrupt:
            if error.saga_id is not None:
                await self._park_damaged(error.saga_id, owner, error)
        return claimed.records

    async def _park_damaged(self, saga_id: UUID, owner: str, error: StorageCorruptedError) -> None:
        """Park a saga ``owner`` has just claimed whose record cannot be read back, with the
        error as the reason, so that no worker claims it again until it is repaired."""
        try:
            await self.park(saga_id, owner=owner, reason=describe_error(error))
        except SagaError as failure:
            # The healthy sagas of the batch are claimed already, and must not be lost to the
            # caller for this one: it stays leased to ``owner`` and is claimed (and parked)
            # again when that lease runs out.
            logger.error(
                "could not park the damaged saga %s: %s",
                saga_id,
                describe_error(failure),
                extra={"saga_id": saga_id},
            )


def _oldest(records: list[SagaRecord], limit: int) -> list[SagaRecord]:
    return heapq.nsmallest(limit, records, key=lambda record: record.updated_at)
