"""saga-sqlalchemy's README is true: its Python blocks run against the real code (with only
the names they say come from elsewhere supplied, and a deployment's URL pointed at the local
server), the options it lists are exactly those accepted, and its MariaDB statement works on
the local MariaDB. The upgrade statements are run by test_journal_migration."""

from __future__ import annotations

import ast
import dataclasses
import re
import shutil
import socket
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase

import saga_sqlalchemy
from saga_core import (
    Response,
    Saga,
    SagaContext,
    SagaStatus,
    SagaStepHandler,
    SagaUsageError,
    open_storage,
)
from saga_sqlalchemy import SqlAlchemySagaStorage, define_tables

from ._readme import code_blocks, readme_text, sql_statements
from ._support import driver_url, postgres_schema, unique_name

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class OrderContext(SagaContext):
    """The context of saga-core's quickstart, which the README's first block refers to."""

    order_id: str
    reservation_id: str | None = None


class ReserveInventory(SagaStepHandler[OrderContext, Response]):
    async def act(self, context: OrderContext) -> None:
        context.reservation_id = f"r-{context.order_id}"


class OrderSaga(Saga[OrderContext]):
    steps = [ReserveInventory]


def _python_block(containing: str) -> str:
    found = [block for block in code_blocks("python") if containing in block]
    assert len(found) == 1, f"{len(found)} Python blocks of the README contain {containing!r}"
    return found[0]


async def _run(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run a README block as a module would, ``await`` at its top level allowed."""
    code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if result is not None:  # a coroutine: the block awaits
        await result
    return namespace


def _replace(source: str, old: str, new: str) -> str:
    assert old in source, f"the README block no longer holds {old!r}"
    return source.replace(old, new)


def test_the_documented_options_are_the_accepted_ones(tmp_path: Path) -> None:
    sentence = readme_text().split("Options of `open_storage` (keyword arguments):")[1]
    documented = set(re.findall(r"`(\w+)`", sentence.split("An unknown option")[0]))
    with pytest.raises(SagaUsageError) as info:
        open_storage(f"sqlite:///{tmp_path}/x.db", no_such_option=1)
    accepted = set(str(info.value).split("accepted: ")[1].split(", "))
    assert documented == accepted


async def test_the_open_storage_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = _python_block("open_storage(")
    namespace = await _run(source, {"OrderContext": OrderContext, "OrderSaga": OrderSaga})
    assert namespace["outcome"].status is SagaStatus.COMPLETED
    assert (tmp_path / "sagas.db").exists()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    with postgres_schema(postgres_url) as schema:
        yield schema


async def test_the_engine_example_runs(
    postgres_url: str, pg_schema: str, anyio_backend: str
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("the example's engine is asyncpg's, which runs on asyncio only")
    source = _python_block("create_async_engine(")
    # The example's server is a deployment's; the test's is this machine's, in a schema of
    # its own.
    source = _replace(
        source, "postgresql+asyncpg://app@db/app", driver_url(postgres_url, "asyncpg")
    )
    source = _replace(
        source,
        "SqlAlchemySagaStorage(engine)",
        f"SqlAlchemySagaStorage(engine, schema={pg_schema!r})",
    )
    namespace = await _run(source, {})
    storage = namespace["storage"]
    try:
        await storage.check_schema()
    finally:
        await storage.aclose()
        await namespace["engine"].dispose()


async def test_the_alembic_example_names_the_saga_metadata() -> None:
    class AppBase(DeclarativeBase):
        pass

    myapp = types.SimpleNamespace(Base=AppBase)
    namespace = await _run(_python_block("target_metadata"), {"myapp": myapp})
    assert namespace["target_metadata"] == [AppBase.metadata, saga_sqlalchemy.metadata]
    assert saga_sqlalchemy.Base.metadata is saga_sqlalchemy.metadata  # "or Base.metadata"
    assert sorted(saga_sqlalchemy.metadata.tables) == ["saga", "saga_signals"]


async def test_the_custom_names_example_builds_the_storage_s_table(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/names.db")
    try:
        namespace = await _run(_python_block("define_tables("), {"engine": engine})
    finally:
        engine.dispose()
    storage: SqlAlchemySagaStorage = namespace["storage"]
    tables = namespace["saga_metadata"].tables
    assert sorted(tables) == ["sagas.orders_saga", "sagas.orders_saga_signals"]
    for table, own in (
        (tables["sagas.orders_saga"], storage.table),
        (tables["sagas.orders_saga_signals"], storage.signals_table),
    ):
        assert table.fullname == own.fullname
        assert [(c.name, repr(c.type)) for c in table.columns] == [
            (c.name, repr(c.type)) for c in own.columns
        ]
        assert sorted(str(i.name) for i in table.indexes) == sorted(
            str(i.name) for i in own.indexes
        )


def _mariadb_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 3306), timeout=1.0):
            return True
    except OSError:
        return False


def _mysql(*statements: str) -> str:
    done = subprocess.run(
        ["mysql", "-h127.0.0.1", "-P3306", "-uroot", "--batch", "--skip-column-names", "test"],
        input=";\n".join(statements) + ";\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr)
    return done.stdout


def test_the_mariadb_statement_widens_the_text_columns() -> None:
    """On the local MariaDB (through its command-line client: the tests have no MySQL
    driver), the table as ``create_schema`` would make it refuses a context over 64 KB until
    the README's statement has run."""
    if shutil.which("mysql") is None or not _mariadb_reachable():
        pytest.skip("no MariaDB at 127.0.0.1:3306, or no mysql client to reach it")
    table = unique_name("saga_readme")
    tables = define_tables(sa.MetaData(), table=table)
    saga = tables.saga
    dialect = mysql.dialect()
    create = [str(sa.schema.CreateTable(saga).compile(dialect=dialect))]
    create += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)) for index in saga.indexes]
    create += [str(sa.schema.CreateTable(tables.signals).compile(dialect=dialect))]
    (widen,) = sql_statements("MariaDB")
    big = "x" * 70_000
    insert = (
        f"INSERT INTO {table} (saga_id, saga_name, status, version, `cursor`, applied, context, "
        f"created_at, updated_at) VALUES ('{'0' * 32}', 'n', 'running', 1, 0, '[]', "
        f"'\"{big}\"', 0, 0)"
    )
    try:
        _mysql(*create)
        with pytest.raises(AssertionError, match="Data too long"):
            _mysql(insert)
        _mysql(widen.replace("TABLE saga ", f"TABLE {table} "))
        _mysql(insert)
        assert _mysql(f"SELECT length(context), journal = '' FROM {table}").split() == [
            str(len(big) + 2),
            "1",  # the journal column kept its default
        ]
    finally:
        _mysql(f"DROP TABLE IF EXISTS {tables.signals.name}", f"DROP TABLE IF EXISTS {table}")
