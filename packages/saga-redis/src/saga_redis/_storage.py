"""``RedisSagaStorage``: the saga storage protocol on Redis, one atomic script per write."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any
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

from ._driver import (
    CHECKPOINT_SCRIPT,
    CLAIM_SCRIPT,
    CREATE_SCRIPT,
    LIST_SCRIPT,
    PARK_SCRIPT,
    READ_SCRIPT,
    RENEW_SCRIPT,
    SCAN_SCRIPT,
    UNPARK_SCRIPT,
    Arg,
    AsyncioDriver,
    Driver,
    RespDriver,
    ThreadDriver,
)
from ._keys import DEFAULT_KEY_PREFIX, LAYOUT_VERSION, KeyLayout, ShardKeys
from ._reading import Row, is_unreadable, reply_rows, row_decoder
from ._records import (
    decode_journal,
    decode_record,
    encode_applied,
    encode_body,
    pairs,
    text,
)
from ._replies import driver_error, raise_failure, reply_tag
from ._resp import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, RespPool
from ._url import parse_redis_url

#: How long a finished (COMPLETED or COMPENSATED) saga is kept by default: 7 days.
DEFAULT_RETAIN_FINISHED_SECONDS = 7 * 24 * 3600.0
#: How many journal entries a saga keeps by default; older ones are dropped first.
DEFAULT_MAX_JOURNAL_ENTRIES = 1000

# Index members a list_sagas script call reads at most: bounds the time one call holds Redis.
_LIST_PAGE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_TERMINAL_VALUES = frozenset(status.value for status in SagaStatus if status.is_terminal)


class _SagaKeys:
    """One saga's id as text, the keys its create and checkpoints pass to their scripts, and
    the leading arguments of its checkpoints: that lease released, and the last lease set."""

    __slots__ = ("checkpoint_keys", "create_keys", "leased", "released", "saga_id", "sid")

    def __init__(self, saga_id: UUID, shard: ShardKeys, retain: str, cap: str) -> None:
        self.saga_id = saga_id
        self.sid = sid = str(saga_id)
        record = shard.record_stem + sid
        journal = shard.journal_stem + sid
        self.create_keys = (record, journal, shard.updated, shard.meta)
        self.checkpoint_keys = (record, journal, shard.updated, shard.parked, shard.finished)
        self.released: tuple[str, ...] = (sid, retain, cap, "", "0")
        # (lease owner, lease seconds, leading arguments) of the last checkpoint with a lease:
        # one tuple, replaced whole.
        self.leased: tuple[object, object, tuple[str, ...]] | None = None


# Sagas whose keys are kept for their next writes (about 1 KB each).
_SAGA_KEYS_CACHED = 1024
_INF = math.inf
# Lease lengths seen so far, in microseconds as text: a program uses few.
_MICROS_TEXT: dict[float, str] = {}
# Rounds of "list the oldest candidates, then claim them" a sharded claim_recoverable makes
# when other workers keep taking its candidates first.
_CLAIM_ROUNDS = 5

logger = logging.getLogger("saga_redis")


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
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster | redis.Redis | redis.RedisCluster,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        retain_finished_seconds: float | None = DEFAULT_RETAIN_FINISHED_SECONDS,
        max_journal_entries: int | None = DEFAULT_MAX_JOURNAL_ENTRIES,
        shards: int = 1,
    ) -> None:
        if isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            driver: Driver = AsyncioDriver(client, owned=False)
        elif isinstance(client, (redis.Redis, redis.RedisCluster)):
            driver = ThreadDriver(client, owned=False)
        else:
            raise SagaUsageError(
                f"RedisSagaStorage needs a redis-py client (redis.asyncio.Redis, or redis.Redis "
                f"for trio), got {type(client).__qualname__}; or use "
                f"RedisSagaStorage.from_url('redis://host:6379/0')"
            )
        self._setup(driver, key_prefix, retain_finished_seconds, max_journal_entries, shards)

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
        storage = cls.__new__(cls)
        storage._setup(
            RespDriver(pool), key_prefix, retain_finished_seconds, max_journal_entries, shards
        )
        return storage

    def _setup(
        self,
        driver: Driver,
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
        self._driver = driver
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
        self._saga_keys_cache: dict[int, _SagaKeys] = {}
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
        """Store a new RUNNING saga at cursor 0 and version 1, leased to ``saga.lease_owner``.

        Raises:
            SagaAlreadyExistsError: the id is stored already (nothing written).
            StorageCorruptedError: a key of this saga holds data saga-redis did not write.
            StorageUnavailableError: Redis cannot be reached.
            SagaUsageError: the saga id is not a :class:`uuid.UUID` (nothing written).
        """
        saga_id = saga.saga_id
        keys = self._saga_keys(saga_id)
        args: list[Arg] = [
            keys.sid,
            saga.saga_name,
            encode_body(0, _next_step(saga.next_step), "[]", saga.context),
            _owner(saga.lease_owner),
            _micros(saga.lease_seconds),
            self._token(),
            self._cap_arg,
            self._shards_arg,
            LAYOUT_VERSION,
        ]
        if saga.journal:
            args.extend(map(encode_journal_entry, saga.journal))
        reply = await self._run(CREATE_SCRIPT, keys.create_keys, args)
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
        saga_id = checkpoint.saga_id
        saga = self._saga_keys(saga_id)
        status = checkpoint.status
        if type(status) is not SagaStatus:
            raise SagaUsageError(f"checkpoint status must be a SagaStatus, got {status!r}")
        value = status._value_
        terminal = value in _TERMINAL_VALUES
        lease_seconds = checkpoint.lease_seconds
        if lease_seconds is None or terminal:
            lead = saga.released
        else:
            owner = checkpoint.lease_owner
            leased = saga.leased
            if leased is not None and leased[0] is owner and leased[1] is lease_seconds:
                lead = leased[2]  # the saga's lease as in its last checkpoint
            else:
                if owner is None:
                    raise SagaUsageError(
                        f"checkpoint of saga {saga_id} sets lease_seconds without a "
                        f"lease_owner; pass both, or lease_seconds=None to release the lease"
                    )
                lead = (*saga.released[:3], _owner(owner), _micros(lease_seconds))
                saga.leased = (owner, lease_seconds, lead)
        args: list[Arg] = [
            str(int(checkpoint.expected_version)),
            value,
            encode_body(
                int(checkpoint.cursor),
                _next_step(checkpoint.next_step),
                encode_applied(checkpoint.applied),
                checkpoint.context,
            ),
            f"{self._token_base}{next(self._tokens)}",
        ]
        error = checkpoint.error
        if error is None:
            args.append("0")
        else:
            args += ("1", error)
        journal = checkpoint.journal
        if journal:
            args.extend(map(encode_journal_entry, journal))
        reply = await self._run(CHECKPOINT_SCRIPT, saga.checkpoint_keys, args, lead)
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
        :func:`saga_core.read_records`) and left out.
        """
        _check_limit(limit)
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
        args: list[Arg] = [
            sid,
            _owner(owner),
            _micros(lease_seconds),
            self._token(),
            self._shards_arg,
            LAYOUT_VERSION,
        ]
        keys = (record, shard.updated, shard.meta)
        reply = await self._run(CLAIM_SCRIPT, keys, args)
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
        is reported (see :func:`saga_core.read_records`), parked with the error as its reason
        (so it is not claimed again until an operator repairs and unparks it) and left out; a
        record whose ``head`` the scripts cannot read is reported, not claimed and left out.
        """
        _check_limit(limit)
        owner = _owner(owner)
        lease = _micros(lease_seconds)
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
        owner = _owner(owner)
        args: list[Arg] = [sid, owner, _micros(lease_seconds)]
        reply = await self._run(RENEW_SCRIPT, (shard.record_stem + sid,), args)
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
        _check_limit(limit)
        filters = _list_filters(status, saga_name, parked, updated_before)
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
        owner = _owner(owner)
        args: list[Arg] = [sid, owner, reason, self._token()]
        keys = (shard.record_stem + sid, shard.updated, shard.parked)
        reply = await self._run(PARK_SCRIPT, keys, args)
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
        keys = (record, shard.updated, shard.parked, shard.finished)
        reply = await self._run(UNPARK_SCRIPT, keys, (sid,))
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
        await self._driver.aclose()

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
        """What the writes of ``saga_id`` pass to their scripts, computed once per saga: the
        runner of a saga passes the same id object to each of its writes."""
        cache = self._saga_keys_cache
        found = cache.get(id(saga_id))
        # The entry holds the id object itself, so no other object can have its id() meanwhile.
        if found is not None and found.saga_id is saga_id:
            return found
        if type(saga_id) is not UUID:  # checked once per saga: a cached id was checked
            require_saga_id(saga_id)
        found = _SagaKeys(saga_id, self._layout.shard_of(saga_id), self._retain_arg, self._cap_arg)
        if len(cache) >= _SAGA_KEYS_CACHED:
            cache.clear()
        cache[id(saga_id)] = found
        return found

    def _token(self) -> str:
        return f"{self._token_base}{next(self._tokens)}"

    async def _run(
        self, script: int, keys: Sequence[str], args: Sequence[Arg], lead: Sequence[str] = ()
    ) -> Any:
        if self._closed:
            raise StorageUnavailableError("the Redis saga storage is closed")
        try:
            return await self._driver.run(script, keys, args, lead)
        except SagaError:
            raise
        except Exception as exc:
            raise driver_error(exc, self.key_prefix) from exc

    async def _read(self, saga_id: UUID, record: str, what: str) -> Any:
        shard = self._layout.shard_of(saga_id)
        keys = (record, f"{shard.journal_stem}{saga_id}")
        reply = await self._run(READ_SCRIPT, keys, (what,))
        if reply_tag(reply) != "ok":
            raise_failure(reply, saga_id, self._layout)
        return reply[1]

    async def _list_index(
        self, shard: ShardKeys, index: str, limit: int, filters: list[Arg]
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
            args: list[Arg] = [
                shard.record_stem,
                low,
                offset,
                before,
                _LIST_PAGE,
                limit - len(found),
                status,
                name,
                parked,
                self._shards_arg,
                LAYOUT_VERSION,
            ]
            reply = await self._run(LIST_SCRIPT, (index, shard.meta), args)
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
        args: list[Arg] = [
            mode,
            limit,
            shard.record_stem,
            owner,
            lease,
            self._token(),
            self._shards_arg,
            LAYOUT_VERSION,
        ]
        args.extend(ids)
        keys = (shard.updated, shard.meta, shard.parked)
        reply = await self._run(SCAN_SCRIPT, keys, args)
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


def _next_step(next_step: object) -> str | None:
    """``next_step`` if it is a step id or None, else raise SagaUsageError."""
    if next_step is None or isinstance(next_step, str):
        return next_step
    raise SagaUsageError(f"next_step must be a step id (str) or None, got {next_step!r}")


def _owner(owner: object) -> str:
    if not isinstance(owner, str) or not owner:
        raise SagaUsageError(f"a lease owner must be a non-empty string, got {owner!r}")
    return owner


def _micros(seconds: object) -> str:
    """``lease_seconds`` as whole microseconds, in digits."""
    if type(seconds) is float or type(seconds) is int:  # not bool
        text = _MICROS_TEXT.get(seconds)
        if text is not None:
            return text
        if 0 <= seconds < _INF:
            text = str(round(seconds * 1_000_000))
            if len(_MICROS_TEXT) < 256:
                _MICROS_TEXT[seconds] = text
            return text
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise SagaUsageError(f"lease_seconds must be a finite number >= 0, got {seconds!r}")
    return str(round(seconds * 1_000_000))


def _list_filters(
    status: object, saga_name: object, parked: object, updated_before: object
) -> list[Arg]:
    """``list_sagas``'s filters as the list script's arguments: status, name, parked, and
    the highest update time (exclusive), each ``''`` / ``'+inf'`` when not applied."""
    if status is not None and not isinstance(status, SagaStatus):
        raise SagaUsageError(f"status must be a SagaStatus or None, got {status!r}")
    if saga_name is not None and not isinstance(saga_name, str):
        raise SagaUsageError(f"saga_name must be a string or None, got {saga_name!r}")
    if parked is not None and not isinstance(parked, bool):
        raise SagaUsageError(f"parked must be True, False or None, got {parked!r}")
    before = "+inf"
    if updated_before is not None:
        if not isinstance(updated_before, datetime) or updated_before.utcoffset() is None:
            raise SagaUsageError(
                f"updated_before must be an aware datetime (e.g. datetime.now(timezone.utc)) "
                f"or None, got {updated_before!r}"
            )
        before = f"({(updated_before - _EPOCH) // _MICROSECOND}"
    return [
        "" if status is None else status.value,
        "" if saga_name is None else f"={saga_name}",
        "" if parked is None else ("1" if parked else "0"),
        before,
    ]


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise SagaUsageError(f"limit must be an int >= 0, got {limit!r}")


def _oldest(records: list[SagaRecord], limit: int) -> list[SagaRecord]:
    return heapq.nsmallest(limit, records, key=lambda record: record.updated_at)
