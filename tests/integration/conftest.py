"""Fixtures of the integration tests: a storage of each kind, fresh per test and cleaned up after.

``storage_spec`` is parametrised over SQLite (a file), PostgreSQL (a schema of its own, with the
saga tables, dropped afterwards) and Redis (a key prefix of its own, deleted afterwards). The
servers come from the root conftest (``postgres_url`` / ``redis_url``: skipped, or failed under
``SAGA_REQUIRE_SERVICES=1``, when down).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from saga_sqlalchemy import define_tables

from ._kit import StorageSpec

STORAGE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]
SERVER_KINDS = STORAGE_KINDS[1:]


def _psycopg(url: str) -> str:
    return f"postgresql+psycopg://{url.split('://', 1)[1]}"


def purge_redis(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def postgres_spec(postgres_url: str) -> Iterator[StorageSpec]:
    """A PostgreSQL schema holding the saga tables; dropped with them afterwards."""
    schema = f"saga_it_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(_psycopg(postgres_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        define_tables(sa.MetaData(), schema=schema).metadata.create_all(engine)
        yield StorageSpec("postgres", postgres_url, schema)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture
def redis_spec(redis_url: str) -> Iterator[StorageSpec]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"saga-it:{uuid.uuid4().hex[:10]}:"
    try:
        yield StorageSpec("redis", redis_url, prefix)
    finally:
        purge_redis(redis_url, prefix)


@pytest.fixture(params=STORAGE_KINDS)
def storage_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSpec:
    """Each storage in turn: a SQLite file, a PostgreSQL schema, a Redis key prefix."""
    return _spec(request, tmp_path)


@pytest.fixture(params=SERVER_KINDS)
def server_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSpec:
    """The storages many machines share: a PostgreSQL schema, then a Redis key prefix."""
    return _spec(request, tmp_path)


def _spec(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSpec:
    kind = str(request.param)
    if kind == "sqlite":
        return StorageSpec("sqlite", f"sqlite:///{tmp_path / 'sagas.db'}")
    spec = request.getfixturevalue(f"{kind}_spec")
    assert isinstance(spec, StorageSpec)
    return spec
