"""A saga's own writes and reads, the runners' hot path: ``create``, ``checkpoint``, ``load``
and ``history``, and the writes from outside its runner, ``deliver_signal`` and
``request_cancel``: each one script call on the saga's keys."""

from __future__ import annotations

from typing import Any, NamedTuple
from uuid import UUID

from saga_core import SagaRecord, SagaStatus, SagaUsageError
from saga_core.storage import (
    Checkpoint,
    JournalEntry,
    NewSaga,
    NewSignal,
    check_new_saga,
    encode_journal_entry,
    require_saga_id,
)

from ._arguments import (
    cursor_arg,
    instant_arg,
    micros_arg,
    next_step_arg,
    owner_arg,
    parent_arg,
    saga_version_arg,
    text_arg,
)
from ._keys import LAYOUT_VERSION, KeyLayout
from ._records import (
    decode_journal,
    decode_record,
    encode_applied,
    encode_body,
    pairs,
    quote,
)
from ._replies import raise_failure, reply_tag
from ._request import RequestPath
from ._scripts import (
    CANCEL,
    CHECKPOINT,
    CREATE,
    DELIVER,
    READ,
    CancelArgs,
    CancelKeys,
    CheckpointArgs,
    CheckpointKeys,
    CreateArgs,
    CreateKeys,
    DeliverArgs,
    DeliverKeys,
    ReadArgs,
    ReadKeys,
)

_TERMINAL_VALUES = frozenset(status.value for status in SagaStatus if status.is_terminal)
_WAITING = SagaStatus.WAITING.value
# Sagas whose keys a storage keeps for their next writes (about 1 KB each).
_SAGAS_KEPT = 1024


class _SagaKeys(NamedTuple):
    """One saga's id as text and the keys its create and checkpoints pass to their scripts."""

    sid: str
    create: CreateKeys
    checkpoint: CheckpointKeys


