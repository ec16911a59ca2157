"""Recovery: finding the sagas no runner holds, leasing them to a worker, renewing a lease,
and the dead-letter state (park, unpark). The storage's public methods of the same names say
what each does and raises; these functions take the storage's request path and key layout.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from uuid import UUID

from saga_core import SagaError, SagaRecord, SagaUsageError, StorageCorruptedError
from saga_core.storage import describe_error, read_records, require_saga_id

from ._arguments import check_limit, micros_arg, owner_arg
from ._keys import LAYOUT_VERSION, KeyLayout, ShardKeys
from ._reading import Row, earliest_due, is_unreadable, reply_rows, row_decoder
from ._records import decode_record, pairs
from ._replies import raise_failure, reply_tag
from ._request import RequestPath
from ._scripts import (
    CLAIM,
    PARK,
    RENEW,
    SCAN,
    UNPARK,
    ClaimArgs,
    ClaimKeys,
    ParkArgs,
    ParkKeys,
    RenewArgs,
    RenewKeys,
    ScanArgs,
    ScanKeys,
    UnparkArgs,
    UnparkKeys,
)

# Rounds of "list the oldest candidates, then claim them" a sharded claim_recoverable makes
# when other workers keep taking its candidates first.
_CLAIM_ROUNDS = 5

logger = logging.getLogger("saga_redis")


async def list_recoverable(path: RequestPath, layout: KeyLayout, limit: int) -> list[SagaRecord]:
    """Up to ``limit`` recoverable sagas, earliest due first, without claiming them."""
    check_limit(limit)
    if limit == 0:
        return []
    found: list[SagaRecord] = []
    for shard in layout.all_shards():
        rows = await _scan(path, layout, shard, "list", limit, "", "0")
        decode = row_decoder(layout, shard.record_stem, shard.updated)
        found.extend(read_records(rows, decode).records)
    return earliest_due(found, limit)


async def claim(
    path: RequestPath,
    layout: KeyLayout,
    saga_id: UUID,
    owner: str,
    lease_seconds: float,
    force: bool,
) -> SagaRecord:
    """Lease one saga to ``owner`` (``force``: whoever holds it) and return its record with
    the new version."""
    require_saga_id(saga_id)
    shard = layout.shard_of(saga_id)
    sid = str(saga_id)
    record = shard.record_stem + sid
    keys = ClaimKeys(
        record=record,
        updated=shard.updated,
        meta=shard.meta,
        signals=shard.signals_stem + sid,
        due=shard.due,
        waiting=shard.waiting,
    )
    args = ClaimArgs(
        saga_id=sid,
        owner=owner_arg(owner),
        lease_us=micros_arg(lease_seconds),
        token=path.token(),
        shards=str(layout.shards),
        layout_version=LAYOUT_VERSION,
        force="1" if force else "0",
    )
    reply = await path.run(CLAIM, keys, args)
    if reply_tag(reply) != "ok":
        raise_failure(reply, saga_id, layout)
    return decode_record(saga_id, record, pairs(reply[1]))


async def claim_recoverable(
    path: RequestPath, layout: KeyLayout, owner: str, lease_seconds: float, limit: int
) -> list[SagaRecord]:
    """Claim up to ``limit`` recoverable sagas for ``owner``, earliest due first."""
    check_limit(limit)
    owner = owner_arg(owner)
    lease = micros_arg(lease_seconds)
    if limit == 0:
        return []
    shards = layout.all_shards()
    if len(shards) == 1:
        return await _claim_in(path, layout, shards[0], limit, owner, lease)
    # Sharded: find the globally earliest due candidates, then claim them shard by shard. A
    # candidate another worker takes in between is skipped by the claim script.
    claimed: list[SagaRecord] = []
    for _ in range(_CLAIM_ROUNDS):
        wanted = limit - len(claimed)
        candidates: list[SagaRecord] = []
        # Candidates that cannot be read back, by shard: claimed too, to be parked.
        damaged: dict[int, list[str]] = {}
        for number, shard in enumerate(shards):
            rows = await _scan(path, layout, shard, "list", wanted, "", "0")
            decode = row_decoder(layout, shard.record_stem, shard.updated)
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
        chosen = earliest_due(candidates, wanted)
        order = {record.saga_id: index for index, record in enumerate(chosen)}
        taken: list[SagaRecord] = []
        for number, shard in enumerate(shards):
            ids = [str(r.saga_id) for r in chosen if layout.shard_of(r.saga_id) is shard]
            ids += damaged.get(number, ())
            if ids:
                taken.extend(await _claim_in(path, layout, shard, len(ids), owner, lease, ids))
        # A damaged candidate repaired meanwhile is claimed and returned, after the others.
        claimed.extend(sorted(taken, key=lambda record: order.get(record.saga_id, wanted)))
        if len(claimed) >= limit:
            break
    return claimed


async def renew_lease(
    path: RequestPath, layout: KeyLayout, saga_id: UUID, owner: str, lease_seconds: float
) -> None:
    """Extend ``owner``'s lease on a saga to ``now + lease_seconds``."""
    require_saga_id(saga_id)
    shard = layout.shard_of(saga_id)
    sid = str(saga_id)
    owner = owner_arg(owner)
    keys = RenewKeys(record=shard.record_stem + sid)
    reply = await path.run(RENEW, keys, RenewArgs(owner, micros_arg(lease_seconds)))
    if reply != 0:
        raise_failure(reply, saga_id, layout, owner=owner)


