"""WAITING sagas in ``list`` and ``show`` (what they wait for, when they wake, their deadline,
a requested cancel, their pending signals), ``recover`` of a saga that waits again, and
``graph`` of a saga with waits."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from saga_core import SagaStatus
from saga_core._cli.format import sagas_table
from saga_core._cli.text import format_duration, parse_duration, short_time
from saga_core.storage import PendingSignal, SagaRecord

from . import _seed
from ._seed import CliRunner, Seeder

WAITS = "tests.cli.waiting_sagas:saga_map"


def table_rows(out: str) -> list[dict[str, str]]:
    """The ``list`` table as one dict per row, cells cut at the header's column starts (a
    cell may hold spaces)."""
    header, *lines = out.splitlines()
    columns = [(match.group(), match.start()) for match in re.finditer(r"\S+", header)]
    ends = [start for _, start in columns[1:]] + [None]
    return [
        {name: line[start:end].strip() for (name, start), end in zip(columns, ends, strict=True)}
        for line in lines
    ]


def state_of(show_out: str) -> dict[str, str]:
    """The state block of ``show``'s text, label -> value."""
    block = show_out.split("\n\n")[0].splitlines()[1:]
    return {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in block}


# --- list ------------------------------------------------------------------------------------


def test_list_shows_what_each_waiting_saga_waits_for_and_when_it_wakes(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    done = seed(_seed.completed_order, db_url)
    approval = seed(_seed.waiting_approval, db_url)
    hold = seed(_seed.waiting_hold, db_url)
    stored = seed(_seed.record_of, db_url, approval)

    code, out, err = cli("--url", db_url, "list")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == [
        "ID", "NAME", "STATUS", "WAITING_FOR", "WAKES", "VERSION", "CURSOR", "ATTEMPTS",
        "PARKED", "UPDATED", "DEADLINE", "LEASE", "ERROR",
    ]  # fmt: skip
    rows = {row["ID"]: row for row in table_rows(out)}
    assert rows[str(done)]["WAITING_FOR"] == rows[str(done)]["WAKES"] == "-"
    assert rows[str(done)]["DEADLINE"] == "-"
    assert rows[str(approval)]["STATUS"] == "waiting"
    assert rows[str(approval)]["WAITING_FOR"] == "signal approved"
    assert rows[str(approval)]["WAKES"] == short_time(stored.wake_at)  # its timeout
    assert rows[str(approval)]["DEADLINE"] == short_time(stored.deadline_at)
    assert stored.deadline_at is not None and stored.wake_at is not None
    assert stored.deadline_at - stored.wake_at > timedelta(days=1)
    assert (rows[str(hold)]["WAITING_FOR"], rows[str(hold)]["WAKES"]) == ("signal release", "never")
    assert rows[str(hold)]["DEADLINE"] == "-"

    code, out, _ = cli("--url", db_url, "list", "--status", "waiting")
    assert code == 0
    assert [row["ID"] for row in table_rows(out)] == [str(approval), str(hold)]

    # Signalled: due now. Resumed: asleep. Cancelled: the reason shows.
    cli("--url", db_url, "signal", str(approval), "approved", "--payload", '"al"', "--sagas", WAITS)
    code, out, _ = cli("--url", db_url, "list", "--status", "waiting")
    assert table_rows(out)[0]["WAKES"].endswith(" (due)")
    cli("--url", db_url, "worker", "--sagas", WAITS, "--once")
    cli("--url", db_url, "cancel", str(hold), "--reason", "out of stock")
    code, out, _ = cli("--url", db_url, "list", "--status", "waiting")
    rows = {row["ID"]: row for row in table_rows(out)}
    assert rows[str(approval)]["WAITING_FOR"] == "sleep sleep-1"
    assert rows[str(hold)]["CANCEL"] == "out of stock"
    assert rows[str(approval)]["CANCEL"] == "-"
    assert rows[str(hold)]["WAKES"].endswith(" (due)")  # a cancel makes it due


def test_list_json_has_the_wait_fields(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    approval = seed(_seed.waiting_approval, db_url)
    stored = seed(_seed.record_of, db_url, approval)
    cli(
        "--url", db_url, "signal", str(approval), "shipped", "--payload", '{"carrier": "post"}',
        "--signal-id", "ship-1", "--sagas", WAITS,
    )  # fmt: skip

    code, out, _ = cli("--url", db_url, "--json", "list", "--status", "waiting")
    assert code == 0
    [listed] = json.loads(out)
    assert listed["wait"] == {"kind": "signal", "name": "approved"}
    assert listed["waiting_for"] == "approved"
    assert datetime.fromisoformat(listed["wake_at"]) == stored.wake_at
    assert datetime.fromisoformat(listed["deadline_at"]) == stored.deadline_at
    assert listed["cancel_reason"] is None
    [signal] = listed["signals"]
    assert signal["signal_id"] == "ship-1" and signal["name"] == "shipped"
    assert signal["delivered_at"].endswith("+00:00")
    assert "payload" not in signal  # list leaves payloads out, as it leaves contexts out

    code, out, _ = cli("--url", db_url, "--json", "list", "--status", "completed")
    assert json.loads(out) == []


# --- show ------------------------------------------------------------------------------------


def test_show_of_a_waiting_saga_lists_its_wait_deadline_and_pending_signals(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    approval = seed(_seed.waiting_approval, db_url)
    cli(
        "--url", db_url, "signal", str(approval), "shipped", "--payload", '{"carrier": "post"}',
        "--signal-id", "ship-1", "--sagas", WAITS,
    )  # fmt: skip
    stored = seed(_seed.record_of, db_url, approval)

    code, out, err = cli("--url", db_url, "show", str(approval))
    assert (code, err) == (0, "")
    state = state_of(out)
    assert list(state)[:4] == ["status", "waiting for", "wakes", "deadline"]
    assert state["waiting for"] == "signal approved"
    assert state["wakes"].startswith(short_time(stored.wake_at) + " (in ")
    wake_in = parse_duration(state["wakes"].split("(in ")[1].rstrip(")"))
    assert timedelta(minutes=59) < wake_in <= timedelta(hours=1)
    assert state["deadline"].startswith(short_time(stored.deadline_at) + " (in 1d")
    assert "cancel" not in state
    [signal] = stored.signals
    section = out.split("pending signals (1):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in section] == [
        ["NAME", "ID", "DELIVERED"],
        ["shipped", "ship-1", *short_time(signal.delivered_at).split()],
    ]

    cli("--url", db_url, "cancel", str(approval), "--reason", "customer left")
    code, out, _ = cli("--url", db_url, "show", str(approval))
    assert state_of(out)["cancel"] == "requested: customer left"


def test_show_of_a_wait_without_timeout_or_deadline(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    hold = seed(_seed.waiting_hold, db_url)
    code, out, _ = cli("--url", db_url, "show", str(hold))
    assert code == 0
    state = state_of(out)
    assert state["waiting for"] == "signal release"
    assert state["wakes"] == "never (only its signal or a cancel wakes it)"
    assert "deadline" not in state
    assert "pending signals" not in out


def test_show_of_a_saga_without_waits_has_no_wait_lines(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.completed_order, db_url)
    code, out, _ = cli("--url", db_url, "show", str(saga_id))
    assert code == 0
    assert not {"waiting for", "wakes", "deadline", "cancel"} & set(state_of(out))
    code, out, _ = cli("--url", db_url, "--json", "show", str(saga_id))
    shown = json.loads(out)
    assert (shown["wait"], shown["wake_at"], shown["deadline_at"]) == (None, None, None)
    assert (shown["cancel_reason"], shown["signals"]) == (None, [])


def test_show_json_gives_the_pending_signals_with_their_payloads(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    approval = seed(_seed.waiting_approval, db_url)
    # The second is refused: its wait takes one signal, and one is pending.
    for signal_id, carrier in (("ship-1", "post"), ("ship-2", "van")):
        cli(
            "--url", db_url, "signal", str(approval), "shipped", "--signal-id", signal_id,
            "--payload", json.dumps({"carrier": carrier}), "--sagas", WAITS,
        )  # fmt: skip
    cli("--url", db_url, "cancel", str(approval), "--reason", "customer left")

    code, out, _ = cli("--url", db_url, "--json", "show", str(approval))
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "waiting"
    assert shown["wait"] == {"kind": "signal", "name": "approved"}
    assert shown["cancel_reason"] == "customer left"
    assert [(s["signal_id"], s["name"], s["payload"]) for s in shown["signals"]] == [
        ("ship-1", "shipped", {"carrier": "post"}),
    ]
    assert shown["signals"][0]["delivered_at"]
    assert shown["journal"][-1]["step_id"] == "signal:approved"


# --- records the CLI only reads --------------------------------------------------------------


def _waiting(
    *,
    next_step: str,
    waiting_for: str | None = None,
    wake_at: datetime | None = None,
    signals: tuple[PendingSignal, ...] = (),
) -> SagaRecord:
    moment = datetime(2026, 1, 2, tzinfo=timezone.utc)
    return SagaRecord(
        saga_id=uuid.uuid4(),
        saga_name="approval",
        status=SagaStatus.WAITING,
        version=1,
        cursor=0,
        applied=(),
        context="{}",
        error=None,
        created_at=moment,
        updated_at=moment,
        lease_owner=None,
        lease_expires_at=None,
        next_step=next_step,
        wake_at=wake_at,
        waiting_for=waiting_for,
        signals=signals,
    )


def test_a_saga_started_detached_waits_for_a_worker_to_start_it() -> None:
    now = datetime(2026, 1, 2, 12, tzinfo=timezone.utc)
    detached = _waiting(next_step="prepare", wake_at=now - timedelta(seconds=1))
    asleep = _waiting(next_step="sleep:nap", wake_at=now + timedelta(minutes=5))

    rows = table_rows(sagas_table([detached, asleep], now))

    assert rows[0]["WAITING_FOR"] == "start (a worker runs it)"
    assert rows[0]["WAKES"] == "2026-01-02 11:59:59Z (due)"
    assert (rows[1]["WAITING_FOR"], rows[1]["WAKES"]) == ("sleep nap", "2026-01-02 12:05:00Z")
    assert "DEADLINE" not in rows[0] and "CANCEL" not in rows[0]


@pytest.mark.parametrize("text", ["45s", "0.5s", "1m", "1h30m", "2d3h", "1d2h3m4s", "0s"])
def test_format_duration_writes_what_parse_duration_reads(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


# --- recover ---------------------------------------------------------------------------------


def test_recover_of_a_signalled_saga_runs_it_on_to_its_next_wait(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    approval = seed(_seed.waiting_approval, db_url)
    cli("--url", db_url, "signal", str(approval), "approved", "--payload", '"al"', "--sagas", WAITS)

    code, out, err = cli("--url", db_url, "recover", str(approval), "--sagas", WAITS)
    assert (code, err) == (0, "")
    assert out == f"saga {approval} recovered: waiting (sleep sleep-1)\n"
    code, out, _ = cli("--url", db_url, "--json", "recover", str(approval), "--sagas", WAITS)
    assert (code, json.loads(out)["outcome"]) == (0, "waiting")  # not due: it waits again


# --- graph -----------------------------------------------------------------------------------


def test_graph_draws_waits_timeouts_and_the_deadline(cli: CliRunner) -> None:
    code, out, err = cli("graph", "tests.cli.waiting_sagas:ApprovalSaga")
    assert (code, err) == (0, "")
    lines = [line.strip() for line in out.splitlines()]
    assert lines[1] == 'start(["start: approval (deadline 2d)"])'
    for line in [
        's1[/"wait for signal approved"/]',
        's1f["escalate (on timeout)"]',
        's2[/"sleep sleep-1 (5m)"/]',
        's3[/"wait for signal shipped"/]',
        # the timeout step runs in place of the signal; the saga goes on after either
        's1 -->|"times out (1h)"| s1f',
        "s1 --> s2",
        "s1f --> s2",
        "s2 --> s3",
        "s3 --> s4",
        # the timeout step is compensated like any step; a wait has nothing to compensate
        "s1f -.->|fails| c1f",
        "c4 -.-> c1f",
        "c1f -.-> c0",
        "class c4,c1f,c0 compensation",
    ]:
        assert line in lines, line
    # A signal wait without a timeout (and a sleep) never times out.
    assert not [line for line in lines if line.startswith(("s2 -", "s3 -")) and "times" in line]


def test_graph_sends_a_timeout_without_on_timeout_into_the_rollback(cli: CliRunner) -> None:
    code, out, _ = cli("graph", "tests.cli.waiting_sagas:ReminderSaga")
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert lines[1] == 'start(["start: reminder"])'  # no deadline
    assert 's2[/"sleep morning (until a time the context gives)"/]' in lines
    assert 's1 -.->|"times out (30m)"| c0' in lines  # prepare, the step before the wait


def test_graph_json_describes_each_wait(cli: CliRunner) -> None:
    code, out, _ = cli("graph", "--json", "tests.cli.waiting_sagas:ApprovalSaga")
    assert code == 0
    structure = json.loads(out)
    assert structure["deadline_seconds"] == timedelta(days=2).total_seconds()
    steps = structure["steps"]
    assert [(step["kind"], step.get("wait_kind")) for step in steps] == [
        ("step", None),
        ("wait", "signal"),
        ("wait", "sleep"),
        ("wait", "signal"),
        ("step", None),
    ]
    approved, sleep, shipped = steps[1:4]
    assert approved["wait_id"] == "signal:approved"
    assert (approved["signal"], approved["into"], approved["timeout_seconds"]) == (
        "approved",
        "approver",
        3600.0,
    )
    assert approved["on_timeout"]["step_id"] == "escalate"
    assert approved["on_timeout"]["class"] == "tests.cli.waiting_sagas.Escalate"
    assert (sleep["wait_id"], sleep["sleep_seconds"], sleep["on_timeout"]) == (
        "sleep:sleep-1",
        300.0,
        None,
    )
    assert (shipped["signal"], shipped["timeout_seconds"], shipped["on_timeout"]) == (
        "shipped",
        None,
        None,
    )
    assert structure["compensation_order"] == ["fulfil", "escalate", "prepare"]
    assert structure["mermaid"] == cli("graph", "tests.cli.waiting_sagas:ApprovalSaga")[1].rstrip(
        "\n"
    )

    code, out, _ = cli("graph", "--json", "tests.cli.waiting_sagas:ReminderSaga")
    morning = json.loads(out)["steps"][2]
    assert (morning["wait_kind"], morning["wait_id"], morning["sleep_seconds"]) == (
        "sleep_until",
        "sleep:morning",
        None,
    )
