"""``--option KEY=VALUE``: storage options from the command line, as text, to the storage's
factory (SQLite's table and schema, Redis's key prefix and the rest of its table)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
from tests.redis._support import purge

from saga_core import SagaStatus, bootstrap, open_storage

from ._seed import CliRunner, Seeder
from .cli_sagas import OrderContext, saga_map


async def completed_order(url: str, **options: str) -> uuid.UUID:
    """An order saga run to COMPLETED in the storage ``open_storage(url, **options)``."""
    async with open_storage(url, **options) as storage:
        mediator = bootstrap(sagas_mapper=saga_map, saga_storage=storage)
        outcome = await mediator.run(OrderContext("with-options"))
    assert outcome.status is SagaStatus.COMPLETED
    return outcome.saga_id


def listed_ids(out: str) -> list[str]:
    return [record["saga_id"] for record in json.loads(out)]


# --- SQLite -------------------------------------------------------------------------------------


def test_options_before_and_after_the_command_reach_the_sql_storage(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(partial(completed_order, table="shop_sagas", schema="main"), db_url)

    code, out, err = cli(
        "--url", db_url, "--option", "table=shop_sagas", "list", "--option", "schema=main", "--json"
    )
    assert (code, err) == (0, "")
    assert listed_ids(out) == [str(saga_id)]

    code, out, err = cli("--url", db_url, "--option", "table=shop_sagas", "show", str(saga_id))
    assert (code, err) == (0, "")
    assert str(saga_id) in out

    # Without the option, the default table: the saga is not there.
    code, out, err = cli("--url", db_url, "list", "--json")
    assert (code, err, json.loads(out)) == (0, "", [])


def test_an_option_given_twice_with_one_value_is_taken(
    cli: CliRunner, seed: Seeder, db_url: str
) -> None:
    saga_id = seed(partial(completed_order, table="shop_sagas"), db_url)
    code, out, err = cli(
        "--option", "table=shop_sagas", "--url", db_url, "list", "--option", "table=shop_sagas"
    )
    assert (code, err) == (0, "")
    assert str(saga_id) in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--option", "s3cret"], "argument --option: expected KEY=VALUE, as in key_prefix=shop:"),
        (["--option", "=s3cret"], "(the name before '=' is empty)"),
        (["list", "--option", "s3cret"], "(the argument has no '=')"),
        (["--option", "table name=s3cret"], "got the name 'table name'"),
        (["--option", "9table=s3cret"], "with KEY an option name"),
        (
            ["--option", "table=a", "list", "--option", "table=s3cret"],
            "--option table is given twice, with different values",
        ),
        (["--option", "tabel=s3cret"], "unknown SQL storage option(s) tabel; accepted:"),
    ],
)
def test_a_bad_option_is_a_usage_error_that_never_quotes_its_value(
    cli: CliRunner, db_url: str, arguments: list[str], message: str
) -> None:
    if "list" not in arguments:
        arguments = [*arguments, "list"]
    code, out, err = cli("--url", db_url, *arguments)
    assert (code, out) == (2, "")
    assert message in err
    assert "s3cret" not in err


def test_the_help_explains_the_option(cli: CliRunner) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    assert "--option KEY=VALUE" in out
    assert "passed to the storage plugin as" in out


# --- Redis --------------------------------------------------------------------------------------


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    purge(redis_url, prefix)


def test_a_redis_key_prefix_and_text_options_reach_the_redis_storage(
    cli: CliRunner, seed: Seeder, redis_url: str, key_prefix: str
) -> None:
    saga_id = seed(partial(completed_order, key_prefix=key_prefix, shards="2"), redis_url)

    code, out, err = cli(
        "--url",
        redis_url,
        "--option",
        f"key_prefix={key_prefix}",
        "list",
        "--option",
        "shards=2",
        "--option",
        "max_journal_entries=none",
        "--json",
    )
    assert (code, err) == (0, "")
    assert listed_ids(out) == [str(saga_id)]

    code, out, err = cli(
        "--url", redis_url, "--option", f"key_prefix={key_prefix}", "--option", "shards=2",
        "show", str(saga_id), "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out)["status"] == "completed"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("key_prefix=shop{1}:", "braces would break the cluster hash tags"),
        ("shards=two", "shards must be a whole number from 1 to 16384, or none"),
        ("ssl_check_hostname=false", "the URL is not TLS"),
        ("ssl_context=default", "ssl_context must be an ssl.SSLContext"),
        ("db=2", "unknown Redis storage option(s) db"),
    ],
)
def test_a_bad_redis_option_is_a_usage_error(
    cli: CliRunner, redis_url: str, option: str, message: str
) -> None:
    code, out, err = cli("--url", redis_url, "--option", option, "list")
    assert (code, out) == (2, "")
    assert message in err
