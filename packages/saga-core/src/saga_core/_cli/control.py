"""``saga signal`` and ``saga cancel``: an operator steps into a saga that has not ended.

Both go through the runtime (:meth:`SagaMediator.signal`, :meth:`SagaMediator.cancel`) so the
CLI keeps the rules an application keeps: a signal is checked against the saga's definition
and its payload encoded by the context codec as the field its wait fills; a cancel is the
durable decision to roll back. The storage is read first only to say clearly what happened.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any, NamedTuple
from uuid import UUID

from saga_core._model.errors import SagaFinishedError, SagaUsageError
from saga_core._model.status import SagaStatus
from saga_core._runtime.mediator import SagaMediator
from saga_core._runtime.saga_map import SagaMap
from saga_core._storage.protocol import SagaRecord, SagaStorage

from .load import CliError, check_runnable, usage_error


class Outcome(NamedTuple):
    """What a command did: ``document`` for ``--json``, ``text`` for people (one line, shown
    with every control character escaped), and the exit code."""

    document: dict[str, Any]
    text: str
    exit_code: int = 0


def read_payload(text: str | None, path: str | None) -> Any:
    """The signal's payload: the JSON in ``text`` (``--payload``) or in the file at ``path``
    (``--payload-file``, ``-`` for stdin); ``None`` (JSON null) when neither is given.

    Raises:
        CliError: (usage) the file cannot be read, or the text is not JSON (``NaN`` and
            ``Infinity`` are not JSON either).
    """
    if path is not None:
        where = f"--payload-file {path}"
        try:
            text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise usage_error(f"cannot read {where}: {exc}") from None
    elif text is not None:
        where = "--payload"
    else:
        return None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise usage_error(
            f"{where} is not JSON ({exc}); a text payload is a JSON string, quoted: "
            """--payload '"alice"'"""
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


async def send_signal(
    storage: SagaStorage,
    saga_map: SagaMap,
    *,
    saga_id: UUID,
    name: str,
    payload: Any,
    signal_id: str,
    sagas_path: str,
) -> Outcome:
    """Deliver signal ``name`` (id ``signal_id``) with ``payload`` to saga ``saga_id``, by a
    mediator over ``saga_map`` and ``storage``. A signal id delivered before is reported as
    already delivered, with exit code 0: a retry with the same id is safe.

    Raises:
        SagaNotFoundError: no saga has this id.
        CliError: the saga has ended (exit 1); ``saga_map`` does not bind its name and
            version (usage).
        SagaUsageError: the saga never waits for ``name`` (usage).
        SagaContextError: the payload does not fit the wait's field (usage).
        SagaSignalRefusedError: the saga no longer waits for it (exit 1).
    """
    record = await storage.load(saga_id)
    if record.status.is_terminal:
        raise CliError(_ended(record, f"signal {name!r} was not delivered"))
    check_runnable(saga_map, record, sagas_path, outcome="the signal was not delivered")
    mediator = SagaMediator(saga_map, storage, container=_builds_no_step)
    try:
        delivered = await mediator.signal(saga_id, name, payload, signal_id=signal_id)
    except SagaFinishedError as exc:  # it ended since it was read
        raise CliError(str(exc)) from None
    document = {
        "saga_id": str(saga_id),
        "saga_name": record.saga_name,
        "signal": name,
        "signal_id": signal_id,
        "delivered": delivered,
    }
    if not delivered:
        text = f"signal id {signal_id} was already delivered to saga {saga_id}; nothing changed"
        return Outcome(document, text)
    if record.status is SagaStatus.WAITING and record.waiting_for == name:
        then = "it was waiting for it: a worker resumes it now"
    else:
        then = f"it is kept until the saga reaches its wait for {name!r}"
    text = f"signal {name!r} delivered to saga {saga_id} (signal id {signal_id}); {then}"
    return Outcome(document, text)


async def cancel_saga(storage: SagaStorage, *, saga_id: UUID, reason: str) -> Outcome:
    """Request the cancel of saga ``saga_id`` with ``reason`` (through a mediator over
    ``storage``; no saga class is needed). A saga that is rolling back already, was cancelled
    before (the first reason stays) or is compensated is reported with exit code 0; a
    completed one cannot be cancelled (exit 1).

    Raises:
        SagaNotFoundError: no saga has this id.
    """
    before = await storage.load(saga_id)
    mediator = SagaMediator(SagaMap(), storage, container=_builds_no_step)
    try:
        await mediator.cancel(saga_id, reason=reason)
    except SagaFinishedError:
        return _cancel_of_ended(await storage.load(saga_id))
    after = await storage.load(saga_id)
    document = {
        "saga_id": str(saga_id),
        "saga_name": after.saga_name,
        "status": after.status.value,
        "requested": False,
        "cancel_reason": after.cancel_reason,
    }
    if before.cancel_reason is not None:
        text = (
            f"saga {saga_id} was cancelled before (reason: {before.cancel_reason}); nothing changed"
        )
        return Outcome(document, text)
    if after.cancel_reason is None:  # COMPENSATING or FAILED: rolling back already
        text = f"saga {saga_id} is {after.status.value}: it is rolling back already"
        text += "; nothing changed"
        if after.status is SagaStatus.FAILED:
            text += " (its compensation failed: retry it with 'saga retry-compensation')"
        return Outcome(document, text)
    document["requested"] = True
    if after.status is SagaStatus.WAITING:
        then = "a worker compensates it now"
    else:
        then = "its runner compensates it at its next step (or recovery does, if it stalled)"
    return Outcome(document, f"saga {saga_id} cancelled (reason: {after.cancel_reason}): {then}")


def _cancel_of_ended(record: SagaRecord) -> Outcome:
    if record.status is not SagaStatus.COMPENSATED:
        raise CliError(_ended(record, "it cannot be cancelled"))
    document = {
        "saga_id": str(record.saga_id),
        "saga_name": record.saga_name,
        "status": record.status.value,
        "requested": False,
        "cancel_reason": record.cancel_reason,
    }
    text = f"saga {record.saga_id} is compensated already; nothing to cancel"
    return Outcome(document, text)


def _ended(record: SagaRecord, what: str) -> str:
    return f"saga {record.saga_id} is {record.status.value}: it has ended, so {what}"


def _builds_no_step(step_class: type[Any]) -> Any:
    """The container of the CLI's mediators: ``signal`` and ``cancel`` run no step, so they
    need no container (an application's steps may need one the CLI does not have)."""
    raise SagaUsageError(
        f"the saga CLI's signal and cancel commands run no step, yet {step_class!r} was to be "
        "built (a bug: please report it)"
    )
