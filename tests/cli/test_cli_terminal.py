"""Stored text never acts on the operator's terminal: every human-readable output shows its
control characters as escapes, and ``--json`` gives it back exactly.

The stored texts hold :data:`~tests.cli.cli_sagas.HOSTILE`: an OSC title change ended by BEL,
a clear-screen, C1 controls, bidi overrides and isolates, DEL, CR, TAB and a line break.
"""

from __future__ import annotations

import argparse
import json
import re

import pytest

from saga_core._cli.main import _COMMANDS
from saga_core._cli.text import terminal_lines, terminal_text

from . import _seed
from ._seed import CliRunner, Seeder
from .cli_sagas import HOSTILE, HOSTILE_SHOWN, SWITCHES

SAGAS = "tests.cli.cli_sagas:saga_map"
WAITS = "tests.cli.waiting_sagas:saga_map"
#: The first line of HOSTILE, stored and as shown (an error may be reported by its first line only).
FIRST_LINE = HOSTILE.partition("\n")[0]
FIRST_LINE_SHOWN = HOSTILE_SHOWN.partition("\\n")[0]

# In UTF-8: a C0 control other than the line feed, DEL, a C1 control (U+0080-U+009F), a bidi
# control (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) or U+2028/U+2029.
_RAW_CONTROL = re.compile(
    rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]"
    rb"|\xe2\x81[\xa6-\xa9]"
)


def assert_terminal_safe(text: str) -> None:
    """No byte of ``text`` as written to a UTF-8 terminal is a control it would act on."""
    found = _RAW_CONTROL.findall(text.encode("utf-8"))
    assert not found, f"raw control characters reach the terminal: {found}"


# --- the escaping function -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x80\x85\x9b\x9f", "\\x80\\x85\\x9b\\x9f"),
        ("\u202aa\u202bb\u202cc\u202dd\u202ee", "\\u202aa\\u202bb\\u202cc\\u202dd\\u202ee"),
        ("\u2066a\u2067b\u2068c\u2069", "\\u2066a\\u2067b\\u2068c\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\udcff", "\\udcff"),
    ],
)
def test_terminal_text_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert terminal_text(text) == shown
    assert terminal_text(shown) == shown  # escaping twice changes nothing


@pytest.mark.parametrize(
    "text", ["", "plain ASCII: a-z {}[]\\", "café Zoë 東京 עברית", "family: 👨\u200d👩\u200d👧"]
)
def test_terminal_text_keeps_printable_text(text: str) -> None:
    assert terminal_text(text) == text


def test_terminal_lines_keeps_line_breaks_and_escapes_the_rest() -> None:
    assert terminal_lines("one\x1b[2J\r\ntwo\rthree\n") == ["one\\x1b[2J", "two\\rthree", ""]


# --- list ------------------------------------------------------------------------------------


