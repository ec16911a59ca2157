"""The operations CLI's arguments: the parser of every command and its option types."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn
from uuid import UUID

from saga_core._model.status import SagaStatus
from saga_core._runtime.leases import DEFAULT_LEASE_SECONDS

from .text import parse_duration, terminal_text

URL_ENV = "SAGA_STORAGE_URL"
#: The reason ``saga cancel`` stores when none is given.
DEFAULT_CANCEL_REASON = "cancelled with the saga CLI"
#: Where the ``--option`` pairs given before the command's name go, and those after it.
OPTIONS_DEST = "storage_options"
COMMAND_OPTIONS_DEST = "command_storage_options"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose error messages quote arguments with their control characters
    escaped (``unrecognized arguments: ...`` quotes them as given). Subparsers are of the
    same class."""

    def error(self, message: str) -> NoReturn:
        super().error(terminal_text(message))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (global options may come before or after the
    command's name)."""
    prog = "python -m saga_core" if sys.argv[0].endswith("__main__.py") else "saga"
    parser = _Parser(
        prog=prog,
        description="Operate sagas kept by saga-core: list and inspect them, signal or cancel "
        "them, recover stalled ones, retry failed compensations, run the worker, draw a saga.",
        epilog=f"The storage URL comes from --url or ${URL_ENV}, e.g. sqlite:///sagas.db, "
        "postgresql+asyncpg://user@host/db, redis://host:6379/0. Exit codes: 0 success, "
        "1 runtime failure, 2 usage error, 141 stdout closed early (as by head).",
    )
    _add_global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _add_global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[common], help=summary, description=f"{summary}. {description}"
        )

    listing = command(
        "list",
        "List sagas, oldest update first",
        "Filters combine; with --json, a JSON list of records (without their contexts).",
    )
    listing.add_argument(
        "--status", choices=[status.value for status in SagaStatus], help="only this status"
    )
    listing.add_argument("--name", metavar="SAGA_NAME", help="only sagas of this saga name")
    listing.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_duration,
        help="only sagas not updated for this long (30s, 15m, 2h, 1d, 1h30m)",
    )
    listing.add_argument(
        "--parked",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only sagas in the dead-letter state (--no-parked: only the others)",
    )
    listing.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N (default 50)"
    )

    show = command(
        "show",
        "Show one saga: state, context and journal",
        "The journal is a timeline of step attempts, with offsets from its first entry. A "
        "child saga (a SubSaga's) shows its parent; with --sagas, a saga with SubSaga nodes "
        "lists its child sagas, each with its status or 'not started'.",
    )
    show.add_argument("saga_id", type=_saga_id, metavar="ID", help="the saga's id")
    _add_sagas_option(show, "the saga classes, to list the saga's children", required=False)

    signal = command(
        "signal",
        "Deliver a signal to a saga",
        "The saga takes it at its WaitForSignal(NAME), now if it waits there, else when it "
        "gets there; the payload goes into the wait's field, encoded by the saga's context "
        "codec (--sagas gives the saga classes that say how). Delivering a signal id again "
        "changes nothing and exits 0: retry with the same --signal-id. Exit 1 when the saga "
        "is unknown, has ended or no longer waits for NAME; 2 when it never waits for NAME or "
        "the payload does not fit.",
    )
    signal.add_argument("saga_id", type=_saga_id, metavar="ID", help="the saga's id")
    signal.add_argument("name", type=_text("signal name"), metavar="NAME", help="signal name")
    payload = signal.add_mutually_exclusive_group()
    payload.add_argument(
        "--payload",
        metavar="JSON",
        help="the payload as JSON (a string is quoted: '\"alice\"'; default null)",
    )
    payload.add_argument(
        "--payload-file", metavar="PATH", help="read the JSON payload from PATH ('-': stdin)"
    )
    signal.add_argument(
        "--signal-id",
        type=_text("signal id"),
        metavar="ID",
        help="the signal's id, unique per saga (default: a new one, printed)",
    )
    _add_sagas_option(signal, "the saga classes")

    cancel = command(
        "cancel",
        "Cancel a saga: roll it back",
        "Records the durable decision to compensate a RUNNING or WAITING saga: a waiting one "
        "is compensated by a worker, a running one by its runner at its next step. Cancelling "
        "a saga rolling back already, cancelled before or compensated changes nothing (exit "
        "0); a completed one cannot be cancelled (exit 1).",
    )
    cancel.add_argument("saga_id", type=_saga_id, metavar="ID", help="the saga's id")
    cancel.add_argument(
        "--reason",
        type=_text("reason"),
        default=DEFAULT_CANCEL_REASON,
        metavar="TEXT",
        help=f"why, stored with the saga (default: {DEFAULT_CANCEL_REASON!r})",
    )

    recover = command(
        "recover",
        "Recover one saga now",
        "A RUNNING saga resumes forward (the step in flight runs again); a WAITING one runs "
        "on if its signal, timer or cancel is due (else it waits again); a COMPENSATING or "
        "FAILED one finishes its rollback. A parked saga is unparked first. Exit 0 when it "
        "completed, waits again or was compensated, 1 when its compensation failed again.",
    )
    recover.add_argument("saga_id", type=_saga_id, metavar="ID", help="the saga's id")
    _add_saga_options(recover)
    _add_lease_option(recover, "lease taken on the saga while it runs")
    _add_force_option(recover)

    retry = command(
        "retry-compensation",
        "Retry the rollback of a FAILED or COMPENSATING saga",
        "Refuses sagas in any other status. A parked saga is unparked first. Exit 0 when it "
        "was compensated, 1 when its compensation failed again.",
    )
    retry.add_argument("saga_id", type=_saga_id, metavar="ID", help="the saga's id")
    _add_saga_options(retry)
    _add_lease_option(retry, "lease taken on the saga while it runs")
    _add_force_option(retry)

    worker = command(
        "worker",
        "Run the worker",
        "Claims the sagas that have work - started detached, WAITING and due (a signal, a "
        "timer, a cancel), stalled (RUNNING, COMPENSATING or FAILED with no live lease) - and "
        "runs each until it ends or waits again, until SIGINT or SIGTERM: then a "
        "compensation in progress finishes and every other saga is handed back. With "
        "--once, one round and its report.",
    )
    _add_saga_options(worker)
    worker.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="seconds between polls when nothing is due (default 5)",
    )
    worker.add_argument(
        "--batch-size",
        type=_positive_int,
        default=50,
        metavar="N",
        help="sagas claimed per poll (default 50)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=10,
        metavar="N",
        help="sagas recovered at the same time (default 10)",
    )
    _add_lease_option(worker, "lease taken on a claimed saga, renewed while it runs")
    worker.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=10,
        metavar="N",
        help="claims after which a saga is parked in the dead-letter state (default 10)",
    )
    worker.add_argument("--once", action="store_true", help="run one round, print its report")

    graph = command(
        "graph",
        "Print a saga definition as a Mermaid flowchart",
        "Forward steps top-down, Fallback branches and breakers, waits (signals, sleeps, "
        "timeouts), and dashed failure edges into the compensation chain. No storage "
        "needed; --json prints the structure.",
    )
    graph.add_argument(
        "saga_class",
        metavar="MODULE:ATTR",
        help="import path of the Saga subclass, or of a SagaMap (or a function binding sagas "
        "on one) to draw any bound version from",
    )
    graph.add_argument(
        "--version",
        type=_positive_int,
        metavar="N",
        help="the saga version to draw (default: the class given, or the highest bound)",
    )
    graph.add_argument(
        "--name",
        metavar="SAGA_NAME",
        help="which saga to draw when MODULE:ATTR binds several",
    )
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: object) -> object:
        # On a command, an option left out must not reset what was given before the command.
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--url", default=default(None), help=f"storage URL (default: ${URL_ENV})")
    parser.add_argument(
        "--option",
        # Given before and after the command's name, the two lists are kept apart (a
        # command's parser would replace the list given before it) and joined by main.
        dest=COMMAND_OPTIONS_DEST if suppress else OPTIONS_DEST,
        action="append",
        type=_storage_option,
        default=default([]),
        metavar="KEY=VALUE",
        help="a storage option, passed to the storage plugin as text, as open_storage(url, "
        "KEY='VALUE') (repeatable), e.g. key_prefix=shop: for Redis, table=sagas for SQL; "
        "the storage's README lists its options",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document on stdout, for scripts",
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=default("asyncio"),
        help="async backend (default asyncio)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=default("INFO"),
        help="logging level on stderr (default INFO)",
    )


