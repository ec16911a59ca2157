"""``saga signal``: a signal delivered through the mediator, checked against the saga's
definition, its payload encoded by the context codec; every refusal a one-line error with its
exit code, and a repeated signal id reported as already delivered (exit 0)."""

from __future__ import annotations

import io
import json
import pathlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from saga_core import SagaStatus

from . import _seed
from ._seed import CliRunner, Seeder

WAITS = "tests.cli.waiting_sagas:saga_map"
ORDERS = "tests.cli.cli_sagas:saga_map"


def assert_one_line_error(err: str, *parts: str) -> None:
    assert err.startswith("saga: error: ")
    assert err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


def test_a_signal_wakes_the_waiting_saga_and_the_worker_resumes_it(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    before = datetime.now(timezone.utc)

    code, out, err = cli(
        "--url", db_url, "signal", str(saga_id), "approved", "--payload", '"alice"',
        "--sagas", WAITS,
    )  # fmt: skip
    assert (code, err) == (0, "")
    [line] = out.splitlines()
    assert line.startswith(f"signal 'approved' delivered to saga {saga_id} (signal id ")
    assert line.endswith("it was waiting for it: a worker resumes it now")
    record = seed(_seed.record_of, db_url, saga_id)
    [pending] = record.signals
    assert f"(signal id {pending.signal_id})" in line  # the generated id, to retry with
    assert json.loads(pending.payload) == "alice"
    assert record.wake_at is not None and record.wake_at <= datetime.now(timezone.utc)
    assert record.wake_at >= before - timedelta(seconds=1)  # brought forward from its timeout

    code, out, _ = cli("--url", db_url, "worker", "--sagas", WAITS, "--once")
    assert (code, out.split(":")[0]) == (0, "claimed 1")
    assert "suspended 1" in out  # on to its sleep
    record = seed(_seed.record_of, db_url, saga_id)
    assert record.status is SagaStatus.WAITING
    assert record.next_step == "sleep:sleep-1"
    assert json.loads(record.context)["approver"] == "alice"
    assert record.signals == ()


def test_a_signal_the_saga_does_not_wait_for_yet_is_kept(
    cli: CliRunner, seed: Seeder, db_url: str, tmp_path: pathlib.Path
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    payload = tmp_path / "shipped.json"
    payload.write_text('{"carrier": "post"}', "utf-8")

    code, out, err = cli(
        "--url", db_url, "--json", "signal", str(saga_id), "shipped",
        "--payload-file", str(payload), "--signal-id", "ship-1", "--sagas", WAITS,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "saga_id": str(saga_id),
        "saga_name": "approval",
        "signal": "shipped",
        "signal_id": "ship-1",
        "delivered": True,
    }
    # A second signal of a name with one pending is refused: its wait takes one.
    code, _, err = cli("--url", db_url, "signal", str(saga_id), "shipped", "--sagas", WAITS)
    assert code == 1
    assert "pending already" in err
    record = seed(_seed.record_of, db_url, saga_id)
    (first,) = record.signals
    assert (first.signal_id, first.name, json.loads(first.payload)) == (
        "ship-1",
        "shipped",
        {"carrier": "post"},
    )
    assert record.wake_at is not None and record.wake_at > datetime.now(timezone.utc)


def test_a_payload_from_stdin(
    cli: CliRunner, seed: Seeder, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    monkeypatch.setattr("sys.stdin", io.StringIO('"bob"\n'))
    code, _, err = cli(
        "--url", db_url, "signal", str(saga_id), "approved", "--payload-file", "-", "--sagas", WAITS
    )
    assert (code, err) == (0, "")
    [pending] = seed(_seed.record_of, db_url, saga_id).signals
    assert json.loads(pending.payload) == "bob"


def test_a_repeated_signal_id_is_already_delivered_and_exits_0(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    args = ["signal", str(saga_id), "approved", "--payload", '"al"', "--signal-id", "approval-17"]
    code, _, _ = cli("--url", db_url, *args, "--sagas", WAITS)
    assert code == 0

    code, out, err = cli("--url", db_url, *args, "--sagas", WAITS)
    assert (code, err) == (0, "")
    assert out == (
        f"signal id approval-17 was already delivered to saga {saga_id}; nothing changed\n"
    )
    code, out, _ = cli("--url", db_url, "--json", *args, "--sagas", WAITS)
    assert (code, json.loads(out)["delivered"]) == (0, False)
    assert len(seed(_seed.record_of, db_url, saga_id).signals) == 1

    # Still a duplicate once the signal was consumed: a retried delivery changes nothing.
    cli("--url", db_url, "worker", "--sagas", WAITS, "--once")
    code, out, _ = cli("--url", db_url, *args, "--sagas", WAITS)
    assert (code, "already delivered" in out) == (0, True)


def test_a_signal_for_an_unknown_saga(cli: CliRunner, db_url: str) -> None:
    saga_id = uuid.uuid4()
    code, out, err = cli("--url", db_url, "signal", str(saga_id), "approved", "--sagas", WAITS)
    assert (code, out) == (1, "")
    assert_one_line_error(err, str(saga_id))


def test_a_signal_for_a_finished_saga(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.completed_order, db_url)
    code, out, err = cli("--url", db_url, "signal", str(saga_id), "approved", "--sagas", WAITS)
    assert (code, out) == (1, "")
    assert_one_line_error(
        err, f"saga {saga_id} is completed: it has ended, so signal 'approved' was not delivered"
    )


def test_a_name_the_saga_never_waits_for_is_a_usage_error(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    code, out, err = cli("--url", db_url, "signal", str(saga_id), "paid", "--sagas", WAITS)
    assert (code, out) == (2, "")
    assert_one_line_error(err, "never waits for signal 'paid'", "'approved', 'shipped'")
    assert seed(_seed.record_of, db_url, saga_id).signals == ()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("42", "does not fit ApprovalContext.approver"),
        ("alice", "--payload is not JSON"),
        ("NaN", "NaN is not a JSON value"),
        ('{"name": ', "--payload is not JSON"),
    ],
)
def test_a_payload_that_does_not_fit_or_is_not_json_is_a_usage_error(
    cli: CliRunner, seed: Seeder, db_url: str, payload: str, says: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    code, out, err = cli(
        "--url", db_url, "signal", str(saga_id), "approved", "--payload", payload, "--sagas", WAITS
    )
    assert (code, out) == (2, "")
    assert_one_line_error(err, says)
    assert seed(_seed.record_of, db_url, saga_id).signals == ()


def test_an_unreadable_payload_file_is_a_usage_error(
    cli: CliRunner, db_url: str, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "nowhere.json"
    code, _, err = cli(
        "--url", db_url, "signal", str(uuid.uuid4()), "approved",
        "--payload-file", str(missing), "--sagas", WAITS,
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(err, f"cannot read --payload-file {missing}")


def test_a_saga_past_its_wait_refuses_the_signal(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    cli("--url", db_url, "signal", str(saga_id), "approved", "--payload", '"a"', "--sagas", WAITS)
    cli("--url", db_url, "worker", "--sagas", WAITS, "--once")  # took it, now sleeping

    code, out, err = cli(
        "--url", db_url, "signal", str(saga_id), "approved", "--payload", '"b"', "--sagas", WAITS
    )
    assert (code, out) == (1, "")
    assert_one_line_error(err, "has gone past its wait for signal 'approved'")


def test_sagas_that_do_not_bind_the_saga_are_a_usage_error(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)
    code, out, err = cli("--url", db_url, "signal", str(saga_id), "approved", "--sagas", ORDERS)
    assert (code, out) == (2, "")
    assert_one_line_error(err, "'approval', which --sagas tests.cli.cli_sagas:saga_map does not")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--payload", "1", "--payload-file", "x.json"], "not allowed with argument"),
        (["--signal-id", ""], "the signal id must not be empty"),
        ([], "the following arguments are required: --sagas"),
    ],
)
def test_bad_arguments_are_usage_errors(
    cli: CliRunner, db_url: str, extra: list[str], says: str
) -> None:
    sagas = ["--sagas", WAITS] if extra else []
    code, out, err = cli("--url", db_url, "signal", str(uuid.uuid4()), "approved", *extra, *sagas)
    assert (code, out) == (2, "")
    assert says in err


def test_an_empty_signal_name_is_a_usage_error(cli: CliRunner, db_url: str) -> None:
    code, _, err = cli("--url", db_url, "signal", str(uuid.uuid4()), "", "--sagas", WAITS)
    assert code == 2
    assert "the signal name must not be empty" in err