class SagaWrites:
    """Creates, checkpoints and reads sagas one at a time; the storage's public methods of
    the same names say what each does and raises.

    Args:
        path: the storage's request path.
        layout: the storage's key layout.
        retain_arg: how long a finished saga is kept, in milliseconds as text (``''``:
            forever).
        cap_arg: how many journal entries a saga keeps, as text (``''``: all).
    """

    __slots__ = ("_cap_arg", "_keys_by_saga", "_layout", "_path", "_retain_arg", "_shards_arg")

    def __init__(self, path: RequestPath, layout: KeyLayout, retain_arg: str, cap_arg: str) -> None:
        self._path = path
        self._layout = layout
        self._retain_arg = retain_arg
        self._cap_arg = cap_arg
        self._shards_arg = str(layout.shards)
        # By the id's integer value: a saga's writes pass equal ids, not always the same object.
        self._keys_by_saga: dict[int, _SagaKeys] = {}

    async def create(self, saga: NewSaga) -> None:
        saga_id = require_saga_id(saga.saga_id)
        waits = saga.status is SagaStatus.WAITING
        owner = "" if waits else owner_arg(saga.lease_owner)
        lease_us = "0" if waits else micros_arg(saga.lease_seconds)
        check_new_saga(saga)  # after the lease's own checks, which name a bad value's type
        keys = self._saga_keys(saga_id)
        path = self._path
        args = CreateArgs(
            saga_id=keys.sid,
            saga_name=saga.saga_name,
            saga_version=saga_version_arg(saga.saga_version),
            body=encode_body(0, next_step_arg(saga.next_step), "[]", saga.context),
            owner=owner,
            lease_us=lease_us,
            token=path.token(),
            journal_cap=self._cap_arg,
            shards=self._shards_arg,
            layout_version=LAYOUT_VERSION,
            status=_WAITING if waits else SagaStatus.RUNNING.value,
            wake_us=instant_arg(saga.wake_at, "NewSaga.wake_at") if waits else "",
            deadline_us=instant_arg(saga.deadline_at, "NewSaga.deadline_at"),
            parent_id=parent_arg(saga.parent_id),
            channel=self._layout.work_channel,
            entries=list(map(encode_journal_entry, saga.journal)),
        )
        reply = await path.run(CREATE, keys.create, args)
        if reply != 0:
            raise_failure(reply, saga_id, self._layout)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
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
        # What a WAITING checkpoint stores (others store no wait), and the signal conditions:
        # all '' on the common path, where the script never looks at them.
        wake_us = waiting_for = consume = unless = ""
        if value == _WAITING:
            owner, lease_us = "", "0"  # WAITING holds no lease
            wake_us = instant_arg(checkpoint.wake_at, "Checkpoint.wake_at")
            if checkpoint.waiting_for is not None:
                waiting_for = quote(text_arg(checkpoint.waiting_for, "Checkpoint.waiting_for"))
        if checkpoint.consume_signal is not None:
            consume = text_arg(checkpoint.consume_signal, "Checkpoint.consume_signal", empty=False)
        if checkpoint.unless_signal is not None:
            unless = quote(text_arg(checkpoint.unless_signal, "Checkpoint.unless_signal"))
        error = checkpoint.error
        keys = self._saga_keys(saga_id)
        path = self._path
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
            token=path.token(),
            has_error="0" if error is None else "1",
            error_text="" if error is None else error,
            wake_us=wake_us,
            waiting_for=waiting_for,
            consume=consume,
            unless=unless,
            entries=list(map(encode_journal_entry, checkpoint.journal)),
        )
        reply = await path.run(CHECKPOINT, keys.checkpoint, args)
        if reply != 0:
            raise_failure(
                reply, saga_id, self._layout, expected_version=checkpoint.expected_version
            )

    async def deliver_signal(self, signal: NewSignal) -> bool:
        saga_id = require_saga_id(signal.saga_id)
        layout = self._layout
        keys = DeliverKeys(
            record=layout.record(saga_id),
            signals=layout.signals(saga_id),
            due=layout.shard_of(saga_id).due,
        )
        args = DeliverArgs(
            saga_id=str(saga_id),
            signal_id=text_arg(signal.signal_id, "NewSignal.signal_id", empty=False),
            name=quote(text_arg(signal.name, "NewSignal.name")),
            payload=text_arg(signal.payload, "NewSignal.payload"),
            wait_cursor=cursor_arg(signal.wait_cursor, "NewSignal.wait_cursor"),
            wait_step=quote(text_arg(signal.wait_step, "NewSignal.wait_step")),
            token=self._path.token(),
            channel=layout.work_channel,
        )
        reply = await self._path.run(DELIVER, keys, args)
        if reply == 1 or reply == 0:
            return bool(reply)
        raise_failure(reply, saga_id, layout, signal_name=signal.name)

    async def request_cancel(self, saga_id: UUID, reason: str) -> SagaRecord:
        require_saga_id(saga_id)
        layout = self._layout
        record = layout.record(saga_id)
        keys = CancelKeys(
            record=record, signals=layout.signals(saga_id), due=layout.shard_of(saga_id).due
        )
        args = CancelArgs(
            saga_id=str(saga_id),
            reason=text_arg(reason, "reason"),
            channel=layout.work_channel,
        )
        reply = await self._path.run(CANCEL, keys, args)
        if reply_tag(reply) != "ok":
            raise_failure(reply, saga_id, layout)
        return decode_record(saga_id, record, pairs(reply[1]))

    async def load(self, saga_id: UUID) -> SagaRecord:
        require_saga_id(saga_id)
        record = self._layout.record(saga_id)
        reply = await self._read(saga_id, "record")
        return decode_record(saga_id, record, pairs(reply))

    async def history(self, saga_id: UUID) -> list[JournalEntry]:
        require_saga_id(saga_id)
        items = await self._read(saga_id, "journal")
        return decode_journal(saga_id, self._layout.journal(saga_id), items)

    def _saga_keys(self, saga_id: UUID) -> _SagaKeys:
        """The keys of ``saga_id``'s create and checkpoints, built once while it is in flight:
        a saga's writes come one after another, each naming the same keys."""
        found = self._keys_by_saga.get(saga_id.int)
        if found is None:
            shard = self._layout.shard_of(saga_id)
            record = self._layout.record(saga_id)
            journal = self._layout.journal(saga_id)
            signals = self._layout.signals(saga_id)
            found = _SagaKeys(
                sid=str(saga_id),
                create=CreateKeys(
                    record=record,
                    journal=journal,
                    updated=shard.updated,
                    meta=shard.meta,
                    signals=signals,
                    due=shard.due,
                    waiting=shard.waiting,
                ),
                checkpoint=CheckpointKeys(
                    record=record,
                    journal=journal,
                    updated=shard.updated,
                    parked=shard.parked,
                    finished=shard.finished,
                    signals=signals,
                    due=shard.due,
                    waiting=shard.waiting,
                ),
            )
            if len(self._keys_by_saga) >= _SAGAS_KEPT:
                self._keys_by_saga.clear()
            self._keys_by_saga[saga_id.int] = found
        return found

    async def _read(self, saga_id: UUID, what: str) -> Any:
        """The ``READ`` script's answer for the saga: its fields with its pending signals
        (``what="record"``) or its journal (``"journal"``)."""
        layout = self._layout
        keys = ReadKeys(
            record=layout.record(saga_id),
            journal=layout.journal(saga_id),
            signals=layout.signals(saga_id),
        )
        reply = await self._path.run(READ, keys, ReadArgs(what=what))
        if reply_tag(reply) != "ok":
            raise_failure(reply, saga_id, self._layout)
        return reply[1]