def _add_lease_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--lease-seconds",
        type=_positive_float,
        default=DEFAULT_LEASE_SECONDS,
        metavar="S",
        help=f"{what} (default {DEFAULT_LEASE_SECONDS:g})",
    )


def _add_saga_options(parser: argparse.ArgumentParser) -> None:
    _add_sagas_option(parser, "the sagas it may run")
    parser.add_argument(
        "--container",
        metavar="MODULE:ATTR",
        help="what builds step classes, as bootstrap(di_container=...) takes",
    )


def _add_sagas_option(parser: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    parser.add_argument(
        "--sagas",
        required=required,
        metavar="MODULE:ATTR",
        help=f"{what}: a SagaMap, a function binding sagas on a SagaMap, or a Saga subclass "
        "(e.g. app.sagas:saga_map)",
    )


def _text(what: str) -> Callable[[str], str]:
    """An argument type: non-empty text (``what`` names it in the error)."""

    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"the {what} must not be empty")
        return text

    return check


def _saga_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a saga id (a UUID): {text!r}") from None


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="take the saga over even while another runner's lease on it is live (that "
        "runner is fenced off: use it when you know it is dead)",
    )


def _storage_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as ``(key, value)``; the value may be empty or hold ``=``. The value is
    never quoted in a message: it may be a secret."""
    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(
            "expected KEY=VALUE, as in key_prefix=shop: (the argument has no '=')"
        )
    if not key:
        raise argparse.ArgumentTypeError(
            "expected KEY=VALUE, as in key_prefix=shop: (the name before '=' is empty)"
        )
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY an option name (letters, digits and '_', as in "
            f"key_prefix=shop:), got the name {key!r}"
        )
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
