"""The operations CLI: ``saga`` (or ``python -m saga_core``).

Commands: ``list``, ``show``, ``recover``, ``retry-compensation``, ``worker`` and ``graph``.
Every command but ``graph`` works on the storage at ``--url`` (default: the
``SAGA_STORAGE_URL`` environment variable), opened with :func:`saga_core.open_storage`, so
any installed storage plugin works. ``--json`` prints one JSON document on stdout instead of
text. Errors are one line on stderr; the exit code is 0 on success, 1 for a runtime failure,
2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any
from uuid import UUID

import anyio

from ._cli_format import (
    journal_json,
    record_json,
    report_json,
    report_text,
    saga_report,
    sagas_table,
)
from ._cli_graph import mermaid, saga_structure
from ._cli_load import CliError, import_object, load_saga_class, load_saga_map, usage_error
from ._cli_parser import URL_ENV, build_parser
from ._errors import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaError,
    SagaNotRegisteredError,
    SagaUsageError,
)
from ._mediator import SagaMap
from ._plugins import open_storage
from ._recovery import check_record_matches
from ._status import SagaStatus
from ._storage import SagaStorage
from ._worker import RecoveryWorker

logger = logging.getLogger("saga_core.cli")

_RETRYABLE = frozenset({SagaStatus.FAILED, SagaStatus.COMPENSATING})

Command = Callable[[argparse.Namespace], Awaitable[int]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "graph":
            return _graph(args)
        if not args.url:
            args.url = os.environ.get(URL_ENV)
        if not args.url:
            raise usage_error(f"no storage URL: pass --url URL or set {URL_ENV}")
        command = _COMMANDS[args.command]
        try:
            return anyio.run(partial(command, args), backend=args.backend)
        except BaseException as exc:
            raise _single(exc) from None
    except CliError as exc:
        return _fail(parser, str(exc), exc.exit_code)
    except SagaUsageError as exc:
        return _fail(parser, str(exc), 2)
    except SagaError as exc:
        return _fail(parser, str(exc), 1)
    except KeyboardInterrupt:
        return 130


# --- commands ------------------------------------------------------------------------------


async def _list(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    older_than: timedelta | None = args.older_than
    async with open_storage(args.url) as storage:
        records = await storage.list_sagas(
            status=None if args.status is None else SagaStatus(args.status),
            saga_name=args.name,
            parked=args.parked,
            updated_before=None if older_than is None else now - older_than,
            limit=args.limit,
        )
    if args.json:
        _emit_json([record_json(record, with_context=False) for record in records])
    elif records:
        print(sagas_table(records, now))
    else:
        print("no saga matches")
    return 0


async def _show(args: argparse.Namespace) -> int:
    saga_id: UUID = args.saga_id
    async with open_storage(args.url) as storage:
        record = await storage.load(saga_id)
        entries = await storage.history(saga_id)
    if args.json:
        _emit_json({**record_json(record, with_context=True), "journal": journal_json(entries)})
    else:
        print(saga_report(record, entries, datetime.now(timezone.utc)))
    return 0


async def _recover(args: argparse.Namespace, *, only_rollback: bool) -> int:
    saga_id: UUID = args.saga_id
    saga_map = load_saga_map(args.sagas)
    container = _load_container(args)
    async with open_storage(args.url) as storage:
        record = await storage.load(saga_id)
        result: dict[str, Any] = {"saga_id": str(saga_id), "saga_name": record.saga_name}
        if record.status.is_terminal:
            result.update(outcome=record.status.value, unparked=False, error=None)
            done = f"saga {saga_id} is {record.status.value} already; nothing to recover"
            return _outcome(args, result, done)
        if only_rollback and record.status not in _RETRYABLE:
            raise CliError(
                f"saga {saga_id} is {record.status.value}, not failed or compensating; "
                "retry-compensation only finishes a rollback (use 'recover' to resume it)"
            )
        _check_runnable(saga_map, record.saga_name, args.sagas)
        check_record_matches(saga_map.saga_named(record.saga_name).definition(), record)
        result["unparked"] = record.parked
        if record.parked:  # the operator asks for this saga: take it out of the dead letters
            await storage.unpark(saga_id)
            logger.info("saga %s taken out of the dead-letter state", saga_id)
        worker = RecoveryWorker(
            saga_map, storage, container=container, lease_seconds=args.lease_seconds
        )
        return await _drive(args, worker, saga_id, result)


async def _drive(
    args: argparse.Namespace, worker: RecoveryWorker, saga_id: UUID, result: dict[str, Any]
) -> int:
    try:
        await worker.recover(saga_id)
    except SagaCompensatedError as exc:
        result.update(outcome=SagaStatus.COMPENSATED.value, error=str(exc))
        return _outcome(args, result, str(exc))
    except SagaCompensationFailedError as exc:
        result.update(outcome=SagaStatus.FAILED.value, error=str(exc))
        if args.json:
            _emit_json(result)
        raise CliError(str(exc)) from None
    result.update(outcome=SagaStatus.COMPLETED.value, error=None)
    return _outcome(args, result, f"saga {saga_id} recovered: completed")


def _outcome(args: argparse.Namespace, result: dict[str, Any], text: str) -> int:
    if args.json:
        _emit_json(result)
    else:
        if result.get("unparked"):
            print(f"saga {result['saga_id']} was parked; unparked it")
        print(text)
    return 0


def _load_container(args: argparse.Namespace) -> object | None:
    if args.container is None:
        return None
    return import_object(args.container, option="--container")


def _check_runnable(saga_map: SagaMap, saga_name: str, sagas_path: str) -> None:
    """Refuse before claiming a saga this process cannot run (a claim would hold it)."""
    try:
        saga_map.saga_named(saga_name)
    except SagaNotRegisteredError:
        bound = ", ".join(sorted(repr(saga.name) for _, saga in saga_map)) or "none"
        raise usage_error(
            f"the saga is a {saga_name!r}, which --sagas {sagas_path} does not bind "
            f"(bound: {bound})"
        ) from None


async def _worker(args: argparse.Namespace) -> int:
    saga_map = load_saga_map(args.sagas)
    container = _load_container(args)
    async with open_storage(args.url) as storage:
        worker = RecoveryWorker(
            saga_map,
            storage,
            container=container,
            poll_interval=args.poll_interval,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            lease_seconds=args.lease_seconds,
            max_attempts=args.max_attempts,
        )
        if args.once:
            report = await worker.run_once()
            if args.json:
                _emit_json(report_json(report))
            else:
                print(report_text(report))
            return 0
        await _run_until_signalled(worker, storage)
    return 0


async def _run_until_signalled(worker: RecoveryWorker, storage: SagaStorage) -> None:
    """Run ``worker`` until SIGINT or SIGTERM, then cancel it: its cancellation is the
    graceful shutdown (compensations in progress finish, held sagas are handed back)."""
    scheme = _storage_kind(storage)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as task_group:
            await task_group.start(worker.run)
            logger.info(
                "recovery worker %s running on %s storage (%d sagas); stop it with Ctrl-C",
                worker.owner,
                scheme,
                len(worker.sagas),
            )
            async for signum in signals:
                logger.info("%s received: stopping the worker", signal.Signals(signum).name)
                task_group.cancel_scope.cancel()
                break
    logger.info("recovery worker %s stopped", worker.owner)


def _storage_kind(storage: SagaStorage) -> str:
    """A storage's kind for logs (its URL may hold a password, so it is never logged)."""
    return type(storage).__qualname__


def _graph(args: argparse.Namespace) -> int:
    saga_type = load_saga_class(args.saga_class)
    if args.json:
        _emit_json(saga_structure(saga_type))
    else:
        print(mermaid(saga_type))
    return 0


# --- helpers -------------------------------------------------------------------------------


def _emit_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def _fail(parser: argparse.ArgumentParser, message: str, exit_code: int) -> int:
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return exit_code


def _single(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one error each, else ``exc``."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not isinstance(inner, tuple) or len(inner) != 1:
            return exc
        exc = inner[0]


_COMMANDS: dict[str, Command] = {
    "list": _list,
    "show": _show,
    "recover": partial(_recover, only_rollback=False),
    "retry-compensation": partial(_recover, only_rollback=True),
    "worker": _worker,
}
