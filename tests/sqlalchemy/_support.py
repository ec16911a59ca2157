"""Helpers shared by the SQLAlchemy storage tests: databases of their own, cleaned up after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


def unique_name(prefix: str = "saga_t") -> str:
    """A schema or table name no other test run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def driver_url(postgres_url: str, driver: str) -> str:
    """``postgres_url`` with ``driver`` (``asyncpg``, ``psycopg``) as its SQLAlchemy driver."""
    rest = postgres_url.split("://", 1)[1]
    return f"postgresql+{driver}://{rest}"


@contextmanager
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it afterwards."""
    name = unique_name()
    engine = sa.create_engine(driver_url(postgres_url, "psycopg"), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        engine.dispose()
