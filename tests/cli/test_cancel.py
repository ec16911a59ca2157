"""``saga cancel``: the durable decision to roll a saga back, through the mediator; no saga
classes needed. A saga rolling back already, cancelled before or compensated is reported with
exit 0; a completed or unknown one is an error (exit 1)."""

from __future__ import annotations

import json
import uuid

from saga_core import SagaStatus

from . import _seed
from ._seed import CliRunner, Seeder

WAITS = "tests.cli.waiting_sagas:saga_map"
ORDERS = "tests.cli.cli_sagas:saga_map"


def test_cancel_of_a_waiting_saga_is_compensated_by_the_worker(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.waiting_approval, db_url)

    code, out, err = cli("--url", db_url, "cancel", str(saga_id), "--reason", "customer left")
    assert (code, err) == (0, "")
    assert out == (
        f"saga {saga_id} cancelled (reason: customer left): a worker compensates it now\n"
    )
    record = seed(_seed.record_of, db_url, saga_id)
    assert (record.status, record.cancel_reason) == (SagaStatus.WAITING, "customer left")

    # The first reason stays; a second cancel changes nothing.
    code, out, _ = cli("--url", db_url, "--json", "cancel", str(saga_id), "--reason", "again")
    assert code == 0
    assert json.loads(out) == {
        "saga_id": str(saga_id),
        "saga_name": "approval",
        "status": "waiting",
        "requested": False,
        "cancel_reason": "customer left",
    }
    code, out, _ = cli("--url", db_url, "cancel", str(saga_id))
    assert out == (
        f"saga {saga_id} was cancelled before (reason: customer left); nothing changed\n"
    )

    # A cancelled saga takes no signal.
    code, _, err = cli(
        "--url", db_url, "signal", str(saga_id), "approved", "--payload", '"a"', "--sagas", WAITS
    )
    assert code == 1
    assert "it is cancelled" in err

    code, out, _ = cli("--url", db_url, "worker", "--sagas", WAITS, "--once")
    assert (code, "compensated 1" in out) == (0, True)
    record = seed(_seed.record_of, db_url, saga_id)
    assert record.status is SagaStatus.COMPENSATED
    assert json.loads(record.context)["prepared"] is False

    code, out, err = cli("--url", db_url, "cancel", str(saga_id))
    assert (code, err) == (0, "")
    assert out == f"saga {saga_id} is compensated already; nothing to cancel\n"


def test_cancel_of_a_running_saga_leaves_it_to_its_runner_or_recovery(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    code, out, err = cli("--url", db_url, "--json", "cancel", str(saga_id))
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert (document["requested"], document["status"]) == (True, "running")
    assert document["cancel_reason"] == "cancelled with the saga CLI"  # the default reason

    cli("--url", db_url, "worker", "--sagas", ORDERS, "--once")
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPENSATED, False)


def test_cancel_of_a_saga_rolling_back_already_changes_nothing(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.failed_order, db_url)
    code, out, err = cli("--url", db_url, "cancel", str(saga_id))
    assert (code, err) == (0, "")
    assert out.startswith(f"saga {saga_id} is failed: it is rolling back already; nothing changed")
    assert "retry it with 'saga retry-compensation'" in out
    assert seed(_seed.record_of, db_url, saga_id).cancel_reason is None


def test_a_completed_saga_cannot_be_cancelled(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.completed_order, db_url)
    code, out, err = cli("--url", db_url, "cancel", str(saga_id))
    assert (code, out) == (1, "")
    assert err == (
        f"saga: error: saga {saga_id} is completed: it has ended, so it cannot be cancelled\n"
    )


def test_cancel_of_an_unknown_saga(cli: CliRunner, db_url: str) -> None:
    saga_id = uuid.uuid4()
    code, out, err = cli("--url", db_url, "cancel", str(saga_id))
    assert (code, out) == (1, "")
    assert err.startswith("saga: error: ") and err.count("\n") == 1
    assert str(saga_id) in err


def test_an_empty_reason_is_a_usage_error(cli: CliRunner, db_url: str) -> None:
    code, _, err = cli("--url", db_url, "cancel", str(uuid.uuid4()), "--reason", "")
    assert code == 2
    assert "the reason must not be empty" in err
