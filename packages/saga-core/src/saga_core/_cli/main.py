"""The operations CLI: ``saga`` (or ``python -m saga_core``).

Commands: ``list``, ``show``, ``signal``, ``cancel``, ``recover``, ``retry-compensation``,
``worker`` and ``graph``.
Every command but ``graph`` works on the storage at ``--url`` (default: the
``SAGA_STORAGE_URL`` environment variable), opened with :func:`saga_core.open_storage`, so
any installed storage plugin works; each ``--option KEY=VALUE`` becomes one of its keyword
arguments, as text (the plugin reads it as it reads its URL's query). ``--json`` prints one
JSON document on stdout instead of text. Errors are one line on stderr; the exit code is 0 on
success, 1 for a runtime failure, 2 for a usage error, and 141 (as for a process killed by
SIGPIPE) when stdout was closed before everything was printed (``saga show ID | head``), which
is not reported.

Text for people shows stored text with its control characters escaped (see
:func:`~saga_core._cli.format.terminal_text`), on stdout, on stderr and in log lines; ``--json``
documents hold the stored text exactly. Logging is configured only while :func:`main` runs,
and only if the process has not configured it: records at ``--log-level`` and above go to
stderr, one line each (a damaged record a listing skipped shows up there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import anyio

from saga_core._model.errors import (
    SagaCompensatedError,
    SagaCompensationFailedError,
    SagaError,
    SagaLeaseHeldError,
    SagaUsageError,
)
from saga_core._model.status import SagaStatus
from saga_core._runtime.resuming import check_record_matches
from saga_core._runtime.worker import RecoveryWorker
from saga_core._storage.plugins import open_storage
from saga_core._storage.protocol import SagaStorage

from .children import Child, children_json, load_children
from .control import Outcome, cancel_saga, read_payload, send_signal
from .format import (
    journal_json,
    record_json,
    report_json,
    report_text,
    saga_report,
    sagas_table,
)
from .graph import mermaid
from .load import (
    CliError,
    bound_sagas,
    check_runnable,
    import_object,
    load_saga_map,
    load_saga_to_draw,
    usage_error,
)
from .parser import COMMAND_OPTIONS_DEST, OPTIONS_DEST, URL_ENV, build_parser
from .structure import saga_structure
from .text import TerminalLogFormatter, terminal_lines, terminal_text
from .waiting import describe_wait

logger = logging.getLogger("saga_core.cli")

_RETRYABLE = frozenset({SagaStatus.FAILED, SagaStatus.COMPENSATING})

#: The exit code when stdout is closed early: a shell's code for a process killed by SIGPIPE.
BROKEN_PIPE_EXIT = 128 + 13

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Command = Callable[[argparse.Namespace], Awaitable[int]]


class _OutputClosed(Exception):
    """Raised when stdout's reader went away (``saga show ID | head``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        code = _run(parser, argv)
        _flush_stdout()  # what is still buffered fails here, where it can be handled
    except _OutputClosed:
        # Nothing more to say, and no traceback. Python's advice: point stdout at devnull, so
        # that the flush at exit does not fail again.
        _discard_stdout()
        return BROKEN_PIPE_EXIT
    except Exception as exc:  # a bug: its traceback, but escaped like any other output
        traceback_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        _tell_stderr("\n".join(terminal_lines(traceback_text.rstrip("\n"))))
        return _fail(parser, f"unexpected {type(exc).__name__} (a bug: please report it)", 1)
    return code


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    except BrokenPipeError:  # --help into a closed pipe
        raise _OutputClosed from None
    with _logging_to_stderr(args.log_level):
        return _dispatch(parser, args)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "graph":
            return _graph(args)
        if not args.url:
            args.url = os.environ.get(URL_ENV)
        if not args.url:
            raise usage_error(f"no storage URL: pass --url URL or set {URL_ENV}")
        args.storage_options = _storage_options(args)
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


def _storage_options(args: argparse.Namespace) -> dict[str, str]:
    """The ``--option`` pairs given before and after the command's name, as keyword
    arguments; a name given twice with two values is a usage error."""
    pairs = [*getattr(args, OPTIONS_DEST), *getattr(args, COMMAND_OPTIONS_DEST, [])]
    options: dict[str, str] = {}
    for key, value in pairs:
        if options.setdefault(key, value) != value:
            raise usage_error(f"--option {key} is given twice, with different values")
    return options


def _open_storage(args: argparse.Namespace) -> SagaStorage:
    """The storage at ``--url``, opened with the ``--option`` pairs (as text)."""
    return open_storage(args.url, **args.storage_options)


# --- commands ------------------------------------------------------------------------------


