"""The code blocks of saga-sqlalchemy's README, as the tests run them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import sqlalchemy as sa

README = Path(__file__).resolve().parents[2] / "packages" / "saga-sqlalchemy" / "README.md"

# A fenced block, possibly indented (inside a list item): its language and its text.
_BLOCK = re.compile(r"^( *)```(\w+)\n(.*?)^\1```$", re.DOTALL | re.MULTILINE)


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    """The README's blocks in ``language``, in order, dedented."""
    return [
        textwrap.dedent(match.group(3))
        for match in _BLOCK.finditer(readme_text())
        if match.group(2) == language
    ]


def sql_block(title: str) -> str:
    """The SQL block whose first line is the comment ``-- <title>...``."""
    found = [block for block in code_blocks("sql") if block.startswith(f"-- {title}")]
    assert len(found) == 1, f"the README has {len(found)} SQL blocks titled {title!r}"
    return found[0]


def sql_statements(title: str) -> list[str]:
    """The statements of :func:`sql_block` ``title``, without comments."""
    lines = [line for line in sql_block(title).splitlines() if not line.startswith("--")]
    statements = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [statement.strip() for statement in statements if statement.strip()]


def apply_upgrade(url: str, schema: str | None) -> None:
    """Upgrade the ``saga`` table of the database at ``url`` (in ``schema`` on PostgreSQL)
    with the README's four steps, as a reader follows them: on SQLite the columns the table
    lacks only, the journal step only where there is a ``saga_journal`` table."""
    dialect = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    options = {"options": f"-csearch_path={schema}"} if schema is not None else {}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=options)
    try:
        with engine.begin() as connection:
            inspector = sa.inspect(connection)
            columns = {column["name"] for column in inspector.get_columns("saga")}
            journal_table = inspector.has_table("saga_journal")
            for statement in sql_statements(f"{dialect} 1/4"):
                column = statement.split(" ADD COLUMN ")[1].replace("IF NOT EXISTS ", "")
                if dialect == "PostgreSQL" or column.split()[0] not in columns:
                    connection.exec_driver_sql(statement)
            if journal_table:
                for statement in sql_statements(f"{dialect} 2/4"):
                    connection.exec_driver_sql(statement)
            for step in (3, 4):
                for statement in sql_statements(f"{dialect} {step}/4"):
                    connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
