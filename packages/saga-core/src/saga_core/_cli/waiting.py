"""How the CLI describes durable waits: what a WAITING saga waits for, when it wakes, its
deadline, a requested cancel and its pending signals.

What a saga waits for is read from its record alone (no saga class is needed): a signal wait
stores the signal's name as ``waiting_for``; a parent waiting for its child saga (a
``SubSaga``) stores ``child:<child id>`` there, the signal the child's end sends; a sleep
stores its wait id (``sleep:<name>``) as ``next_step``; a saga started detached is WAITING at
its first step until a worker runs it.
Stored text is data and is made safe by :func:`~saga_core._cli.text.terminal_text` here,
where it is placed; JSON documents keep it exact.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple
from uuid import UUID

from saga_core._engine.children import child_signal
from saga_core._model.status import SagaStatus
from saga_core._storage.protocol import PendingSignal, SagaRecord

from .text import format_duration, iso, short_time, terminal_text

_SLEEP_PREFIX = "sleep:"

WaitKind = Literal["signal", "sleep", "start", "child"]


class Wait(NamedTuple):
    """What a WAITING saga waits for: a signal (``name`` is the signal's), a sleep (``name``
    is the sleep's), its child saga's end (``name`` is the child's id) or, for a saga started
    detached, a worker to start it (``name`` None)."""

    kind: WaitKind
    name: str | None


def wait_of(record: SagaRecord) -> Wait | None:
    """What ``record`` waits for, or None when it is not WAITING."""
    if record.status is not SagaStatus.WAITING:
        return None
    if record.waiting_for is not None:
        child_id = _child_of(record.waiting_for)
        if child_id is not None:
            return Wait("child", str(child_id))
        return Wait("signal", record.waiting_for)
    step = record.next_step or ""
    if step.startswith(_SLEEP_PREFIX):
        return Wait("sleep", step[len(_SLEEP_PREFIX) :])
    return Wait("start", None)


def _child_of(signal: str) -> UUID | None:
    """The child saga whose end ``signal`` is (see :func:`child_signal`), or None."""
    try:
        child_id = UUID(signal.partition(":")[2])
    except ValueError:
        return None
    return child_id if child_signal(child_id) == signal else None


def describe_wait(record: SagaRecord) -> str:
    """``signal approved``, ``sleep sleep-1``, ``child saga <id>``, ``start (a worker runs
    it)``, or ``-``."""
    wait = wait_of(record)
    if wait is None:
        return "-"
    if wait.kind == "start":
        return "start (a worker runs it)"
    if wait.kind == "child":
        return f"child saga {wait.name}"
    return f"{wait.kind} {terminal_text(wait.name or '')}"


def describe_wake(record: SagaRecord, now: datetime, *, long: bool = False) -> str:
    """When a WAITING saga wakes: ``2025-01-31 12:00:00Z`` (``(due)`` once reached; with
    ``long``, ``(in 59m)`` before), ``never`` for a signal wait with no timeout and no
    deadline, ``-`` for a saga that is not WAITING."""
    wait = wait_of(record)
    if wait is None:
        return "-"
    if record.wake_at is None:
        return "never (only its signal or a cancel wakes it)" if long else "never"
    return short_time(record.wake_at) + _relative(record.wake_at, now, "due", long=long)


def describe_deadline(record: SagaRecord, now: datetime, *, long: bool = False) -> str:
    """``2025-01-31 12:00:00Z`` (``(passed)`` once reached; with ``long``, ``(in 1d)``
    before), or ``-`` for a saga without a deadline."""
    if record.deadline_at is None:
        return "-"
    return short_time(record.deadline_at) + _relative(record.deadline_at, now, "passed", long=long)


def _relative(moment: datetime, now: datetime, reached: str, *, long: bool) -> str:
    if moment <= now:
        return f" ({reached})"
    if not long:
        return ""
    # Whole seconds: the table shows the moment to the second.
    return f" (in {format_duration(timedelta(seconds=int((moment - now).total_seconds())))})"


def wait_json(record: SagaRecord) -> dict[str, Any] | None:
    """What a WAITING saga waits for as ``{"kind": ..., "name": ...}``, else None."""
    wait = wait_of(record)
    return None if wait is None else {"kind": wait.kind, "name": wait.name}


def signals_json(signals: tuple[PendingSignal, ...], *, with_payload: bool) -> list[Any]:
    """Pending signals as JSON objects (each payload decoded when ``with_payload``)."""
    documents: list[Any] = []
    for signal in signals:
        document: dict[str, Any] = {
            "signal_id": signal.signal_id,
            "name": signal.name,
            "delivered_at": iso(signal.delivered_at),
        }
        if with_payload:
            document["payload"] = _decoded(signal.payload)
        documents.append(document)
    return documents


def signal_rows(signals: tuple[PendingSignal, ...]) -> list[tuple[str, str, str]]:
    """Pending signals as ``(name, id, delivered at)`` rows for a table, stored text made
    safe."""
    return [
        (terminal_text(s.name), terminal_text(s.signal_id), short_time(s.delivered_at))
        for s in signals
    ]


def _decoded(payload: str) -> Any:
    """A stored payload as a JSON value; its raw text if it is not valid JSON."""
    try:
        return json.loads(payload)
    except ValueError:
        return payload