async def _list(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    older_than: timedelta | None = args.older_than
    async with _open_storage(args) as storage:
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
        _say(sagas_table(records, now))
    else:
        _say("no saga matches")
    return 0


async def _show(args: argparse.Namespace) -> int:
    saga_id: UUID = args.saga_id
    saga_map = None if args.sagas is None else load_saga_map(args.sagas)
    children: list[Child] | None = None
    async with _open_storage(args) as storage:
        record = await storage.load(saga_id)
        entries = await storage.history(saga_id)
        if saga_map is not None:
            check_runnable(saga_map, record, args.sagas, outcome="its children are not listed")
            saga_type = saga_map.saga_named(record.saga_name, record.saga_version)
            children = await load_children(storage, record, saga_type.definition())
    if args.json:
        document = record_json(record, with_context=True)
        # null: not known without --sagas.
        document["children"] = None if children is None else children_json(children)
        _emit_json({**document, "journal": journal_json(entries)})
    else:
        _say(saga_report(record, entries, datetime.now(timezone.utc), children or ()))
    return 0


async def _signal(args: argparse.Namespace) -> int:
    payload = read_payload(args.payload, args.payload_file)
    saga_map = load_saga_map(args.sagas)
    async with _open_storage(args) as storage:
        outcome = await send_signal(
            storage,
            saga_map,
            saga_id=args.saga_id,
            name=args.name,
            payload=payload,
            signal_id=args.signal_id or uuid4().hex,
            sagas_path=args.sagas,
        )
    return _report(args, outcome)


async def _cancel(args: argparse.Namespace) -> int:
    async with _open_storage(args) as storage:
        outcome = await cancel_saga(storage, saga_id=args.saga_id, reason=args.reason)
    return _report(args, outcome)


def _report(args: argparse.Namespace, outcome: Outcome) -> int:
    if args.json:
        _emit_json(outcome.document)
    else:
        _say(terminal_text(outcome.text))  # one line: it may quote stored text
    return outcome.exit_code


async def _recover(args: argparse.Namespace, *, only_rollback: bool) -> int:
    saga_id: UUID = args.saga_id
    saga_map = load_saga_map(args.sagas)
    container = _load_container(args)
    async with _open_storage(args) as storage:
        record = await storage.load(saga_id)
        result: dict[str, Any] = {
            "saga_id": str(saga_id),
            "saga_name": record.saga_name,
            "saga_version": record.saga_version,
        }
        if record.status.is_terminal:
            result.update(outcome=record.status.value, unparked=False, error=None)
            done = f"saga {saga_id} is {record.status.value} already; nothing to recover"
            return _outcome(args, result, done)
        if only_rollback and record.status not in _RETRYABLE:
            raise CliError(
                f"saga {saga_id} is {record.status.value}, not failed or compensating; "
                "retry-compensation only finishes a rollback (use 'recover' to resume it)"
            )
        check_runnable(saga_map, record, args.sagas)
        saga_type = saga_map.saga_named(record.saga_name, record.saga_version)
        check_record_matches(saga_type.definition(), record)
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
        outcome = await worker.recover(saga_id, force=args.force)
    except SagaLeaseHeldError as exc:
        raise CliError(f"{exc}. If that runner is dead, take the saga over with --force") from None
    except SagaCompensatedError as exc:
        result.update(outcome=SagaStatus.COMPENSATED.value, error=str(exc))
        return _outcome(args, result, str(exc))
    except SagaCompensationFailedError as exc:
        result.update(outcome=SagaStatus.FAILED.value, error=str(exc))
        if args.json:
            _emit_json(result)
        raise CliError(str(exc)) from None
    result.update(outcome=outcome.status.value, error=None)
    if outcome.status is SagaStatus.WAITING:  # it ran on until its next wait
        record = await worker.storage.load(saga_id)
        waiting = f"saga {saga_id} recovered: waiting ({describe_wait(record)})"
        return _outcome(args, result, waiting)
    return _outcome(args, result, f"saga {saga_id} recovered: {outcome.status.value}")


def _outcome(args: argparse.Namespace, result: dict[str, Any], text: str) -> int:
    if args.json:
        _emit_json(result)
    else:
        if result.get("unparked"):
            _say(f"saga {result['saga_id']} was parked; unparked it")
        _say(terminal_text(text))  # one line: it may quote a stored error
    return 0


def _load_container(args: argparse.Namespace) -> object | None:
    if args.container is None:
        return None
    return import_object(args.container, option="--container")


async def _worker(args: argparse.Namespace) -> int:
    saga_map = load_saga_map(args.sagas)
    container = _load_container(args)
    async with _open_storage(args) as storage:
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
                _say(report_text(report))
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
                "recovery worker %s running on %s storage (binds %s); stop it with Ctrl-C",
                worker.owner,
                scheme,
                bound_sagas(worker.sagas),
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
    saga_type = load_saga_to_draw(args.saga_class, version=args.version, name=args.name)
    if args.json:
        _emit_json(saga_structure(saga_type))
    else:
        _say(mermaid(saga_type))
    return 0


# --- helpers -------------------------------------------------------------------------------


def _emit_json(document: object) -> None:
    _print_stdout(json.dumps(document, indent=2))


def _say(text: str) -> None:
    """Print text for people. The formatters escape each stored value where it is placed;
    this escapes the whole text once more, line by line, so that no control character
    reaches the terminal even from a value a formatter missed."""
    _print_stdout("\n".join(terminal_lines(text)))


def _print_stdout(text: str) -> None:
    try:
        print(text)
    except BrokenPipeError:
        raise _OutputClosed from None


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise _OutputClosed from None


def _fail(parser: argparse.ArgumentParser, message: str, exit_code: int) -> int:
    _tell_stderr(f"{parser.prog}: error: {terminal_text(message)}")
    return exit_code


def _tell_stderr(text: str) -> None:
    # If stderr's reader went away too, no one is left to tell.
    with contextlib.suppress(BrokenPipeError):
        print(text, file=sys.stderr)


@contextlib.contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """Send log records at ``level`` and above to stderr, one escaped line each, while the
    CLI runs; then put the root logger back as it was.

    A process that configured logging already (an application calling :func:`main`, a test
    runner) keeps its own configuration.
    """
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalLogFormatter(_LOG_FORMAT))
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def _discard_stdout() -> None:
    """Point the stdout file descriptor at devnull (when it has one: not a test's capture)."""
    try:
        stdout_fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stdout_fd)
    finally:
        os.close(devnull)


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
    "signal": _signal,
    "cancel": _cancel,
    "recover": partial(_recover, only_rollback=False),
    "retry-compensation": partial(_recover, only_rollback=True),
    "worker": _worker,
}
