"""python-cqrs's SQLAlchemy example, ported to PostgreSQL and SQLite, runs as a program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from ._support import driver_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sqlite_example_runs(tmp_path: Path) -> None:
    out = _run("sqlalchemy_sqlite.py", {"SAGA_EXAMPLE_SQLITE": str(tmp_path / "sagas.db")})
    assert "Step: ReserveInventoryStep" in out
    assert "Step: ProcessPaymentStep" in out
    assert "completed, version 3" in out


def test_postgres_example_runs(postgres_url: str) -> None:
    engine = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.NullPool)
    existed = "saga" in sa.inspect(engine).get_table_names()
    try:
        out = _run("sqlalchemy_postgres.py", {"SAGA_EXAMPLE_POSTGRES": postgres_url})
    finally:
        # The example creates the default tables in the default schema: drop them if it did.
        if not existed:
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP TABLE IF EXISTS saga_signals")
                connection.exec_driver_sql("DROP TABLE IF EXISTS saga")
        engine.dispose()
    assert "Step: ProcessPaymentStep" in out
    assert "completed, version 3" in out
