"""The CLI and versioned sagas: ``show`` and ``list`` tell a saga's version, ``recover`` and
``worker`` run a saga only on the version it started with (or park it, saying which version
to deploy), and ``graph --version N`` draws any bound version.

Sagas are kept in a SQLite file and started by a live mediator, as in the other CLI tests.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import anyio
import pytest

from saga_core import SagaMap, SagaMediator, SagaStatus, codec_for, open_storage
from saga_core._cli.format import sagas_table
from saga_core._cli.load import bound_sagas
from saga_core.storage import SagaRecord

from ._seed import CliRunner, Seeder
from .versioned_sagas import HANGING, ParcelContext, bind_with_letters, v1_only

BOTH = "tests.cli.versioned_sagas:both"
V2_ONLY = "tests.cli.versioned_sagas:v2_only"


@pytest.fixture(autouse=True)
def _no_hanging_steps_left() -> object:
    yield
    HANGING.clear()


async def stalled_v1_parcel(url: str) -> uuid.UUID:
    """A version 1 ``parcels`` saga whose process died inside its first act."""
    saga_id = uuid.uuid4()
    started = anyio.Event()
    HANGING.append(started)
    async with open_storage(url) as storage:
        mediator = SagaMediator(v1_only, storage)

        async def run() -> None:
            async for _ in mediator.stream(ParcelContext("p-1"), saga_id=saga_id):
                pass

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(run)
            await started.wait()
            task_group.cancel_scope.cancel()
    return saga_id


async def stored(url: str, saga_id: uuid.UUID) -> SagaRecord:
    async with open_storage(url) as storage:
        return await storage.load(saga_id)


def steps_done(record: SagaRecord) -> list[str]:
    context: ParcelContext = codec_for(ParcelContext).decode(record.context)
    return context.done


# --- show ------------------------------------------------------------------------------------


def test_show_prints_the_saga_version(cli: CliRunner, seed: Seeder, db_url: str) -> None:
    saga_id = seed(stalled_v1_parcel, db_url)

    code, out, err = cli("--url", db_url, "show", str(saga_id))
    assert (code, err) == (0, "")
    state = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in out.split("\n\n")[0].splitlines()[1:]
    }
    assert state["saga version"] == "1"

    code, out, _ = cli("--url", db_url, "--json", "show", str(saga_id))
    assert json.loads(out)["saga_version"] == 1


# --- recover and worker: the stored version, or parked ----------------------------------------


def test_worker_parks_a_saga_whose_version_it_does_not_bind_and_recover_runs_it_on_its_own(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(stalled_v1_parcel, db_url)

    # A worker of a deployment that dropped version 1 too soon: it parks the saga.
    code, out, _ = cli("--url", db_url, "worker", "--sagas", V2_ONLY, "--once")
    assert (code, out) == (
        0,
        "claimed 1: completed 0, suspended 0, compensated 0, failed 0, parked 1, errors 0, "
        "lost 0\n",
    )
    code, out, _ = cli("--url", db_url, "show", str(saga_id))
    reason = (
        "saga parcels is version 1 but this worker binds version 2: bind version 1 again "
        "(keep it bound until its sagas finish) and unpark it"
    )
    assert "status: running (parked)" in " ".join(out.split())
    assert reason in out
    parked = seed(stored, db_url, saga_id)
    assert parked.parked and steps_done(parked) == []

    # recover with the same sagas is refused before anything is unparked, claimed or run.
    code, out, err = cli("--url", db_url, "recover", str(saga_id), "--sagas", V2_ONLY)
    assert (code, out) == (2, "")
    assert f"saga {saga_id} is 'parcels' version 1, but --sagas {V2_ONLY} binds version 2" in err
    assert "bind version 1 again" in err and "nothing was run" in err
    assert seed(stored, db_url, saga_id) == parked

    # Version 1 bound again: recover unparks it and runs version 1's steps.
    code, out, _ = cli("--url", db_url, "--json", "recover", str(saga_id), "--sagas", BOTH)
    assert code == 0
    result = json.loads(out)
    assert (result["saga_version"], result["unparked"], result["outcome"]) == (
        1,
        True,
        "completed",
    )
    finished = seed(stored, db_url, saga_id)
    assert (finished.status, finished.parked) == (SagaStatus.COMPLETED, False)
    assert steps_done(finished) == ["pack", "label v1"]


def test_worker_with_both_versions_bound_recovers_a_v1_saga_on_v1(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(stalled_v1_parcel, db_url)
    code, out, _ = cli(
        "--url", db_url, "worker", "--sagas", "tests.cli.versioned_sagas:bind_both", "--once"
    )
    assert code == 0
    assert out.startswith("claimed 1: completed 1,")
    assert steps_done(seed(stored, db_url, saga_id)) == ["pack", "label v1"]


# --- list --------------------------------------------------------------------------------------


def _record(saga_version: int) -> SagaRecord:
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return SagaRecord(
        saga_id=uuid.uuid4(),
        saga_name="parcels",
        status=SagaStatus.RUNNING,
        version=4,
        cursor=1,
        applied=("pack",),
        context="{}",
        error=None,
        created_at=moment,
        updated_at=moment,
        lease_owner=None,
        lease_expires_at=None,
        saga_version=saga_version,
    )


def test_list_shows_a_saga_version_column_when_a_saga_is_not_version_1() -> None:
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    records = [_record(1), _record(2)]

    lines = sagas_table(records, now).splitlines()

    assert lines[0].split()[:4] == ["ID", "NAME", "SAGA_VERSION", "STATUS"]
    assert [line.split()[2] for line in lines[1:]] == ["1", "2"]
    assert [line.split()[4] for line in lines[1:]] == ["4", "4"]  # the write counter


def test_list_leaves_the_column_out_when_every_saga_is_version_1(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    seed(stalled_v1_parcel, db_url)
    code, out, _ = cli("--url", db_url, "list")
    assert code == 0
    assert "SAGA_VERSION" not in out.splitlines()[0]
    code, out, _ = cli("--url", db_url, "--json", "list")
    assert [saga["saga_version"] for saga in json.loads(out)] == [1]


# --- graph ---------------------------------------------------------------------------------------


def test_graph_of_a_saga_map_draws_the_highest_version_or_the_one_asked_for(
    cli: CliRunner,
) -> None:
    code, latest, err = cli("graph", BOTH)
    assert (code, err) == (0, "")
    assert 'start(["start: parcels v2"])' in latest
    assert 's2["track"]' in latest

    code, first, _ = cli("graph", BOTH, "--version", "1")
    assert code == 0
    assert 'start(["start: parcels"])' in first
    assert "track" not in first

    code, out, _ = cli("--json", "graph", "tests.cli.versioned_sagas:bind_both", "--version", "1")
    structure = json.loads(out)
    assert (structure["saga"], structure["version"]) == ("parcels", 1)
    assert [step["step_id"] for step in structure["steps"]] == ["pack", "label"]


def test_graph_of_a_class_draws_that_class(cli: CliRunner) -> None:
    code, out, _ = cli("--json", "graph", "tests.cli.versioned_sagas:ParcelSagaV2")
    assert code == 0
    assert json.loads(out)["version"] == 2
    code, out, _ = cli(
        "--json", "graph", "tests.cli.versioned_sagas:ParcelSagaV2", "--version", "2"
    )
    assert json.loads(out)["class"].endswith("ParcelSagaV2")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tests.cli.versioned_sagas:ParcelSagaV2", "--version", "1"],
            "ParcelSagaV2 is version 2 of saga 'parcels'; to draw version 1, pass its class, "
            "or a SagaMap that binds it",
        ),
        ([BOTH, "--version", "3"], "binds saga 'parcels' in versions 1, 2, not version 3"),
        ([BOTH, "--version", "0"], "must be at least 1"),
        (
            ["tests.cli.versioned_sagas:bind_with_letters"],
            "binds several sagas (letters, parcels); choose one with --name",
        ),
        ([BOTH, "--name", "letters"], "binds no saga named 'letters' (bound: parcels)"),
    ],
)
def test_graph_refuses_a_version_or_name_it_cannot_draw(
    cli: CliRunner, args: list[str], message: str
) -> None:
    code, out, err = cli("graph", *args)
    assert (code, out) == (2, "")
    assert message in err


def test_graph_picks_a_saga_by_name_from_a_map_of_several(cli: CliRunner) -> None:
    sagas = "tests.cli.versioned_sagas:bind_with_letters"
    code, out, _ = cli("--json", "graph", sagas, "--name", "letters")
    assert (code, json.loads(out)["saga"]) == (0, "letters")
    code, out, _ = cli("--json", "graph", sagas, "--name", "parcels")
    assert json.loads(out)["version"] == 2


def test_the_worker_names_the_versions_it_binds_in_its_start_line() -> None:
    mapper = SagaMap()
    bind_with_letters(mapper)
    assert bound_sagas(mapper) == "letters version 1; parcels versions 1, 2"
