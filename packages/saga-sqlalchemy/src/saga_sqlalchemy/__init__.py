"""saga-sqlalchemy: durable SQL storage for saga-core.

SQLite through the standard library's ``sqlite3`` is the embedded default
(``open_storage("sqlite:///sagas.db")``); PostgreSQL through asyncpg or psycopg scales out,
with group commit and ``FOR UPDATE SKIP LOCKED`` recovery claims::

    from saga_sqlalchemy import SqlAlchemySagaStorage

    storage = SqlAlchemySagaStorage(engine)      # AsyncEngine, Engine, sessionmaker, AsyncSession
    await storage.create_schema()                # or include `metadata` in an Alembic migration

The public names are re-exported here from private modules; nothing else is public.
"""

from ._postgres_storage import PostgresSagaStorage as PostgresSagaStorage
from ._schema import DEFAULT_TABLE as DEFAULT_TABLE
from ._schema import Base as Base
from ._schema import define_tables as define_tables
from ._schema import metadata as metadata
from ._storage import SqlAlchemySagaStorage as SqlAlchemySagaStorage
from ._urls import open_sqlalchemy_storage as open_sqlalchemy_storage

__all__ = (
    "DEFAULT_TABLE",
    "Base",
    "PostgresSagaStorage",
    "SqlAlchemySagaStorage",
    "define_tables",
    "metadata",
    "open_sqlalchemy_storage",
)
