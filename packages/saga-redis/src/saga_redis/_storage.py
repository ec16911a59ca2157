"""``RedisSagaStorage``: the saga storage protocol on Redis, one atomic script per write.

The class is the public face: its constructor checks the arguments and builds the parts each
method hands its work to, :class:`._writes.SagaWrites` (a saga's own writes and reads),
:mod:`._recovery` (claims, leases, dead letters) and :mod:`._listing` (``list_sagas``), which
all send their scripts through one :class:`._request.RequestPath`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import Any
from uuid import UUID

import coredis
import redis
import redis.asyncio

from saga_core import SagaRecord, SagaStatus, SagaUsageError
from saga_core.storage import Checkpoint, JournalEntry, NewSaga, NewSignal

from . import _listing, _recovery
from ._arguments import (
    DEFAULT_MAX_JOURNAL_ENTRIES,
    DEFAULT_RETAIN_FINISHED_SECONDS,
    journal_cap_arg,
    retention_arg,
)
from ._clients import CLUSTER_DEFAULT_SHARDS, build_client
from ._keys import DEFAULT_KEY_PREFIX, KeyLayout
from ._lua import Transport
from ._notifications import Notifications, work_notifications
from ._options import resolve_url
from ._request import RequestPath
from ._transports import AsyncioTransport, CoredisTransport, ThreadTransport
from ._writes import SagaWrites


class RedisSagaStorage:
    """Saga storage on Redis; implements :class:`~saga_core.SagaStorage` and
    :class:`~saga_core.storage.WorkNotifications` (Redis pub/sub).

    Each write (``create``, ``checkpoint``, ``claim``, ``claim_recoverable`` per shard,
    ``renew_lease``, ``park``, ``unpark``, ``deliver_signal``, ``request_cancel``) is one
    server-side script that checks before it
    writes: a compare-and-set on the version, the record, the journal append and the recovery
    indexes happen all at once or not at all, in one round trip. Times come from the Redis
    server's clock. The key layout is in the package README.

    Args:
        client: a coredis ``Redis`` or ``RedisCluster`` (asyncio and trio; open it yourself,
            ``async with client:``), a ``redis.asyncio.Redis`` (awaited directly; asyncio
            only) or a synchronous ``redis.Redis`` (run in worker threads through
            ``anyio.to_thread``, so it works on asyncio and trio); the redis-py
            ``RedisCluster`` variants work too. The storage does not close a client it was
            given. :meth:`from_url` opens its own coredis client.
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
        SagaUsageError: ``client`` is not a coredis or redis-py client, or an argument is
            invalid.
    """

    def __init__(
        self,
        client: coredis.Redis[bytes]
        | coredis.RedisCluster[bytes]
        | redis.asyncio.Redis
        | redis.asyncio.RedisCluster
        | redis.Redis
        | redis.RedisCluster
        | CoredisTransport,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        retain_finished_seconds: float | None = DEFAULT_RETAIN_FINISHED_SECONDS,
        max_journal_entries: int | None = DEFAULT_MAX_JOURNAL_ENTRIES,
        shards: int = 1,
    ) -> None:
        transport: Transport
        if isinstance(client, CoredisTransport):  # the storage's own client, from from_url
            transport = client
        elif isinstance(client, (coredis.Redis, coredis.RedisCluster)):
            transport = CoredisTransport(client)
        elif isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            transport = AsyncioTransport(client, owned=False)
        elif isinstance(client, (redis.Redis, redis.RedisCluster)):
            transport = ThreadTransport(client, owned=False)
        else:
            raise SagaUsageError(
                f"RedisSagaStorage needs a coredis or redis-py client (coredis.Redis, "
                f"redis.asyncio.Redis, redis.Redis), got {type(client).__qualname__}; or use "
                f"RedisSagaStorage.from_url('redis://host:6379/0')"
            )
        layout = KeyLayout(key_prefix, shards)
        retain_arg = retention_arg(retain_finished_seconds)
        cap_arg = journal_cap_arg(max_journal_entries)
        self._layout = layout
        self._retain_finished_seconds = retain_finished_seconds
        self._max_journal_entries = max_journal_entries
        self._path = RequestPath(transport, layout.prefix)
        # Inside 'async with': closing then waits for the block's end (see aclose).
        self._entered = False
        self._writes = SagaWrites(self._path, layout, retain_arg, cap_arg)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSagaStorage:
        """Open a storage on the Redis deployment ``url`` names, with its own coredis client
        (asyncio and trio, natively). Use it inside ``async with``: the client's connections
        live in that block, which closes them.

        URLs: ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS),
        ``unix://[[user]:password@]/path/to/redis.sock[?db=N]``,
        ``redis+cluster://h1:p1[,h2:p2...]`` and
        ``redis+sentinel://s1:p1[,s2:p2...]/service_name[/db]`` (``rediss+...`` for TLS).

        Options, as keyword arguments or query parameters of the URL (the package README
        has the table): ``key_prefix``, ``shards`` (default 1, or
        :data:`CLUSTER_DEFAULT_SHARDS` on a cluster), ``retain_finished_seconds``,
        ``max_journal_entries``, ``max_connections`` (per node), ``connect_timeout``
        (seconds to connect, handshake included), ``command_timeout`` (seconds to wait for
        one reply; a timed-out write may still have happened: the next write's version
        check tells), ``failover_timeout`` (Sentinel and Cluster: seconds a call waits out a
        failover before it raises StorageUnavailableError, default 30), and for TLS
        ``ssl_context`` (keyword only), ``ssl_ca_certs`` and ``ssl_check_hostname``.

        Raises:
            SagaUsageError: the URL or an option is invalid, or an option contradicts the
                URL. Messages never repeat a part of the URL that holds a password.

        Once open, a deployment that cannot be reached raises StorageUnavailableError naming
        the URL's addresses (never its credentials); a ``redis+cluster://`` URL whose nodes
        run without cluster mode, or a ``redis+sentinel://`` URL whose nodes are not
        sentinels, raises SagaUsageError.
        """
        target, resolved = resolve_url(url, options)
        client, contexts, failover_seconds, replica_ack = build_client(target, resolved)
        shards = resolved.shards
        if shards is None:
            shards = CLUSTER_DEFAULT_SHARDS if target.kind == "cluster" else 1
        return cls(
            CoredisTransport(
                client,
                contexts,
                failover_seconds=failover_seconds,
                replica_ack=replica_ack,
                where=target.describe(),
            ),
            resolved.key_prefix,
            retain_finished_seconds=resolved.retain_finished_seconds,
            max_journal_entries=resolved.max_journal_entries,
            shards=shards,
        )

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
        """Store a new saga at cursor 0 and version 1, with its definition's version
        ``saga.saga_version``, its ``deadline_at`` and its ``parent_id``: RUNNING and leased to
        ``saga.lease_owner``, or WAITING without a lease, due at ``saga.wake_at`` (started
        detached).

        Raises:
            SagaAlreadyExistsError: the id is stored already (nothing written).
            StorageCorruptedError: a key of this saga holds data saga-redis did not write.
            StorageUnavailableError: Redis cannot be reached.
            SagaUsageError: the saga id (or a ``parent_id``) is not a :class:`uuid.UUID`,
                ``saga_version`` not an int >= 1, or the status, lease and times do not fit
                together (see :class:`~saga_core.storage.NewSaga`; nothing written).
        """
        await self._writes.create(saga)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Apply one checkpoint atomically if the stored version is ``expected_version``.

        A terminal status clears the lease, takes the saga out of the recovery indexes and
        starts its retention time. WAITING clears the lease and stores ``wake_at`` and
        ``waiting_for`` (due now if a cancel is requested or that signal is pending already);
        other statuses store neither. ``consume_signal`` and ``unless_signal`` are checked and
        applied in the same script.

        Raises:
            SagaNotFoundError: no such saga (or it finished and expired).
            SagaFinishedError: the saga is COMPLETED or COMPENSATED (checked before the
                version).
            SagaVersionConflictError: another runner wrote the saga, or the signal to
                consume is not pending.
            SagaCancelledError: a cancel is requested and the write would move the saga
                forward (COMPLETED, WAITING from another status, a greater cursor).
            SagaSignalPendingError: a signal named ``unless_signal`` is pending.
            SagaUsageError: ``lease_seconds`` without a ``lease_owner``, or a saga id that is
                not a :class:`uuid.UUID` (nothing written).
            StorageCorruptedError: a key of this saga holds data saga-redis did not write.
            StorageUnavailableError: Redis cannot be reached; whether the write happened is
                unknown, and the next write's version check tells.
        """
        await self._writes.checkpoint(checkpoint)

    async def load(self, saga_id: UUID) -> SagaRecord:
        """Return the saga's record.

        Raises:
            SagaNotFoundError: no such saga.
            StorageCorruptedError: its hash is not a saga record saga-redis wrote.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        return await self._writes.load(saga_id)

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        """Return the saga's journal in write order (the newest ``max_journal_entries``).

        Raises:
            SagaNotFoundError: no such saga.
            StorageCorruptedError: a journal element is not an entry saga-redis wrote.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        return await self._writes.history(saga_id)

    async def list_recoverable(self, *, limit: int = 100) -> list[SagaRecord]:
        """Return up to ``limit`` recoverable sagas, earliest due first, without claiming.

        Recoverable: not parked, with no lease or an expired one, and RUNNING, COMPENSATING,
        FAILED, or WAITING and due (its ``wake_at`` has come). A WAITING saga is due at its
        ``wake_at``, any other at its ``updated_at``. A record that cannot be read back is
        reported (see
        :func:`saga_core.storage.read_records`) and left out.
        """
        return await _recovery.list_recoverable(self._path, self._layout, limit)

    async def claim(
        self, saga_id: UUID, *, owner: str, lease_seconds: float, force: bool = False
    ) -> SagaRecord:
        """Lease one saga to ``owner`` for recovery and return its record with the new version.

        Succeeds when the saga is recoverable or already leased to ``owner``, or with
        ``force=True`` whoever holds its lease, live or expired (an operator taking over from
        a runner known to be dead): otherwise the same claim (version + 1, attempts + 1), so
        the runner it was taken from is refused at its next write.

        Raises:
            SagaNotFoundError: no such saga.
            SagaFinishedError: the saga is COMPLETED or COMPENSATED.
            SagaParkedError: the saga is parked (dead-letter state).
            SagaLeaseHeldError: another owner's lease has not expired (without ``force``).
            StorageSchemaError: the key prefix was written with another shard count.
            StorageCorruptedError: the record's head is not one saga-redis wrote (nothing
                written), or another field cannot be read back (the saga is claimed all the
                same: park it, or repair it).
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        return await _recovery.claim(self._path, self._layout, saga_id, owner, lease_seconds, force)

    async def claim_recoverable(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[SagaRecord]:
        """Atomically claim up to ``limit`` recoverable sagas for ``owner`` — stalled ones and
        due WAITING ones — earliest due first, and return their records with the new
        versions (a claimed WAITING saga stays WAITING, leased).

        Two concurrent callers never receive the same saga: each claim re-checks, inside the
        script, that the saga is still recoverable. A claimed record that cannot be read back
        is reported (see :func:`saga_core.storage.read_records`), parked with the error as its
        reason (so it is not claimed again until an operator repairs and unparks it) and left
        out; a record whose ``head`` the scripts cannot read is reported, not claimed and left
        out.
        """
        return await _recovery.claim_recoverable(
            self._path, self._layout, owner, lease_seconds, limit
        )

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
        await _recovery.renew_lease(self._path, self._layout, saga_id, owner, lease_seconds)

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_name: str | None = None,
        parked: bool | None = None,
        updated_before: datetime | None = None,
        lease_owner: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Return up to ``limit`` sagas matching every given filter, oldest update first:
        unfinished, parked and finished ones (while retained); ``None`` filters are not
        applied, ``updated_before`` (aware) keeps the sagas last updated strictly before it,
        ``lease_owner`` the sagas whose lease names that owner, live or expired (a process
        restarted under its old name finds its sagas with it).

        An operator query, not a hot path: it pages through the shards' ``updated``,
        ``parked`` and ``finished`` indexes (only those the filters can match) oldest first,
        reading each record to filter it, so it costs O(n) over the prefix's sagas in the
        worst case (filters that match little), in pages of a bounded size so that Redis
        stays responsive. The result is not one snapshot: a saga written meanwhile may show
        its older or newer state.

        Raises:
            SagaUsageError: ``limit`` is negative, a filter has the wrong type, or
                ``lease_owner`` is an empty string.
        """
        return await _listing.list_sagas(
            self._path,
            self._layout,
            status,
            saga_name,
            parked,
            updated_before,
            lease_owner,
            limit,
        )

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
        await _recovery.park(self._path, self._layout, saga_id, owner, reason)

    async def deliver_signal(self, signal: NewSignal) -> bool:
        """Store a signal for a saga in one script; False (nothing written) when a signal with
        the same ``signal_id`` was delivered to it before, pending or consumed.

        Accepted while the saga is RUNNING or WAITING with no cancel requested and has not
        gone past the wait (see :meth:`saga_core.storage.SagaStorage.deliver_signal`); a
        WAITING saga waiting for that name becomes due now. Neither the version nor
        ``updated_at`` changes.

        Raises:
            SagaNotFoundError: no such saga.
            SagaFinishedError: the saga is COMPLETED or COMPENSATED.
            SagaSignalRefusedError: the saga does not accept it (checked after the duplicate
                check).
            SagaUsageError: an id, name or payload that is not a str, a cursor that is not
                an int >= 0.
        """
        return await self._writes.deliver_signal(signal)

    async def request_cancel(self, saga_id: UUID, *, reason: str) -> SagaRecord:
        """Record the decision to cancel a RUNNING or WAITING saga (the first reason wins) and
        return its record; a WAITING saga becomes due now. Neither the version nor
        ``updated_at`` changes. A saga already cancelled, COMPENSATING or FAILED is returned
        unchanged.

        Raises:
            SagaNotFoundError: no such saga.
            SagaFinishedError: the saga is COMPLETED or COMPENSATED.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`, or ``reason`` not a str.
        """
        return await self._writes.request_cancel(saga_id, reason)

    async def unpark(self, saga_id: UUID) -> SagaRecord:
        """Take a saga out of the dead-letter state (``parked=False``, ``attempts=0``, a new
        ``updated_at``) and return its record; it is recoverable at once. A saga that is not
        parked is returned unchanged.

        Raises:
            SagaNotFoundError: no such saga.
            SagaUsageError: ``saga_id`` is not a :class:`uuid.UUID`.
        """
        return await _recovery.unpark(self._path, self._layout, saga_id)

    def work_notifications(self) -> AbstractAsyncContextManager[Notifications]:
        """Listen for sagas that become due in any process (a
        :class:`~saga_core.storage.WorkNotifications` storage): the block's value yields
        once per notification (several that arrive together may be yielded once).

        The scripts that make a saga due publish to the prefix's work channel
        (``<key_prefix>work``) in the same atomic step as the write: a WAITING saga created
        due now (a detached start), a signal a WAITING saga waits for, a cancel of a WAITING
        saga; a checkpoint publishes nothing. The listener holds a connection of its own
        (``SUBSCRIBE``, on any node of a cluster) and, after losing it, subscribes again by
        itself and then yields once (what was published meanwhile is lost); when it cannot
        for 30 seconds, the iterator raises StorageUnavailableError.

        Raises (on entering):
            StorageUnavailableError: the storage is closed, or Redis cannot be reached.
            SagaUsageError: a storage opened from a URL used outside its ``async with``
                block, or a ``redis.asyncio`` client outside asyncio.
        """
        return work_notifications(self._path, self._layout.work_channel, self._layout.prefix)

    async def aclose(self) -> None:
        """Close the storage: later calls raise :class:`~saga_core.StorageUnavailableError`.

        Inside ``async with`` the client the storage opened itself (:meth:`from_url`) keeps
        its connections until the block ends, which releases them (a client's connections
        live in the block that opened them); outside, they are released now. Never closes a
        client the storage was given. Idempotent.
        """
        if self._entered:
            self._path.refuse_calls()
        else:
            await self._path.aclose()

    async def __aenter__(self) -> RedisSagaStorage:
        """Open the client the storage opened itself (:meth:`from_url`); its connections
        live until the block ends.

        Raises:
            StorageUnavailableError: the storage is closed, or Redis cannot be reached.
        """
        await self._path.open()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        await self._path.aclose()
