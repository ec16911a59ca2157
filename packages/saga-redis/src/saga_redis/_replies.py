"""What a failure means for a saga: script failure replies and transport exceptions turned into
the core's errors.

The scripts (:mod:`._scripts`) answer a refused call with a table naming the failure; the
transports raise coredis's or redis-py's exceptions. Both end here, so that one place
decides which core error a caller sees, and every message says what to do.
"""

from __future__ import annotations

from typing import Any, NoReturn
from uuid import UUID

import coredis.exceptions
import redis

from saga_core import (
    SagaAlreadyExistsError,
    SagaCancelledError,
    SagaError,
    SagaFinishedError,
    SagaLeaseHeldError,
    SagaNotFoundError,
    SagaParkedError,
    SagaSignalPendingError,
    SagaSignalRefusedError,
    SagaStorageError,
    SagaUsageError,
    SagaVersionConflictError,
    StorageCorruptedError,
    StorageSchemaError,
    StorageUnavailableError,
)

from ._keys import LAYOUT_VERSION, KeyLayout
from ._records import micros_to_datetime, text

# Error replies that mean "not now" rather than "never": a busy, loading or read-only server,
# or a primary that lost the replicas it needs to take writes (min-replicas-to-write: the
# moment of a failover, before the sentinels demote it).
_UNAVAILABLE_REPLIES = (
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "NOREPLICAS",
)
# What each role of key (the part after the hash tag) holds.
_KEY_TYPES = (
    ("record:", "hash"),
    ("journal:", "list"),
    ("signals:", "hash"),
    ("updated", "sorted set"),
    ("due", "sorted set"),
    ("waiting", "sorted set"),
    ("meta", "hash"),
    ("parked", "sorted set"),
    ("finished", "sorted set"),
)


def reply_tag(reply: Any) -> str:
    """The first element of a script's table reply as text (``"ok"``, ``"missing"`` ...), or
    ``""`` for any other reply."""
    if isinstance(reply, (list, tuple)) and reply:
        return text(reply[0])
    return ""


# What a client raises while no node can serve: unreachable, timed out, a cluster without a
# node for the slot, a Sentinel set that names no primary.
_UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ClusterError,
    coredis.exceptions.ClusterRoutingError,
    coredis.exceptions.PrimaryNotFoundError,
)
# A cluster client raises the base class itself when it cannot learn the cluster's layout
# (no seed node reachable, slots not all covered); its subclasses mean other things (keys in
# two slots: a bug of ours), so the class is matched exactly.
_CLUSTER_LAYOUT_UNKNOWN = coredis.exceptions.RedisClusterError
# Error replies: the server answered, and refused.
_REFUSALS = (redis.ResponseError, coredis.exceptions.ResponseError)
_READ_ONLY = (redis.exceptions.ReadOnlyError, coredis.exceptions.ReadOnlyError)


def transport_error(exc: Exception, prefix: str, where: str | None = None) -> SagaError:
    """The core error for an exception a transport raised (the caller chains ``exc``).

    ``where`` names the deployment the storage was opened on, without credentials (a URL's
    :meth:`~._url.RedisTarget.describe`), or is None for a client the storage was given,
    whose own errors name the address they tried.
    """
    at = f" at {where}" if where else ""
    misconfigured = _wrong_deployment(exc, where)
    if misconfigured is not None:
        return misconfigured
    if isinstance(exc, _UNREACHABLE) or type(exc) is _CLUSTER_LAYOUT_UNKNOWN:
        return StorageUnavailableError(
            f"Redis cannot be reached{at} ({type(exc).__name__}: {exc}); the saga keeps its "
            f"last written state and is recoverable once Redis is back"
        )
    if isinstance(exc, _REFUSALS):
        message = str(exc)
        if isinstance(exc, _READ_ONLY) or message.startswith(_UNAVAILABLE_REPLIES):
            return StorageUnavailableError(
                f"Redis{at} cannot take writes now ({message}); retry once it is back"
            )
        if "WRONGTYPE" in message:
            return StorageCorruptedError(
                f"a key under the prefix {prefix!r} holds a Redis type saga-redis does not "
                f"write there ({message}); nothing was changed"
            )
        return SagaStorageError(f"Redis refused a saga-redis script: {message}")
    return SagaStorageError(f"the Redis client failed ({type(exc).__name__}: {exc})")