async def park(
    path: RequestPath, layout: KeyLayout, saga_id: UUID, owner: str, reason: str
) -> None:
    """Move a saga leased to ``owner`` to the dead-letter state with ``reason``."""
    require_saga_id(saga_id)
    if not isinstance(reason, str):
        raise SagaUsageError(f"park reason must be a string, got {reason!r}")
    shard = layout.shard_of(saga_id)
    sid = str(saga_id)
    owner = owner_arg(owner)
    keys = ParkKeys(
        record=shard.record_stem + sid,
        updated=shard.updated,
        parked=shard.parked,
        due=shard.due,
        waiting=shard.waiting,
    )
    args = ParkArgs(saga_id=sid, owner=owner, reason=reason, token=path.token())
    reply = await path.run(PARK, keys, args)
    if reply != 0:
        raise_failure(reply, saga_id, layout, owner=owner)


async def unpark(path: RequestPath, layout: KeyLayout, saga_id: UUID) -> SagaRecord:
    """Take a saga out of the dead-letter state and return its record."""
    require_saga_id(saga_id)
    shard = layout.shard_of(saga_id)
    sid = str(saga_id)
    record = shard.record_stem + sid
    keys = UnparkKeys(
        record=record,
        updated=shard.updated,
        parked=shard.parked,
        finished=shard.finished,
        signals=shard.signals_stem + sid,
        due=shard.due,
        waiting=shard.waiting,
    )
    reply = await path.run(UNPARK, keys, UnparkArgs(saga_id=sid))
    if reply_tag(reply) != "ok":
        raise_failure(reply, saga_id, layout)
    return decode_record(saga_id, record, pairs(reply[1]))


async def _scan(
    path: RequestPath,
    layout: KeyLayout,
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
        signals_stem=shard.signals_stem,
        owner=owner,
        lease_us=lease,
        token=path.token(),
        shards=str(layout.shards),
        layout_version=LAYOUT_VERSION,
        only=list(ids),
    )
    keys = ScanKeys(
        updated=shard.updated,
        meta=shard.meta,
        parked=shard.parked,
        due=shard.due,
        waiting=shard.waiting,
    )
    reply = await path.run(SCAN, keys, args)
    if reply_tag(reply) != "ok":
        raise_failure(reply, None, layout)
    return reply_rows(reply, 1)


async def _claim_in(
    path: RequestPath,
    layout: KeyLayout,
    shard: ShardKeys,
    limit: int,
    owner: str,
    lease: str,
    ids: Iterable[str] = (),
) -> list[SagaRecord]:
    """Claim up to ``limit`` recoverable sagas of ``shard`` (of ``ids`` only, if given) and
    return those that read back; park the claimed ones that do not."""
    rows = await _scan(path, layout, shard, "claim", limit, owner, lease, ids)
    decode = row_decoder(layout, shard.record_stem, shard.updated)
    read_records(filter(is_unreadable, rows), decode)  # reported; the script claimed none
    claimed = read_records(itertools.filterfalse(is_unreadable, rows), decode)
    for error in claimed.corrupt:
        if error.saga_id is not None:
            await _park_damaged(path, layout, error.saga_id, owner, error)
    return claimed.records


async def _park_damaged(
    path: RequestPath, layout: KeyLayout, saga_id: UUID, owner: str, error: StorageCorruptedError
) -> None:
    """Park a saga ``owner`` has just claimed whose record cannot be read back, with the
    error as the reason, so that no worker claims it again until it is repaired."""
    try:
        await park(path, layout, saga_id, owner, describe_error(error))
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