def test_list_escapes_stored_text(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    leased, parked = seed(_seed.hostile_records, db_url)
    code, out, err = cli("--url", db_url, "list")
    assert (code, err) == (0, "")
    assert_terminal_safe(out)
    rows = out.splitlines()
    # The header and one line per saga (oldest update first): no stored line break got through.
    assert [row.split()[0] for row in rows] == ["ID", str(leased), str(parked)]
    assert f"saga {HOSTILE_SHOWN}" in rows[1]
    assert f"owner {HOSTILE_SHOWN}" in rows[1]  # the lease
    assert "Error: \\x1b]0;owned\\x07" in rows[1]
    assert "gave up: \\x1b]0;owned\\x07" in rows[2]  # the park reason


def test_list_json_gives_stored_text_exactly(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    leased, parked = seed(_seed.hostile_records, db_url)
    code, out, _ = cli("--url", db_url, "--json", "list")
    assert code == 0
    listed = {saga["saga_id"]: saga for saga in json.loads(out)}
    for saga in listed.values():
        assert saga["saga_name"] == f"saga {HOSTILE}"
        assert saga["next_step"] == f"step {HOSTILE}"
        assert saga["applied"] == [f"step {HOSTILE}"]
    assert listed[str(leased)]["lease_owner"] == f"owner {HOSTILE}"
    assert listed[str(leased)]["error"] == f"Error: {HOSTILE}"
    assert listed[str(parked)]["error"] == f"gave up: {HOSTILE}"


# --- show ------------------------------------------------------------------------------------


def test_show_escapes_stored_text(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    leased, parked = seed(_seed.hostile_records, db_url)
    code, out, err = cli("--url", db_url, "show", str(leased))
    assert (code, err) == (0, "")
    assert_terminal_safe(out)
    lines = out.splitlines()
    assert lines[0] == f"saga {leased} (saga {HOSTILE_SHOWN})"
    state = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines[1:7]}
    assert state["next step"] == f"step {HOSTILE_SHOWN}"
    assert state["applied"] == f"step {HOSTILE_SHOWN}"
    assert state["lease"].startswith(f"owner {HOSTILE_SHOWN} until ")
    # The error keeps its line break (shown as two lines), every other control is escaped.
    first, _, second = HOSTILE_SHOWN.partition("\\n")
    assert first == FIRST_LINE_SHOWN
    error_at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("error:"))
    assert lines[error_at].endswith(f"Error: {first}")
    assert lines[error_at + 1].strip() == second
    assert "\\u202eevil" in out.split("context:", 1)[1]  # the context's strings and keys
    timeline = out.split("journal (", 1)[1].splitlines()[1:]
    assert len(timeline) == 2
    assert all(f"step {HOSTILE_SHOWN}" in line for line in timeline)
    assert timeline[1].endswith(f"Error: {first}")

    code, out, err = cli("--url", db_url, "show", str(parked))
    assert (code, err) == (0, "")
    assert_terminal_safe(out)
    assert f"gave up: {first}" in out


def test_show_json_gives_stored_text_exactly(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    leased, _ = seed(_seed.hostile_records, db_url)
    code, out, _ = cli("--url", db_url, "--json", "show", str(leased))
    assert code == 0
    shown = json.loads(out)
    assert shown["saga_name"] == f"saga {HOSTILE}"
    assert shown["next_step"] == f"step {HOSTILE}"
    assert shown["applied"] == [f"step {HOSTILE}"]
    assert shown["lease_owner"] == f"owner {HOSTILE}"
    assert shown["error"] == f"Error: {HOSTILE}"
    assert shown["context"][HOSTILE] == HOSTILE
    assert shown["context"]["order_id"] == HOSTILE
    assert [(e["step_id"], e["error"]) for e in shown["journal"]] == [
        (f"step {HOSTILE}", None),
        (f"step {HOSTILE}", f"Error: {HOSTILE}"),
    ]


# --- signals and cancels ----------------------------------------------------------------------


def test_signal_ids_payloads_and_cancel_reasons_are_escaped_and_exact_in_json(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    code, out, err = cli(
        "--url", db_url, "signal", str(saga_id), "shipped", "--signal-id", HOSTILE,
        "--payload", json.dumps({HOSTILE: HOSTILE}), "--sagas", WAITS,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert_terminal_safe(out)
    assert f"(signal id {HOSTILE_SHOWN})" in out  # on one line
    code, out, err = cli("--url", db_url, "cancel", str(saga_id), "--reason", HOSTILE)
    assert (code, err) == (0, "")
    assert_terminal_safe(out)
    assert f"(reason: {HOSTILE_SHOWN})" in out  # on one line

    code, out, _ = cli("--url", db_url, "list")
    assert code == 0
    assert_terminal_safe(out)
    assert len(out.splitlines()) == 2  # the header and the saga: one line
    assert FIRST_LINE_SHOWN[:20] in out.splitlines()[1]  # the reason's first line, cut

    code, out, _ = cli("--url", db_url, "show", str(saga_id))
    assert code == 0
    assert_terminal_safe(out)
    assert f"shipped  {HOSTILE_SHOWN}" in out  # the pending signal's row
    assert f"requested: {FIRST_LINE_SHOWN}" in out

    code, out, _ = cli("--url", db_url, "--json", "show", str(saga_id))
    shown = json.loads(out)
    assert shown["cancel_reason"] == HOSTILE
    [signal] = shown["signals"]
    assert (signal["signal_id"], signal["payload"]) == (HOSTILE, {HOSTILE: HOSTILE})


# --- recover and retry-compensation ----------------------------------------------------------


def test_recover_escapes_the_stored_error_it_reports(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    # Shipping failed with the order id in its message; recovery finishes the rollback and
    # reports why the saga was compensated.
    saga_id = seed(_seed.stalled_compensating, db_url, HOSTILE)
    code, out, err = cli("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)
    assert code == 0
    assert_terminal_safe(out + err)
    assert out.count("\n") == 1
    assert f"no carrier for order {FIRST_LINE_SHOWN}" in out

    saga_id = seed(_seed.stalled_compensating, db_url, HOSTILE)
    code, out, _ = cli("--url", db_url, "--json", "recover", str(saga_id), "--sagas", SAGAS)
    assert code == 0
    assert f"no carrier for order {FIRST_LINE}" in json.loads(out)["error"]


def test_retry_compensation_escapes_errors_on_stdout_and_stderr(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.failed_order, db_url, HOSTILE)
    args = ("--url", db_url, "retry-compensation", str(saga_id), "--sagas", SAGAS)
    SWITCHES.refunds_down = True
    code, out, err = cli(*args)
    assert (code, out) == (1, "")
    assert_terminal_safe(err)
    assert err.count("\n") == 1
    assert f"unreachable for order {FIRST_LINE_SHOWN}" in err

    code, out, err = cli("--json", *args)
    assert code == 1
    assert_terminal_safe(err)
    assert f"unreachable for order {FIRST_LINE}" in json.loads(out)["error"]

    SWITCHES.refunds_down = False
    code, out, _ = cli(*args)
    assert code == 0
    assert_terminal_safe(out)
    assert f"no carrier for order {FIRST_LINE_SHOWN}" in out


# --- graph and argument errors ---------------------------------------------------------------


def test_graph_escapes_saga_and_step_names(cli: CliRunner) -> None:
    code, out, err = cli("graph", "tests.cli.cli_sagas:HostileSaga")
    assert (code, err) == (0, "")
    assert_terminal_safe(out)
    shown = HOSTILE_SHOWN.replace("\\n", " ")  # a Mermaid label is one line
    assert f'start(["start: saga {shown}"])' in out
    assert f's0["step {shown}"]' in out

    code, out, _ = cli("--json", "graph", "tests.cli.cli_sagas:HostileSaga")
    structure = json.loads(out)
    assert structure["saga"] == f"saga {HOSTILE}"
    assert structure["steps"][0]["step_id"] == f"step {HOSTILE}"


def test_argument_errors_escape_what_was_typed(cli: CliRunner, db_url: str) -> None:
    code, out, err = cli("--url", db_url, "list", HOSTILE)
    assert (code, out) == (2, "")
    assert_terminal_safe(err)
    assert f"unrecognized arguments: {HOSTILE_SHOWN}" in err


def test_an_unexpected_error_shows_its_traceback_escaped(
    cli: CliRunner, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(args: argparse.Namespace) -> int:
        raise RuntimeError(HOSTILE)  # a bug somewhere below the CLI, quoting stored text

    monkeypatch.setitem(_COMMANDS, "list", broken)
    code, out, err = cli("--url", db_url, "list")
    assert (code, out) == (1, "")
    assert_terminal_safe(err)
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert f"RuntimeError: {FIRST_LINE_SHOWN}" in lines
    assert lines[-1] == "saga: error: unexpected RuntimeError (a bug: please report it)"
