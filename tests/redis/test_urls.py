"""Redis URLs: every scheme parsed, every bad part named, credentials never in a message."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from saga_core import SagaUsageError, open_storage
from saga_core._storage.plugins import STORAGES_GROUP
from saga_redis import RedisSagaStorage, open_redis_storage
from saga_redis._options import resolve_url
from saga_redis._url import SCHEMES, RedisTarget, parse_redis_url


def single(host: str, port: int = 6379, db: int = 0, *, tls: bool = False) -> RedisTarget:
    return RedisTarget("single", ((host, port),), None, db, None, None, tls, None)


def with_credentials(target: RedisTarget, username: str | None, password: str) -> RedisTarget:
    return target._replace(username=username, password=password)


# --- what parses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://127.0.0.1:6379/14", single("127.0.0.1", db=14)),
        ("redis://localhost", single("localhost")),
        ("redis://", single("localhost")),
        ("redis://:6380", single("localhost", 6380)),
        ("REDIS://H:1/", single("h", 1)),
        ("redis://h?db=3", single("h", db=3)),
        ("redis://h/2?db=3", single("h", db=3)),  # the query wins over the path
        ("redis://:s%40cret@h/2", with_credentials(single("h", db=2), None, "s@cret")),
        ("redis://app:pw@h:7000/1", with_credentials(single("h", 7000, 1), "app", "pw")),
        ("redis://app:p@ss@h", with_credentials(single("h"), "app", "p@ss")),
        ("rediss://[::1]:6380/5", single("::1", 6380, 5, tls=True)),
        ("redis://[::1]/3", single("::1", db=3)),
        ("redis://h:/2", single("h", db=2)),
        ("redis://h:65535/2147483647", single("h", 65535, 2**31 - 1)),
        ("redis://:p%C3%A4ss@h", with_credentials(single("h"), None, "päss")),
        ("redis://bücher.example", single("bücher.example")),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002",
            RedisTarget(
                "cluster",
                (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)),
                None,
                0,
                None,
                None,
                False,
                None,
            ),
        ),
        (
            "rediss+cluster://app:pw@n1:7000/0?db=0",
            RedisTarget("cluster", (("n1", 7000),), None, 0, "app", "pw", True, None),
        ),
        (
            "redis+sentinel://s1,s2:26380/mymaster",
            RedisTarget(
                "sentinel",
                (("s1", 26379), ("s2", 26380)),
                None,
                0,
                None,
                None,
                False,
                "mymaster",
            ),
        ),
        (
            "rediss+sentinel://:pw@[::1]/shop%2Forders/4/",
            RedisTarget("sentinel", (("::1", 26379),), None, 4, None, "pw", True, "shop/orders"),
        ),
        (
            "redis+sentinel://s1/mymaster/4?db=5",
            RedisTarget("sentinel", (("s1", 26379),), None, 5, None, None, False, "mymaster"),
        ),
    ],
)
def test_urls_of_every_scheme_are_parsed(url: str, target: RedisTarget) -> None:
    assert parse_redis_url(url) == (target, {})


def test_a_unix_url_names_an_existing_socket_path(tmp_path: Path) -> None:
    socket = tmp_path / "redis dir" / "redis.sock"
    socket.parent.mkdir()
    socket.touch()
    escaped = str(socket).replace(" ", "%20")
    assert parse_redis_url(f"unix://{escaped}") == (
        RedisTarget("unix", (), str(socket), 0, None, None, False, None),
        {},
    )
    target, query = parse_redis_url(f"unix://app:pw@{escaped}?db=3&key_prefix=x:")
    assert target == RedisTarget("unix", (), str(socket), 3, "app", "pw", False, None)
    assert query == {"key_prefix": "x:"}


def test_query_parameters_come_back_decoded_without_db() -> None:
    _, query = parse_redis_url("redis://h/1?key_prefix=a%3Ab:&db=2&ssl_ca_certs=/c+a.pem&flag")
    assert query == {"key_prefix": "a:b:", "ssl_ca_certs": "/c+a.pem", "flag": ""}


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("redis://user:pw@h:7000/1?key_prefix=x:", "redis://h:7000/1"),
        ("rediss://:pw@[::1]", "rediss://[::1]:6379/0"),
        ("redis+cluster://u:pw@n1:7000,[::1]:7001", "redis+cluster://n1:7000,[::1]:7001"),
        ("rediss+cluster://:pw@n1", "rediss+cluster://n1:6379"),
        (
            "redis+sentinel://u:pw@s1,s2:1/my%20primary/3",
            "redis+sentinel://s1:26379,s2:1/my%20primary/3",
        ),
        ("rediss+sentinel://:pw@s1/m", "rediss+sentinel://s1:26379/m/0"),
    ],
)
def test_a_target_describes_itself_without_credentials(url: str, described: str) -> None:
    target, _ = parse_redis_url(url)
    assert target.describe() == described


def test_a_unix_target_describes_its_path_and_database(tmp_path: Path) -> None:
    (tmp_path / "r.sock").touch()
    target, _ = parse_redis_url(f"unix://:pw@{tmp_path}/r.sock?db=2")
    assert target.describe() == f"unix://{tmp_path}/r.sock?db=2"


# --- what is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h/0", "a Redis storage URL starts with redis://, rediss://, unix://"),
        ("redis+cluster://", "URL names no nodes"),
        ("rediss+cluster:///0", "URL names no nodes"),
        ("redis+cluster://n1,,n2", "has an empty entry"),
        ("redis+cluster://n1,", "has an empty entry"),
        ("redis+cluster://:7000", "a node without its host, got ':7000'"),
        ("redis+cluster://n1/3", "a Redis Cluster has only database 0"),
        ("redis+cluster://n1?db=1", "a Redis Cluster has only database 0"),
        ("redis+cluster://n1:7000,n2:x", "port must be a number from 1 to 65535"),
        ("redis+sentinel://s1:26379", "names the primary the sentinels monitor"),
        ("redis+sentinel://s1:26379/", "names the primary the sentinels monitor"),
        ("redis+sentinel:///mymaster", "URL names no sentinels"),
        ("redis+sentinel://s1/mymaster/1/2", "is /service_name or /service_name/db"),
        ("redis+sentinel://s1/mymaster/x", "database must be a number"),
        ("redis+sentinel://s1/%FF", "service name is not UTF-8"),
        (
            "unix:///no/such/dir/redis.sock",
            "socket path of the Redis URL, '/no/such/dir/redis.sock', does not exist",
        ),
        ("unix://localhost/tmp/redis.sock", "a unix:// URL names no host"),
        ("unix:relative.sock", "names the socket's absolute path"),
        ("unix:///tmp/%FF.sock", "socket path is not UTF-8"),
        ("unix:///tmp?db=x", "database must be a number"),
        ("redis://h1,h2/0", "names one server; for several, use redis+cluster://"),
        ("redis://h/0#frag", "may not carry a #fragment"),
        ("redis://h/0?ssl_ca_certs=/ca@x.pem", "'@' in a path or query as %40"),
        ("redis://h/0?key_prefix=a&key_prefix=b", "'key_prefix' query parameter more than once"),
        ("redis://h/0?key_prefix=%FF", "query is not UTF-8"),
        ("redis://h/0?%FF=1", "query is not UTF-8"),
        # int() and str.isdigit() take other scripts' digits: Arabic-Indic, superscripts ...
        ("redis://127.0.0.1:6379/\u0661", "database must be a number from 0 to 2147483647"),
        ("redis://127.0.0.1:6379/\u00b2", "written in the digits 0-9"),
        ("redis://h/0?db=\u0663", "got '\u0663'"),
        ("redis://h/0?db=%C2%B2", "got '\u00b2'"),
        ("redis://h/2147483648", "database must be a number from 0 to 2147483647"),
        ("redis://h/" + "9" * 5000, "database must be a number"),  # int() refuses 4,300+ digits
        ("redis://h/-1", "database must be a number"),
        ("redis://h/+1", "database must be a number"),
        ("redis://h/ 1", "database must be a number"),
        ("redis://h/1_0", "database must be a number"),
        ("redis://h/0?db=", "got ''"),
        ("redis://h/0?db=1&db=2", "'db' query parameter more than once"),
        ("redis://h:\u0666\u0663\u0667\u0669/0", "port must be a number from 1 to 65535"),
        ("redis://h:6\u00b379/0", "written in the digits 0-9, got '6\u00b379'"),
        ("redis://h:0/0", "port must be a number from 1 to 65535"),
        ("redis://h:65536/0", "port must be a number from 1 to 65535"),
        ("redis://h:+1/0", "port must be a number"),
        ("redis://h:1:2/0", "port must be a number"),
        ("redis://[::1]x/0", "port must be a number"),
        ("redis://[::1/0", "malformed"),
        ("redis+cluster://[::1]:7000,[nope]:7001", "malformed"),
        ("redis://h\udcff/0", "host is not a valid host name"),
        ("redis://" + "a" * 64 + "\u00e9.example/0", "host is not a valid host name"),
        ("redis://:%FF@h/0", "password is not UTF-8"),
        ("redis://:p\udcff@h/0", "password is not UTF-8"),
        ("redis://u%FF:p@h/0", "user name is not UTF-8"),
    ],
)
def test_each_bad_part_of_a_redis_url_is_named(url: str, message: str) -> None:
    with pytest.raises(SagaUsageError, match=re.escape(message)):
        parse_redis_url(url)


def test_opening_a_storage_on_a_bad_url_is_a_usage_error() -> None:
    with pytest.raises(SagaUsageError, match="written in the digits 0-9"):
        RedisSagaStorage.from_url("redis://127.0.0.1:6379/\u00b2")
    with pytest.raises(SagaUsageError, match="written in the digits 0-9"):
        open_redis_storage("redis://127.0.0.1:6379/\u0661")


def test_a_url_that_is_not_text_is_refused() -> None:
    with pytest.raises(SagaUsageError, match="a Redis URL is a str, got bytes"):
        parse_redis_url(b"redis://h/0")  # type: ignore[arg-type]


# Each URL holds the credential "secret" (or its tail), in a place where a careless message
# would quote it: a password with an unescaped '/', '?' or '#' spills into the parts after the
# host, and a URL with credentials has every part of it kept out of messages.
SECRET_URLS = [
    "http://secret@h/0",
    "secret:word@h/0",
    "redis://u:se/cret@h/0",
    "redis://u:se?cret@h/0",
    "redis://u:se#cret@h/0",
    "redis://:123?secret=x@h",
    "redis://u:a@b/c@secret/0",
    "redis://:s@h/secret",
    "redis://:secret@h:notaport/0",
    "redis://:secret@h/zero",
    "redis://:secret@h/0#frag",
    "redis://:s@h:secret/0",
    "redis://:s@h/0?db=secret",
    "redis://:s@h/0?secret=1",
    "redis://:s@h/0?secret=1&secret=2",
    "redis://:s@h/0?shards=secret",
    "redis://:s@h/0?key_prefix=secret%7B",
    "redis://:s@h/0?max_connections=0secret",
    "redis://:s@h/0?ssl_ca_certs=/secret",
    "redis://:s@h1,secret/0",
    "redis+cluster://:s@h1,:secret",
    "redis+cluster://:s@h1:secret",
    "redis+cluster://:s@h1/secret",
    "redis+cluster://u:se/cret@h1:7000",
    "redis+sentinel://:s@h1/m/secret",
    "redis+sentinel://:s@h1/m/0/secret",
    "redis+sentinel://u:se/cret@h1/m",
    "rediss+sentinel://u:a@b/c@secret/m",
    "unix://:s@/no/such/secret.sock",
    "unix://:se/cret@/tmp/redis.sock",
    "unix://u:a@b/secret@/tmp/redis.sock",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_no_message_quotes_a_part_of_a_url_with_credentials(url: str) -> None:
    with pytest.raises(SagaUsageError) as caught:
        resolve_url(url, {})
    assert "secret" not in str(caught.value)
    assert "cret" not in str(caught.value)
    assert caught.value.__cause__ is None or "secret" not in str(caught.value.__cause__)


@pytest.mark.parametrize("url", SECRET_URLS[:8])
def test_opening_a_storage_on_such_a_url_does_not_quote_it_either(url: str) -> None:
    with pytest.raises(SagaUsageError) as caught:
        open_storage(url) if url.startswith("redis") else open_redis_storage(url)
    assert "cret" not in str(caught.value)


# --- the entry points ------------------------------------------------------------------------


def test_every_scheme_is_registered_as_an_entry_point() -> None:
    # The package's own entry points, as installed from its pyproject.toml.
    declared = metadata.distribution("saga-redis").entry_points.select(group=STORAGES_GROUP)
    assert sorted(declared.names) == sorted(SCHEMES)
    for entry_point in declared:
        assert entry_point.load() is open_redis_storage


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "unix"])
def test_open_storage_hands_every_scheme_to_the_redis_factory(scheme: str) -> None:
    # A URL the Redis factory alone refuses this way: proof that open_storage found it.
    with pytest.raises(SagaUsageError, match="port must be a number from 1 to 65535"):
        open_storage(f"{scheme}://h:0/m")


def test_open_storage_hands_unix_urls_to_the_redis_factory() -> None:
    with pytest.raises(
        SagaUsageError, match=re.escape("socket path of the Redis URL, '/no/such.sock', does not")
    ):
        open_storage("unix:///no/such.sock")
