"""The operator's listing, ``list_sagas``: every saga of the prefix (unfinished — WAITING
ones through the ``waiting`` index — parked and finished while retained) matching some
filters, read through the shards' indexes in pages. The storage's public method of the same
name says what it does and raises."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from saga_core import SagaRecord, SagaStatus
from saga_core.storage import read_records

from ._arguments import check_limit, list_filters
from ._keys import LAYOUT_VERSION, KeyLayout, ShardKeys
from ._reading import oldest, reply_rows, row_decoder
from ._records import text
from ._replies import raise_failure, reply_tag
from ._request import RequestPath
from ._scripts import LIST, ListArgs, ListKeys

# Index members a list_sagas script call reads at most: bounds the time one call holds Redis.
_LIST_PAGE = 500


async def list_sagas(
    path: RequestPath,
    layout: KeyLayout,
    status: SagaStatus | None,
    saga_name: str | None,
    parked: bool | None,
    updated_before: datetime | None,
    lease_owner: str | None,
    limit: int,
) -> list[SagaRecord]:
    """Up to ``limit`` sagas matching every given filter, oldest update first."""
    check_limit(limit)
    filters = list_filters(status, saga_name, parked, updated_before, lease_owner)
    path.check_open()
    if limit == 0:
        return []
    terminal = status is not None and status.is_terminal
    best: dict[UUID, SagaRecord] = {}
    for shard in layout.all_shards():
        indexes: list[str] = []
        if parked is not True and not terminal:
            indexes.append(shard.updated)
        if parked is not True and status in (None, SagaStatus.WAITING):
            indexes.append(shard.waiting)
        if parked is not False:
            indexes.append(shard.parked)  # a parked saga stays there when it finishes
        # A finished saga holds no lease: a listing by lease owner never reads the finished.
        if parked is not True and (status is None or terminal) and lease_owner is None:
            indexes.append(shard.finished)
        for index in indexes:
            for record in await _list_index(path, layout, shard, index, limit, filters):
                # A parked saga that finished is in two indexes: keep its newest state.
                known = best.get(record.saga_id)
                if known is None or known.version < record.version:
                    best[record.saga_id] = record
    return oldest(list(best.values()), limit)


async def _list_index(
    path: RequestPath,
    layout: KeyLayout,
    shard: ShardKeys,
    index: str,
    limit: int,
    filters: list[str],
) -> list[SagaRecord]:
    """Up to ``limit`` sagas of one index matching ``filters``, oldest first, one page
    (one script call) at a time; records that cannot be read back are reported and left
    out."""
    status, name, parked, before, owner = filters
    low: str = "-inf"
    offset = 0
    found: list[SagaRecord] = []
    decode = row_decoder(layout, shard.record_stem, index)
    while True:
        args = ListArgs(
            record_stem=shard.record_stem,
            signals_stem=shard.signals_stem,
            min_score=low,
            offset=str(offset),
            max_score=before,
            page_size=str(_LIST_PAGE),
            wanted=str(limit - len(found)),
            status_filter=status,
            name_filter=name,
            parked_filter=parked,
            owner_filter=owner,
            shards=str(layout.shards),
            layout_version=LAYOUT_VERSION,
        )
        reply = await path.run(LIST, ListKeys(index_key=index, meta=shard.meta), args)
        if reply_tag(reply) != "ok":
            raise_failure(reply, None, layout)
        read = read_records(reply_rows(reply, 4), decode)
        found.extend(read.records)
        # The script counts what it returns, damaged records included; when it stopped
        # for that count, the next page holds the matches it did not return.
        if len(found) >= limit or (int(reply[1]) and not read.corrupt):
            return found
        low, offset = text(reply[2]), int(reply[3])
