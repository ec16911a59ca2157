"""The operations CLI, driven in-process through ``main([...])`` against a SQLite file.

Sagas are put in the storage first by a live mediator (``_seed``), in the states an operator
meets: completed, stalled RUNNING, stalled COMPENSATING, FAILED, parked.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from saga_core import SagaStatus

from . import _seed
from ._seed import CliRunner, Seeder
from .cli_sagas import BUILT, SWITCHES

SAGAS = "tests.cli.cli_sagas:saga_map"


# --- list ------------------------------------------------------------------------------------


def test_list_filters_by_status_name_and_parked(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    done = seed(_seed.completed_order, db_url)
    note = seed(_seed.completed_note, db_url)
    running = seed(_seed.stalled_running, db_url)
    parked = seed(_seed.stalled_running, db_url, "parked")
    seed(_seed.park, db_url, parked)

    code, out, err = cli("--url", db_url, "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    header = ["ID", "NAME", "STATUS", "VERSION", "CURSOR", "ATTEMPTS", "PARKED", "UPDATED"]
    assert lines[0].split() == [*header, "LEASE", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(s) for s in (done, note, running, parked)
    ]

    code, out, _ = cli("--url", db_url, "list", "--status", "running")
    rows = out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [str(running), str(parked)]
    assert rows[1].split()[1:3] == ["order", "running"]
    assert "recovery gave up after 10 attempts" in rows[1]

    code, out, _ = cli("--url", db_url, "list", "--name", "note")
    assert [row.split()[0] for row in out.splitlines()[1:]] == [str(note)]

    code, out, _ = cli("--url", db_url, "list", "--parked")
    assert [row.split()[0] for row in out.splitlines()[1:]] == [str(parked)]
    assert out.splitlines()[1].split()[6] == "yes"

    code, out, _ = cli("--url", db_url, "list", "--no-parked", "--status", "running")
    assert [row.split()[0] for row in out.splitlines()[1:]] == [str(running)]

    code, out, _ = cli("--url", db_url, "list", "--limit", "1")
    assert [row.split()[0] for row in out.splitlines()[1:]] == [str(done)]

    code, out, _ = cli("--url", db_url, "list", "--status", "failed")
    assert (code, out) == (0, "no saga matches\n")


def test_list_json_is_one_document_of_records(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    running = seed(_seed.stalled_running, db_url)
    seed(_seed.park, db_url, running)
    # --json is accepted after the command's name too.
    code, out, err = cli("--url", db_url, "list", "--parked", "--json")
    assert (code, err) == (0, "")
    [listed] = json.loads(out)
    assert listed["saga_id"] == str(running)
    assert listed["saga_name"] == "order"
    assert listed["status"] == "running"
    assert listed["parked"] is True
    assert listed["attempts"] == 1
    assert listed["cursor"] == 1
    assert listed["applied"] == ["reserve"]
    assert listed["lease_owner"] is None
    assert listed["error"] == "recovery gave up after 10 attempts"
    assert listed["updated_at"].endswith("+00:00")
    assert "context" not in listed

    code, out, _ = cli("--json", "--url", db_url, "list", "--status", "completed")
    assert (code, json.loads(out)) == (0, [])


def test_list_older_than_filters_by_last_update(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    old = seed(_seed.completed_order, db_url, "old")
    time.sleep(0.5)
    seed(_seed.completed_order, db_url, "new")

    code, out, _ = cli("--url", db_url, "--json", "list", "--older-than", "0.4s")
    assert code == 0
    assert [saga["saga_id"] for saga in json.loads(out)] == [str(old)]
    code, out, _ = cli("--url", db_url, "--json", "list", "--older-than", "1d")
    assert json.loads(out) == []


@pytest.mark.parametrize("duration", ["soon", "10", "5x", "1h-2m", ""])
def test_list_refuses_a_bad_duration(cli: CliRunner, db_url: str, duration: str) -> None:
    code, out, err = cli("--url", db_url, "list", "--older-than", duration)
    assert (code, out) == (2, "")
    assert "--older-than" in err


# --- show ------------------------------------------------------------------------------------


def test_show_prints_state_context_and_journal_timeline(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.failed_order, db_url)
    code, out, err = cli("--url", db_url, "show", str(saga_id))
    assert (code, err) == (0, "")
    assert out.startswith(f"saga {saga_id} (order)\n")
    state = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in out.split("\n\n")[0].splitlines()[1:]
    }
    assert state["status"] == "failed"
    assert state["cursor"] == "2"
    assert state["applied"] == "reserve, charge"
    assert state["parked"] == "no"
    assert "ShippingRefusedError: no carrier for order failed" in state["error"]
    assert "compensation of charge failed: RefundsDownError" in out.split("\n\n")[0]
    context = out.split("context:\n", 1)[1].split("\n\n", 1)[0]
    assert json.loads(context) == {
        "charged": True,
        "order_id": "failed",
        "reserved": True,
        "shipped": False,
    }
    timeline = out.split("journal (", 1)[1].splitlines()[1:]
    events = [line.split()[1:5] for line in timeline]
    assert events == [
        ["reserve", "act", "started", "attempt"],
        ["reserve", "act", "completed", "attempt"],
        ["charge", "act", "started", "attempt"],
        ["charge", "act", "completed", "attempt"],
        ["ship", "act", "started", "attempt"],
        ["ship", "act", "failed", "attempt"],
        ["(saga)", "compensate", "compensating", "attempt"],
        ["ship", "compensate", "started", "attempt"],
        ["ship", "compensate", "completed", "attempt"],
        ["charge", "compensate", "started", "attempt"],
        ["charge", "compensate", "failed", "attempt"],
        ["charge", "compensate", "started", "attempt"],
        ["charge", "compensate", "failed", "attempt"],
    ]
    assert timeline[0].split()[0] == "+0.000s"
    assert all(line.split()[0].startswith("+") for line in timeline)
    assert "ShippingRefusedError: no carrier for order failed" in timeline[5]
    assert "ShippingRefusedError: no carrier for order failed" in timeline[6]  # why
    assert timeline[12].split()[4:6] == ["attempt", "2"]  # the refund's second attempt
    assert "RefundsDownError: payment provider unreachable" in timeline[12]


def test_show_json(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.completed_order, db_url)
    code, out, _ = cli("--url", db_url, "--json", "show", str(saga_id))
    assert code == 0
    shown = json.loads(out)
    assert shown["saga_id"] == str(saga_id)
    assert shown["status"] == "completed"
    assert shown["context"] == {
        "order_id": "done",
        "reserved": True,
        "charged": True,
        "shipped": True,
    }
    journal = shown["journal"]
    assert [(e["step_id"], e["direction"], e["event"]) for e in journal] == [
        *(
            (step, "act", event)
            for step in ("reserve", "charge", "ship")
            for event in ("started", "completed")
        ),
        ("", "act", "finished"),
    ]
    assert journal[-1]["detail"] == "completed"
    assert journal[0]["offset_seconds"] == 0.0
    assert all(e["attempt"] == 1 and e["error"] is None for e in journal[:-1])


def test_show_unknown_id_fails_with_one_line(cli: CliRunner, db_url: str) -> None:
    saga_id = uuid.uuid4()
    code, out, err = cli("--url", db_url, "show", str(saga_id))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith("saga: error: ")
    assert str(saga_id) in err


def test_show_refuses_an_id_that_is_not_a_uuid(cli: CliRunner, db_url: str) -> None:
    code, _, err = cli("--url", db_url, "show", "order-17")
    assert code == 2
    assert "not a saga id" in err


# --- recover and retry-compensation ----------------------------------------------------------


def test_recover_resumes_a_stalled_running_saga(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.RUNNING, False)
    code, out, _ = cli("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)
    assert code == 0
    assert out == f"saga {saga_id} recovered: completed\n"
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPLETED, False)


def test_recover_finishes_the_rollback_of_a_compensating_saga(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.stalled_compensating, db_url)
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPENSATING, False)
    code, out, _ = cli("--url", db_url, "--json", "recover", str(saga_id), "--sagas", SAGAS)
    assert code == 0
    result = json.loads(out)
    assert result["outcome"] == "compensated"
    assert result["unparked"] is False
    assert "was compensated" in result["error"]
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPENSATED, False)


def test_recover_accepts_a_mapper_function_or_a_saga_class(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    first = seed(_seed.stalled_running, db_url)
    second = seed(_seed.stalled_running, db_url)
    sagas = "tests.cli.cli_sagas:bind_sagas"
    assert cli("--url", db_url, "recover", str(first), "--sagas", sagas)[0] == 0
    sagas = "tests.cli.cli_sagas:OrderSaga"
    assert cli("--url", db_url, "recover", str(second), "--sagas", sagas)[0] == 0
    assert seed(_seed.status_of, db_url, second) == (SagaStatus.COMPLETED, False)


def test_recover_builds_steps_with_the_container(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    BUILT.clear()
    container = "tests.cli.cli_sagas:build_step"
    args = ("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)
    assert cli(*args, "--container", container)[0] == 0
    assert BUILT == ["charge", "ship"]

    code, _, err = cli(*args, "--container", "tests.cli.cli_sagas:no_container")
    assert code == 2
    assert "--container tests.cli.cli_sagas:no_container" in err


def test_recover_of_a_finished_saga_does_nothing(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.completed_order, db_url)
    code, out, _ = cli("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)
    assert (code, out) == (0, f"saga {saga_id} is completed already; nothing to recover\n")


def test_recover_unparks_a_parked_saga_first(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    seed(_seed.park, db_url, saga_id)
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.RUNNING, True)
    code, out, _ = cli("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)
    assert code == 0
    assert out.splitlines() == [
        f"saga {saga_id} was parked; unparked it",
        f"saga {saga_id} recovered: completed",
    ]
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPLETED, False)


def test_recover_takes_over_a_live_lease_only_with_force(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    seed(_seed.hold_lease, db_url, saga_id, "hung-runner")
    args = ("--url", db_url, "recover", str(saga_id), "--sagas", SAGAS)

    code, _, err = cli(*args)
    assert code == 1
    assert "'hung-runner'" in err
    assert "If that runner is dead, take the saga over with --force" in err
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.RUNNING, False)

    code, out, _ = cli(*args, "--force")
    assert (code, out) == (0, f"saga {saga_id} recovered: completed\n")
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPLETED, False)


def test_recover_refuses_a_saga_its_sagas_do_not_bind_without_claiming_it(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    sagas = "tests.cli.cli_sagas:NoteSaga"
    code, out, err = cli("--url", db_url, "recover", str(saga_id), "--sagas", sagas)
    assert (code, out) == (2, "")
    assert "'order'" in err and "does not bind" in err
    # Not claimed: a worker can take it at once.
    code, out, _ = cli("--url", db_url, "--json", "list", "--status", "running")
    assert json.loads(out)[0]["lease_owner"] is None


def test_retry_compensation_of_a_failed_saga(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(_seed.failed_order, db_url)
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.FAILED, False)

    # The payment provider is still down: the rollback fails again, exit 1.
    code, out, err = cli("--url", db_url, "retry-compensation", str(saga_id), "--sagas", SAGAS)
    assert (code, out) == (1, "")
    assert "could not be compensated" in err
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.FAILED, False)

    SWITCHES.refunds_down = False
    code, out, err = cli("--url", db_url, "retry-compensation", str(saga_id), "--sagas", SAGAS)
    assert code == 0
    assert "failed and was compensated" in out
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.COMPENSATED, False)


def test_retry_compensation_prints_json_even_when_it_fails_again(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.failed_order, db_url)
    seed(_seed.park, db_url, saga_id)
    code, out, err = cli(
        "--url", db_url, "--json", "retry-compensation", str(saga_id), "--sagas", SAGAS
    )
    assert code == 1
    result = json.loads(out)
    assert (result["outcome"], result["unparked"]) == ("failed", True)
    assert "could not be compensated" in err


def test_retry_compensation_refuses_a_running_saga(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(_seed.stalled_running, db_url)
    code, out, err = cli("--url", db_url, "retry-compensation", str(saga_id), "--sagas", SAGAS)
    assert (code, out) == (1, "")
    assert "is running, not failed or compensating" in err
    assert seed(_seed.status_of, db_url, saga_id) == (SagaStatus.RUNNING, False)


# --- worker ----------------------------------------------------------------------------------


def test_worker_once_recovers_stalled_sagas(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    running = seed(_seed.stalled_running, db_url)
    compensating = seed(_seed.stalled_compensating, db_url)
    seed(_seed.completed_order, db_url)
    code, out, _ = cli("--url", db_url, "worker", "--sagas", SAGAS, "--once")
    assert code == 0
    assert out == (
        "claimed 2: completed 1, suspended 0, compensated 1, failed 0, parked 0, errors 0, lost 0\n"
    )
    assert seed(_seed.status_of, db_url, running) == (SagaStatus.COMPLETED, False)
    assert seed(_seed.status_of, db_url, compensating) == (SagaStatus.COMPENSATED, False)

    code, out, _ = cli("--url", db_url, "--json", "worker", "--sagas", SAGAS, "--once")
    assert json.loads(out) == {
        "claimed": 0,
        "completed": 0,
        "suspended": 0,
        "compensated": 0,
        "failed": 0,
        "parked": 0,
        "errors": 0,
        "lost": 0,
    }


def test_worker_refuses_out_of_range_options(cli: CliRunner, db_url: str) -> None:
    for option, value in [("--batch-size", "0"), ("--poll-interval", "-1"), ("--once", "x")]:
        code, _, err = cli("--url", db_url, "worker", "--sagas", SAGAS, option, value)
        assert code == 2, (option, err)


# --- graph -----------------------------------------------------------------------------------

WALLET_GRAPH = """\
flowchart TD
    start(["start: order-with-wallet"])
    s0["reserve"]
    s1["charge"]
    s1f["charge_wallet (fallback)"]
    s1b{{"circuit breaker: PassThroughBreaker"}}
    s2["ship"]
    completed(["completed"])
    c2["compensate ship (no-op)"]
    c1f["compensate charge_wallet (no-op)"]
    c1["compensate charge"]
    c0["compensate reserve"]
    compensated(["compensated"])
    start --> s0
    s0 --> s1
    s1b -.- s1
    s1 -->|"fails or circuit open"| s1f
    s1 --> s2
    s1f --> s2
    s2 --> completed
    s0 -.->|fails| c0
    s1f -.->|fails| c1f
    s2 -.->|fails| c2
    c2 -.-> c1f
    c1f -.-> c1
    c1 -.-> c0
    c0 -.-> compensated
    classDef compensation stroke-dasharray: 4 4
    class c2,c1f,c1,c0 compensation
