"""The Redis storage's options: one table, read from a URL's query or keyword arguments."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from saga_core import SagaUsageError, open_storage
from saga_redis import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_JOURNAL_ENTRIES,
    DEFAULT_RETAIN_FINISHED_SECONDS,
    RedisSagaStorage,
)
from saga_redis._clients import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAILOVER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
)
from saga_redis._options import OPTIONS, RedisOptions, resolve_options, resolve_url

README = Path(__file__).parents[2] / "packages" / "saga-redis" / "README.md"
URL = "redis://127.0.0.1:6379/14"


def test_options_left_out_take_the_storage_defaults() -> None:
    assert resolve_options({}, {}) == RedisOptions(
        key_prefix=DEFAULT_KEY_PREFIX,
        shards=None,
        retain_finished_seconds=DEFAULT_RETAIN_FINISHED_SECONDS,
        max_journal_entries=DEFAULT_MAX_JOURNAL_ENTRIES,
        max_connections=DEFAULT_MAX_CONNECTIONS,
        connect_timeout=DEFAULT_CONNECT_TIMEOUT,
        command_timeout=DEFAULT_COMMAND_TIMEOUT,
        failover_timeout=DEFAULT_FAILOVER_TIMEOUT,
        ssl_context=None,
        ssl_ca_certs=None,
        ssl_check_hostname=True,
    )


def test_the_table_and_the_resolved_tuple_name_the_same_options() -> None:
    assert list(OPTIONS) == list(RedisOptions._fields)


def test_the_readme_table_lists_every_option() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## URLs and options\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    assert rows == list(OPTIONS)


# Each option as query text, as a typed keyword, and the value both stand for.
SPELLINGS: list[tuple[str, str, Any, Any]] = [
    ("key_prefix", "shop:sagas:", "shop:sagas:", "shop:sagas:"),
    ("shards", "16", 16, 16),
    ("shards", "none", None, None),
    ("retain_finished_seconds", "3600", 3600, 3600.0),
    ("retain_finished_seconds", "0.5", 0.5, 0.5),
    ("retain_finished_seconds", "None", None, None),
    ("max_journal_entries", "50", 50, 50),
    ("max_journal_entries", "none", None, None),
    ("max_connections", "7", 7, 7),
    ("connect_timeout", ".25", 0.25, 0.25),
    ("connect_timeout", "none", None, None),
    ("command_timeout", "2.", 2, 2.0),
    ("failover_timeout", "7.5", 7.5, 7.5),
    ("ssl_check_hostname", "false", False, False),
    ("ssl_check_hostname", "TRUE", True, True),
]


@pytest.mark.parametrize(("name", "text", "typed", "value"), SPELLINGS)
def test_an_option_reads_the_same_from_the_query_a_keyword_and_keyword_text(
    name: str, text: str, typed: Any, value: Any
) -> None:
    for query, kwargs in [({name: text}, {}), ({}, {name: typed}), ({}, {name: text})]:
        resolved = getattr(resolve_options(query, kwargs), name)
        assert resolved == value
        assert type(resolved) is type(value)


def test_the_same_value_in_the_url_and_as_a_keyword_is_accepted() -> None:
    query = {"shards": "16", "retain_finished_seconds": "60", "key_prefix": "a:"}
    kwargs = {"shards": 16, "retain_finished_seconds": 60.0, "key_prefix": "a:"}
    options = resolve_options(query, kwargs)
    assert (options.shards, options.retain_finished_seconds, options.key_prefix) == (16, 60, "a:")


def test_options_that_contradict_the_url_are_refused() -> None:
    with pytest.raises(
        SagaUsageError,
        match=re.escape("options that contradict the URL: key_prefix, shards given in the"),
    ):
        resolve_options({"shards": "16", "key_prefix": "a:"}, {"shards": 4, "key_prefix": "b:"})


def test_a_ca_bundle_and_an_ssl_context_go_with_a_tls_url(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read before the first connection")
    _, options = resolve_url(f"rediss://h/0?ssl_ca_certs={bundle}&ssl_check_hostname=false", {})
    assert (options.ssl_ca_certs, options.ssl_check_hostname) == (str(bundle), False)
    context = ssl.create_default_context()
    for url in ("rediss://h/0", "rediss+cluster://h:7000", "rediss+sentinel://s/m"):
        assert resolve_url(url, {"ssl_context": context})[1].ssl_context is context


# --- what is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "kwargs", "message"),
    [
        ({}, {"db": 3}, "unknown Redis storage option(s) db; accepted: key_prefix, shards,"),
        ({}, {"prefix": "a"}, "unknown Redis storage option(s) prefix; accepted: key_prefix"),
        ({"timeout": "1"}, {}, "the Redis URL's query has unknown options, parameters not shown"),
        ({"ssl_context": "x"}, {}, "ssl_context cannot be given in the URL"),
        ({"shards": "0x10"}, {}, "the Redis URL's shards option must be a whole number"),
        ({"shards": "\u0661"}, {}, "the Redis URL's shards option must be a whole number"),
        ({"shards": "0"}, {}, "the Redis URL's shards option is invalid: it must be a whole"),
        ({"shards": "16385"}, {}, "the Redis URL's shards option is invalid"),
        ({"retain_finished_seconds": "inf"}, {}, "retain_finished_seconds option must be a"),
        ({"retain_finished_seconds": "-1"}, {}, "retain_finished_seconds option must be a"),
        ({"retain_finished_seconds": "1e3"}, {}, "retain_finished_seconds option must be a"),
        ({"retain_finished_seconds": "0"}, {}, "retain_finished_seconds option is invalid"),
        ({"max_journal_entries": "0"}, {}, "max_journal_entries option is invalid"),
        ({"max_connections": "none"}, {}, "max_connections option must be a whole number"),
        ({"max_connections": "0"}, {}, "max_connections option is invalid"),
        ({"connect_timeout": "0"}, {}, "connect_timeout option is invalid"),
        ({"command_timeout": "nan"}, {}, "command_timeout option must be a number of seconds"),
        ({"ssl_check_hostname": "yes"}, {}, "ssl_check_hostname option must be true or false"),
        ({"ssl_ca_certs": "/no/such/ca.pem"}, {}, "ssl_ca_certs option is invalid"),
        ({"key_prefix": "a{b}:"}, {}, "key_prefix option is invalid: it must be 1 to 100"),
        ({"key_prefix": ""}, {}, "key_prefix option is invalid"),
        ({}, {"key_prefix": "a{b}:"}, "invalid Redis key prefix 'a{b}:'"),
        ({}, {"key_prefix": None}, "key_prefix must be 1 to 100 characters"),
        ({}, {"shards": True}, "shards must be a whole number from 1 to 16384, or none"),
        ({}, {"shards": 2.0}, "shards must be a whole number"),
        ({}, {"shards": "two"}, "shards must be a whole number from 1 to 16384, or none"),
        ({}, {"shards": 0}, "shards must be an int from 1 to 16384"),
        ({}, {"retain_finished_seconds": float("inf")}, "retain_finished_seconds must be None"),
        ({}, {"max_journal_entries": 0}, "max_journal_entries must be None"),
        ({}, {"max_connections": None}, "max_connections must be a whole number >= 1, got None"),
        ({}, {"max_connections": 0}, "max_connections must be an int >= 1, got 0"),
        ({}, {"connect_timeout": -1}, "connect_timeout must be None or seconds > 0, got -1"),
        ({}, {"command_timeout": float("nan")}, "command_timeout must be None or seconds > 0"),
        ({}, {"failover_timeout": 0}, "failover_timeout must be seconds > 0, got 0.0"),
        ({}, {"failover_timeout": None}, "failover_timeout must be a number of seconds > 0"),
        ({"failover_timeout": "none"}, {}, "failover_timeout option must be a number of seconds"),
        ({}, {"ssl_check_hostname": "maybe"}, "ssl_check_hostname must be true or false"),
        ({}, {"ssl_check_hostname": None}, "ssl_check_hostname must be true or false"),
        ({}, {"ssl_context": "default"}, "ssl_context must be an ssl.SSLContext, or None"),
        ({}, {"ssl_ca_certs": 3}, "ssl_ca_certs must be the path of a file"),
        ({}, {"ssl_ca_certs": "/no/such/ca.pem"}, "ssl_ca_certs names no file: '/no/such"),
        (
            {"ssl_ca_certs": str(README)},
            {"ssl_context": ssl.create_default_context()},
            "ssl_context is given with ssl_ca_certs or ssl_check_hostname",
        ),
        (
            {},
            {"ssl_check_hostname": True, "ssl_context": ssl.create_default_context()},
            "ssl_context is given with ssl_ca_certs or ssl_check_hostname",
        ),
    ],
)
def test_each_bad_option_is_named(
    query: dict[str, str], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SagaUsageError, match=re.escape(message)) as caught:
        resolve_options(query, kwargs)
    for value in query.values():  # a query value is never quoted unless allowed
        assert len(value) < 2 or repr(value) not in str(caught.value)


def test_a_query_value_is_quoted_when_the_url_holds_no_credentials() -> None:
    with pytest.raises(SagaUsageError, match=re.escape("shards option must be a whole number")):
        resolve_url("redis://h/0?shards=sixteen", {})
    with pytest.raises(SagaUsageError, match=re.escape("got 'sixteen'")):
        resolve_url("redis://h/0?shards=sixteen", {})
    with pytest.raises(SagaUsageError, match=re.escape("invalid Redis key prefix 'a{b}:'")):
        resolve_url("redis://h/0?key_prefix=a%7Bb%7D:", {})
    with pytest.raises(SagaUsageError, match=re.escape("unknown options, ['sixteen']")):
        resolve_url("redis://h/0?sixteen=1", {})
    with pytest.raises(SagaUsageError, match="unknown options, parameters not shown"):
        resolve_url("redis://:pw@h/0?sixteen=1", {})


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        (f"redis://h/0?ssl_ca_certs={README}", {}),
        ("redis://h/0?ssl_check_hostname=true", {}),
        ("redis://h/0", {"ssl_check_hostname": False}),
        ("redis://h/0", {"ssl_context": ssl.create_default_context()}),
        ("redis+cluster://h:7000", {"ssl_ca_certs": str(README)}),
        ("redis+sentinel://s/m", {"ssl_check_hostname": "false"}),
    ],
)
def test_tls_options_need_a_tls_url(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(SagaUsageError, match="given, but the URL is not TLS: use a rediss://"):
        resolve_url(url, kwargs)


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("redis://h/0?failover_timeout=5", {}),
        ("unix:///", {"failover_timeout": 5}),
    ],
)
def test_a_failover_timeout_needs_a_deployment_that_fails_over(
    url: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(
        SagaUsageError, match="failover_timeout given, but the URL names one server"
    ):
        resolve_url(url, kwargs)


@pytest.mark.parametrize("url", ["redis+cluster://h:7000", "rediss+sentinel://s/m"])
def test_a_failover_timeout_is_read_for_cluster_and_sentinel_urls(url: str) -> None:
    _, options = resolve_url(f"{url}?failover_timeout=2.5", {})
    assert options.failover_timeout == 2.5


def test_tls_options_left_at_none_are_not_tls_options() -> None:
    _, options = resolve_url("redis://h/0", {"ssl_context": None, "ssl_ca_certs": None})
    assert (options.ssl_context, options.ssl_ca_certs) == (None, None)


# --- through the entry point -----------------------------------------------------------------


def test_open_storage_reads_text_options_as_the_query_does() -> None:
    storage = open_storage(
        URL, key_prefix="opts:", shards="3", max_journal_entries="none", connect_timeout="1.5"
    )
    assert isinstance(storage, RedisSagaStorage)
    assert (storage.key_prefix, storage.shards, storage.max_journal_entries) == ("opts:", 3, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # The storage's own rule for a prefix, which braces would break (the hash tags).
        ({"key_prefix": "a{b}:"}, "braces would break the cluster hash tags"),
        ({"key_prefix": "}"}, "braces would break the cluster hash tags"),
        ({"shards": "0"}, "shards must be an int from 1 to 16384"),
        ({"ssl_check_hostname": "false"}, "the URL is not TLS"),
        ({"database": "2"}, "unknown Redis storage option(s) database"),
    ],
)
def test_open_storage_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SagaUsageError, match=re.escape(message)):
        open_storage(URL, **options)


def test_a_key_prefix_with_braces_in_the_url_is_refused() -> None:
    with pytest.raises(SagaUsageError, match="braces would break the cluster hash tags"):
        open_storage(f"{URL}?key_prefix=shop%7B1%7D:")
    with pytest.raises(SagaUsageError, match="key_prefix option is invalid") as caught:
        open_storage("redis://:pw@127.0.0.1:6379/14?key_prefix=shop%7B1%7D:")
    assert "shop" not in str(caught.value)


def test_from_url_takes_options_from_the_query() -> None:
    storage = RedisSagaStorage.from_url(f"{URL}?key_prefix=q:&shards=2")
    assert (storage.key_prefix, storage.shards) == ("q:", 2)