def _wrong_deployment(exc: Exception, where: str | None) -> SagaUsageError | None:
    """The error for a URL that names the wrong kind of deployment: a ``redis+cluster://``
    URL whose nodes run without cluster mode, or a ``redis+sentinel://`` URL whose nodes are
    plain servers rather than sentinels; None for anything else."""
    named = where or "the Redis URL"
    cause = exc.__cause__
    if (
        isinstance(exc, coredis.exceptions.RedisClusterError)
        and isinstance(cause, coredis.exceptions.ResponseError)
        and "cluster support disabled" in str(cause)
    ):
        return SagaUsageError(
            f"{named} names servers that run without cluster mode ({cause}): open one "
            f"server with a redis:// URL, or give the URL the nodes of a Redis Cluster"
        )
    if isinstance(exc, coredis.exceptions.UnknownCommandError) and "'SENTINEL'" in str(exc):
        return SagaUsageError(
            f"{named} names servers that are not Redis Sentinels (they do not know the "
            f"SENTINEL command): give the sentinels' addresses (port 26379 by default), or "
            f"open one server with a redis:// URL"
        )
    return None


def raise_failure(
    reply: Any,
    saga_id: UUID | None,
    layout: KeyLayout,
    *,
    expected_version: int | None = None,
    owner: str | None = None,
    signal_name: str | None = None,
) -> NoReturn:
    """Raise the core error for a script's failure reply about ``saga_id`` (``signal_name``:
    the signal a delivery was refused)."""
    tag = reply_tag(reply)
    detail = [text(item) for item in reply[1:]] if tag else []
    saga = f"saga {saga_id}"
    if tag == "missing":
        raise SagaNotFoundError(
            f"no saga with id {saga_id} in Redis under the prefix {layout.prefix!r} (never "
            f"stored, or finished and expired after retain_finished_seconds)"
        )
    if tag == "exists":
        raise SagaAlreadyExistsError(
            f"{saga} already exists; start the saga with a new id, or recover the existing one"
        )
    if tag == "finished":
        raise SagaFinishedError(f"{saga} is {detail[0]}, a final state that is never written again")
    if tag == "conflict":
        raise SagaVersionConflictError(
            f"{saga} is at version {detail[0]}, not the expected {expected_version}: another "
            f"runner wrote it; stop without writing"
        )
    if tag == "leased":
        until = micros_to_datetime(int(detail[1])).isoformat()
        raise SagaLeaseHeldError(
            f"{saga} is leased to {detail[0]!r} until {until}; it is not stalled, leave it to "
            f"its owner"
        )
    if tag == "notowner":
        held = f"its lease is {detail[0]!r}'s" if detail[0] else "it holds no lease"
        raise SagaLeaseHeldError(
            f"{saga} is not leased to {owner!r} ({held}): it was taken over or released; "
            f"stop without writing"
        )
    if tag == "cancelled":
        raise SagaCancelledError(
            f"{saga} was cancelled ({detail[0]}); it may not move forward: compensate it"
        )
    if tag == "signalpending":
        raise SagaSignalPendingError(
            f"{saga} has a pending signal {detail[0]}: it arrived first, so the saga takes "
            f"it; nothing was written"
        )
    if tag == "unconsumable":
        raise SagaVersionConflictError(
            f"{saga} has no pending signal {detail[0]!r} to consume: another runner consumed "
            f"it; stop without writing"
        )
    if tag == "refused":
        why, state = detail
        if why == "pending":
            raise SagaSignalRefusedError(
                f"{saga} has a signal {signal_name!r} pending already (id {state!r}) and its "
                f"wait takes one; nothing was stored"
            )
        if why == "past":
            raise SagaSignalRefusedError(
                f"{saga} has gone past its wait for signal {signal_name!r} (it took an "
                f"earlier one, or the wait timed out); nothing was stored"
            )
        raise SagaSignalRefusedError(
            f"{saga} does not accept signal {signal_name!r}: it is {state}, so it will not "
            f"wait for it again; nothing was stored"
        )
    if tag == "parked":
        raise SagaParkedError(
            f"{saga} is parked in the dead-letter state; unpark it (storage.unpark) to let "
            f"recovery try again"
        )
    if tag == "type":
        key, found = detail
        raise foreign_type(key, found, layout, saga_id if _is_saga_key(key) else None)
    if tag == "corrupt":
        raise not_a_record(detail[0], saga_id)
    if tag == "orphan":
        record = layout.record(saga_id) if saga_id is not None else "its record"
        raise StorageCorruptedError(
            f"the Redis key {detail[0]!r} exists but {saga} has no record ({record!r}): it was "
            f"not written by saga-redis, or the record was deleted by hand. Nothing was "
            f"changed; delete that key to reuse the id",
            saga_id=saga_id,
        )
    if tag == "layout":
        key, shards, layout_version = detail
        if shards == str(layout.shards) and layout_version != LAYOUT_VERSION:
            raise StorageSchemaError(
                f"the keys under the prefix {layout.prefix!r} were written by another version "
                f"of saga-redis (key layout {layout_version or '?'}, see {key!r}; this one "
                f"writes layout {LAYOUT_VERSION}); finish those sagas with the version that "
                f"wrote them, or use another key_prefix (see the saga-redis README)"
            )
        raise StorageSchemaError(
            f"the keys under the prefix {layout.prefix!r} were written with "
            f"shards={shards or '?'} (layout {layout_version or '?'}, see {key!r}), but this "
            f"storage uses shards={layout.shards} (layout {LAYOUT_VERSION}); open it with the "
            f"same shard count, or use another key_prefix"
        )
    raise SagaStorageError(f"unexpected reply from a saga-redis script: {reply!r}")