"""


def test_graph_draws_a_saga_with_a_fallback_as_mermaid(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGA_STORAGE_URL", raising=False)  # graph needs no storage
    code, out, err = cli("graph", "tests.cli.cli_sagas:WalletFallbackSaga")
    assert (code, err) == (0, "")
    assert out == WALLET_GRAPH


def test_graph_json_gives_the_structure(cli: CliRunner) -> None:
    code, out, _ = cli("--json", "graph", "tests.cli.cli_sagas:WalletFallbackSaga")
    assert code == 0
    structure = json.loads(out)
    assert structure["saga"] == "order-with-wallet"
    assert structure["context"] == "tests.cli.cli_sagas.OrderContext"
    assert [step["kind"] for step in structure["steps"]] == ["step", "fallback", "step"]
    node = structure["steps"][1]
    assert (node["primary"]["step_id"], node["fallback"]["step_id"]) == ("charge", "charge_wallet")
    assert node["circuit_breaker"] == "PassThroughBreaker"
    assert node["primary"]["compensates"] is True
    assert node["fallback"]["compensates"] is False
    assert structure["compensation_order"] == ["ship", "charge_wallet", "charge", "reserve"]
    assert structure["mermaid"] + "\n" == WALLET_GRAPH


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sagas", "message"),
    [
        ("tests.cli.no_such_module:saga_map", "no module named 'tests.cli.no_such_module'"),
        ("tests.cli.cli_sagas:no_such_map", "has no attribute 'no_such_map'"),
        (
            "tests.cli.cli_sagas:not_sagas",
            "or a Saga subclass; got a value of type int",
        ),
        ("tests.cli.cli_sagas:Switches", "got the class Switches"),
        ("tests.cli.cli_sagas", "takes an import path 'module:attribute'"),
    ],
)
def test_bad_sagas_import_paths_are_usage_errors(
    cli: CliRunner, db_url: str, sagas: str, message: str
) -> None:
    code, out, err = cli("--url", db_url, "worker", "--once", "--sagas", sagas)
    assert (code, out) == (2, "")
    assert message in err
    assert err.count("\n") == 1


def test_graph_of_something_that_is_not_a_saga(cli: CliRunner) -> None:
    code, _, err = cli("graph", "tests.cli.cli_sagas:Reserve")
    assert code == 2
    assert "expected a Saga subclass; got the class Reserve" in err


def test_unknown_storage_scheme_names_the_scheme(cli: CliRunner) -> None:
    code, out, err = cli("--url", "mongodb://localhost/sagas", "list")
    assert (code, out) == (2, "")
    assert "'mongodb'" in err
    assert "installed schemes" in err


def test_missing_url_is_a_usage_error(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGA_STORAGE_URL", raising=False)
    code, out, err = cli("list")
    assert (code, out) == (2, "")
    assert "--url" in err and "SAGA_STORAGE_URL" in err


def test_url_from_the_environment(
    cli: CliRunner, seed: Seeder, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    saga_id = seed(_seed.completed_order, db_url)
    monkeypatch.setenv("SAGA_STORAGE_URL", db_url)
    code, out, _ = cli("--json", "list")
    assert code == 0
    assert [saga["saga_id"] for saga in json.loads(out)] == [str(saga_id)]
