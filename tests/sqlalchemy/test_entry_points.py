"""The plugin's entry points load through the installed metadata, for every scheme."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from saga_core import SagaStatus, bootstrap, installed_storage_schemes, open_storage
from saga_sqlalchemy import SqlAlchemySagaStorage, open_sqlalchemy_storage

from ._sagas import CounterContext, ThreeStepSaga

SCHEMES = ["sqlite", "sqlite+aiosqlite", "postgresql", "postgresql+asyncpg", "postgresql+psycopg"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_entry_point_loads_the_factory(scheme: str) -> None:
    (entry_point,) = [
        ep for ep in metadata.entry_points(group="saga_core.storages") if ep.name == scheme
    ]
    assert entry_point.dist is not None
    assert entry_point.dist.name == "saga-sqlalchemy"
    assert entry_point.load() is open_sqlalchemy_storage
    assert scheme in installed_storage_schemes()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_open_storage_builds_a_sqlalchemy_storage(scheme: str, tmp_path: Path) -> None:
    url = (
        f"{scheme}:///{tmp_path}/x.db"
        if scheme.startswith("sqlite")
        else f"{scheme}://postgres@127.0.0.1:5432/test"
    )
    storage = open_storage(url)
    assert isinstance(storage, SqlAlchemySagaStorage)


@pytest.mark.anyio
async def test_sqlite_url_runs_a_saga_on_either_backend(tmp_path: Path) -> None:
    """The embedded default needs no extra package and runs on asyncio and trio."""
    async with open_storage(f"sqlite:///{tmp_path}/sagas.db") as storage:
        mediator = bootstrap(
            sagas_mapper=lambda m: m.bind(CounterContext, ThreeStepSaga), saga_storage=storage
        )
        outcome = await mediator.run(CounterContext(name="embedded"))
        assert outcome.status is SagaStatus.COMPLETED
        assert (await storage.load(outcome.saga_id)).version == 4