def foreign_type(
    key: str, found: str, layout: KeyLayout, saga_id: UUID | None
) -> StorageCorruptedError:
    """The error for ``key`` holding a Redis type saga-redis never writes there; ``saga_id``
    names the saga when the key is its record or journal."""
    saga = "" if saga_id is None else f"saga {saga_id}: "
    return StorageCorruptedError(
        f"{saga}the Redis key {key!r} holds a {found}, not the {_expected_type(key)} saga-redis "
        f"keeps there: it was not written by saga-redis (does another application use the "
        f"prefix {layout.prefix!r}?). Nothing was changed; delete or rename that key, or use "
        f"another key_prefix",
        saga_id=saga_id,
    )


def not_a_record(key: str, saga_id: UUID | None) -> StorageCorruptedError:
    """The error for the hash ``key`` (``saga_id``'s record) whose ``head`` the scripts cannot
    read."""
    saga = "" if saga_id is None else f"saga {saga_id}: "
    return StorageCorruptedError(
        f"{saga}the Redis hash {key!r} is not a saga record (its head field, which holds the "
        f"version, status and update time, is missing or invalid): it was not written by "
        f"saga-redis or was changed by hand. Nothing was changed; inspect it with HGETALL",
        saga_id=saga_id,
    )


def _is_saga_key(key: str) -> bool:
    return key.rsplit("}:", 1)[-1].startswith(("record:", "journal:", "signals:"))


def _expected_type(key: str) -> str:
    # The part after the hash tag names the key's role (the prefix may contain anything).
    role = key.rsplit("}:", 1)[-1]
    for start, kind in _KEY_TYPES:
        if role.startswith(start):
            return kind
    return "type"
