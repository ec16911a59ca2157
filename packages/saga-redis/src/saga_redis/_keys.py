"""The key layout: which Redis keys hold a saga, its journal and the recovery indexes.

Every key lives under the storage's prefix and carries a Redis Cluster hash tag naming its
*shard*, ``{N}`` with ``0 <= N < shards``. A saga's shard is its id (a 128-bit integer)
modulo the shard count, so a saga's record, its journal and its shard's indexes share one hash
slot, and every script touches keys of one slot only: each write is one atomic script, on a
single server and on a cluster alike. With ``shards=1`` (the default) everything lives in one
slot; a cluster spreads the sagas over its nodes when ``shards`` is larger (see the README).

For the prefix ``saga:`` and a saga in shard 0::

    saga:{0}:record:<saga id>    hash: one saga's state (its lease, a WAITING saga's wake
                                 time and signal name, its deadline and cancel reason, its
                                 parent's id)
    saga:{0}:journal:<saga id>   list: its journal entries, JSON arrays, oldest first
    saga:{0}:signals:<saga id>   hash: every signal delivered to it, by signal id: pending
                                 ones with name, payload, delivery time and order; consumed
                                 ones as '' (so a redelivery is still a duplicate)
    saga:{0}:updated             sorted set: unparked RUNNING, COMPENSATING and FAILED sagas
                                 of the shard, by last update (µs): the recovery index
    saga:{0}:due                 sorted set: unparked WAITING sagas, leased or not, by wake
                                 time (µs; +inf while only a signal or cancel can wake them):
                                 claims read those due by now, never walking the rest
    saga:{0}:waiting             sorted set: the same sagas as due, by last update (µs), for
                                 listings
    saga:{0}:parked              sorted set: parked (dead-letter) sagas, by last update (µs)
    saga:{0}:finished            sorted set: retained finished sagas, by finish time (µs)
    saga:{0}:meta                hash: the layout the shard was written with (shard count)

A checkpoint to WAITING moves a saga from ``updated`` to ``due`` and ``waiting``, and one to
another status moves it back. A claim leaves a WAITING saga in ``due`` at its wake time,
leased: it is found there again once that lease expires, in its old place. A delivered signal
it waits for, or a cancel, brings its ``due`` score forward to now. Finishing or parking takes
a saga out of all three; its signals expire with its record.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from uuid import UUID

from saga_core import SagaUsageError

#: The prefix used when none is given.
DEFAULT_KEY_PREFIX = "saga:"

# Letters, digits and a few separators. Braces would change the hash tag, and glob characters
# or spaces would make the keys awkward to SCAN for and to type in redis-cli.
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")

#: The layout version stored in each shard's meta hash; bumped by an incompatible change.
#: 2: a record's checked fields in one ``head`` field and the rest in ``body``; no lease index.
#: Durable waits (WAITING sagas, signals, cancels) kept it: what they add — the head's cancel
#: flag (4), the ``wait``, ``deadline`` and ``cancel`` fields, the ``signals``, ``due`` and
#: ``waiting`` keys — is absent from records stored before, which read as they did. So did the
#: ``parent`` field (a child saga's parent id): a record without it has no parent.
LAYOUT_VERSION = "2"


def validate_key_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid key prefix, else raise :class:`SagaUsageError`.

    A prefix is 1 to 100 characters: letters, digits and ``_ . : / -``, starting with a letter
    or digit (``"saga:"``, ``"shop/orders:"``).
    """
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise SagaUsageError(
            f"invalid Redis key prefix {prefix!r}: use 1 to 100 characters among letters, digits "
            f"and '_.:/-', starting with a letter or digit, e.g. 'saga:' or 'shop:sagas:' "
            f"(braces would break the cluster hash tags, spaces and glob characters the key "
            f"scans)"
        )
    return prefix


class ShardKeys(NamedTuple):
    """The keys of one shard, and the stems its per-saga keys are built from."""

    record_stem: str
    """``<prefix>{N}:record:``; a saga's record key is this followed by its id."""
    journal_stem: str
    """``<prefix>{N}:journal:``."""
    signals_stem: str
    """``<prefix>{N}:signals:``."""
    updated: str
    due: str
    waiting: str
    meta: str
    parked: str
    finished: str


class KeyLayout:
    """Key names for one prefix and shard count (see the module's docstring)."""

    __slots__ = ("_shards", "prefix", "shards", "work_channel")

    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = validate_key_prefix(prefix)
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 16384:
            raise SagaUsageError(
                f"shards must be an int from 1 to 16384 (the cluster's hash slots), got {shards!r}"
            )
        self.shards = shards
        #: The pub/sub channel the scripts publish to when a saga becomes due (a detached
        #: start, a signal it waits for, a cancel): not a key, and not sharded (see
        #: :mod:`._notifications`).
        self.work_channel = f"{self.prefix}work"
        self._shards = tuple(self._build(index) for index in range(shards))

    def _build(self, index: int) -> ShardKeys:
        base = f"{self.prefix}{{{index}}}:"
        return ShardKeys(
            record_stem=f"{base}record:",
            journal_stem=f"{base}journal:",
            signals_stem=f"{base}signals:",
            updated=f"{base}updated",
            due=f"{base}due",
            waiting=f"{base}waiting",
            meta=f"{base}meta",
            parked=f"{base}parked",
            finished=f"{base}finished",
        )

    def shard_of(self, saga_id: UUID) -> ShardKeys:
        """The keys of the shard that holds ``saga_id``."""
        return self._shards[saga_id.int % self.shards]

    def all_shards(self) -> tuple[ShardKeys, ...]:
        """Every shard's keys, shard 0 first."""
        return self._shards

    def record(self, saga_id: UUID) -> str:
        """The key of the hash holding ``saga_id``'s state."""
        return f"{self.shard_of(saga_id).record_stem}{saga_id}"

    def journal(self, saga_id: UUID) -> str:
        """The key of the list holding ``saga_id``'s journal."""
        return f"{self.shard_of(saga_id).journal_stem}{saga_id}"

    def signals(self, saga_id: UUID) -> str:
        """The key of the hash holding the signals delivered to ``saga_id``."""
        return f"{self.shard_of(saga_id).signals_stem}{saga_id}"

    def pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every key of this layout (the prefix is glob-free)."""
        return f"{self.prefix}{{*}}:*"
