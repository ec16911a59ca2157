"""The storage's scripts and the types of their keys and arguments, one pair per script.

Each ``NamedTuple``'s field order is the order of the script's ``KEYS`` or ``ARGV`` (a test
reads the ``.lua`` files and holds them together); what each script does and replies is
written at the top of its file in ``lua/``, and the failure replies and the record's ``head``
field in ``lua/prelude.lua``.

The scripts are constant source text: everything a caller supplies (ids, names, contexts,
journal entries) reaches them as ``KEYS``/``ARGV`` data and is only ever stored or compared,
never evaluated. Each script checks everything before its first write, so a refused call
returns a failure reply and leaves every key as it was (Redis does not undo the writes of a
script that fails halfway). Arguments are text: numbers as decimal digits, flags as ``'1'``
or ``'0'``, ``''`` for "none".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ._lua import Script


class CreateKeys(NamedTuple):
    record: str
    journal: str
    updated: str
    meta: str
    signals: str
    due: str
    waiting: str


class CreateArgs(NamedTuple):
    saga_id: str
    saga_name: str
    saga_version: str
    """The saga definition's version, in digits."""
    body: str
    owner: str
    lease_us: str
    token: str
    journal_cap: str
    """Journal entries kept, ``''`` for all."""
    shards: str
    layout_version: str
    status: str
    """``'running'`` or ``'waiting'``."""
    wake_us: str
    """WAITING: when it is due, µs since the epoch in digits; ``''`` for none."""
    deadline_us: str
    """The deadline, µs since the epoch in digits; ``''`` for none."""
    parent_id: str
    """The id of the saga that started this one as a child; ``''`` for none."""
    channel: str
    """The work channel, published to when the saga is WAITING and due now."""
    entries: Sequence[str]
    """The first journal entries (encoded), possibly none."""


class CheckpointKeys(NamedTuple):
    record: str
    journal: str
    updated: str
    parked: str
    finished: str
    signals: str
    due: str
    waiting: str


class CheckpointArgs(NamedTuple):
    saga_id: str
    retention_ms: str
    """How long a finished saga is kept, ``''`` forever."""
    journal_cap: str
    owner: str
    """The lease's owner, ``''`` to release it."""
    lease_us: str
    expected_version: str
    status: str
    body: str
    token: str
    has_error: str
    """``'1'``: store ``error_text`` as the error; ``'0'``: clear the error."""
    error_text: str
    wake_us: str
    """WAITING: when it is due, µs since the epoch in digits; ``''`` for none."""
    waiting_for: str
    """WAITING: the signal's name as a JSON string; ``''`` for none."""
    consume: str
    """The id of the pending signal the write consumes; ``''`` for none."""
    unless: str
    """A signal name (JSON string) whose pending signal refuses the write; ``''`` for none."""
    entries: Sequence[str]


class ClaimKeys(NamedTuple):
    record: str
    updated: str
    meta: str
    signals: str
    due: str
    waiting: str


class ClaimArgs(NamedTuple):
    saga_id: str
    owner: str
    lease_us: str
    token: str
    shards: str
    layout_version: str
    force: str
    """``'1'``: take the lease whoever holds it, live or not; ``'0'``: only an expired one,
    or the caller's own."""


class ScanKeys(NamedTuple):
    updated: str
    meta: str
    parked: str
    due: str
    waiting: str


class ScanArgs(NamedTuple):
    mode: str
    """``'claim'`` claims the sagas it returns, ``'list'`` only lists them."""
    limit: str
    record_stem: str
    signals_stem: str
    owner: str
    lease_us: str
    token: str
    shards: str
    layout_version: str
    only: Sequence[str]
    """The only saga ids to consider; none: the whole indexes, earliest due first."""


class RenewKeys(NamedTuple):
    record: str


class RenewArgs(NamedTuple):
    owner: str
    lease_us: str


class ParkKeys(NamedTuple):
    record: str
    updated: str
    parked: str
    due: str
    waiting: str


class ParkArgs(NamedTuple):
    saga_id: str
    owner: str
    reason: str
    token: str


class UnparkKeys(NamedTuple):
    record: str
    updated: str
    parked: str
    finished: str
    signals: str
    due: str
    waiting: str


class UnparkArgs(NamedTuple):
    saga_id: str


class ListKeys(NamedTuple):
    index_key: str
    """The updated, waiting, parked or finished index of the shard."""
    meta: str


class ListArgs(NamedTuple):
    record_stem: str
    signals_stem: str
    min_score: str
    """The lowest update time (inclusive), ``'-inf'`` for none."""
    offset: str
    """Members at ``min_score`` already returned."""
    max_score: str
    """``'+inf'``, or ``'(<µs>'`` for strictly before."""
    page_size: str
    wanted: str
    status_filter: str
    name_filter: str
    """``''`` for any name, else ``'='`` followed by the name."""
    parked_filter: str
    """``''`` any, ``'1'`` parked only, ``'0'`` unparked only."""
    owner_filter: str
    """``''`` any lease, else the owner the lease must name (live or expired)."""
    shards: str
    layout_version: str


class ReadKeys(NamedTuple):
    record: str
    journal: str
    signals: str


class ReadArgs(NamedTuple):
    what: str
    """``'record'`` or ``'journal'``."""


class DeliverKeys(NamedTuple):
    record: str
    signals: str
    due: str


class DeliverArgs(NamedTuple):
    saga_id: str
    signal_id: str
    name: str
    """The signal's name as a JSON string."""
    payload: str
    wait_cursor: str
    wait_step: str
    """The wait's step id as a JSON string (as the record's body holds the next step)."""
    token: str
    channel: str
    """The work channel, published to when the signal makes the saga due."""


class CancelKeys(NamedTuple):
    record: str
    signals: str
    due: str


class CancelArgs(NamedTuple):
    saga_id: str
    reason: str
    channel: str
    """The work channel, published to when the cancel makes a WAITING saga due."""


CREATE = Script("create", CreateKeys, CreateArgs, spread_last=True)
CHECKPOINT = Script("checkpoint", CheckpointKeys, CheckpointArgs, spread_last=True)
CLAIM = Script("claim", ClaimKeys, ClaimArgs)
SCAN = Script("scan", ScanKeys, ScanArgs, spread_last=True)
RENEW = Script("renew", RenewKeys, RenewArgs)
PARK = Script("park", ParkKeys, ParkArgs)
UNPARK = Script("unpark", UnparkKeys, UnparkArgs)
LIST = Script("list", ListKeys, ListArgs)
READ = Script("read", ReadKeys, ReadArgs)
DELIVER = Script("deliver", DeliverKeys, DeliverArgs)
CANCEL = Script("cancel", CancelKeys, CancelArgs)

#: Every script of the storage.
ALL_SCRIPTS: tuple[Script[Any, Any], ...] = (
    CREATE,
    CHECKPOINT,
    CLAIM,
    SCAN,
    RENEW,
    PARK,
    UNPARK,
    LIST,
    READ,
    DELIVER,
    CANCEL,
)
