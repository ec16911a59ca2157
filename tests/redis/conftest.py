"""Fixtures of the saga-redis tests: key prefixes of the test's own, and the Redis Cluster and
Sentinel setups.

The single server and the backends come from the root conftest (``redis_url``,
``anyio_backend``). Every test uses the root's ``redis_url`` (database 14) under a prefix nobody
else uses, so tests never see each other's keys and may run while other programs use the server.

The Redis Cluster (``redis_cluster_nodes``, ``redis_cluster_url``), the Sentinel setup
(``redis_sentinel_url``) and a server on a unix socket (``redis_unix_url``) are started on
first use by :mod:`.servers`, or reused when already running (``.ci/run`` starts them); a
setup the session started is stopped when it ends. Their ports are fixed, so a session holds
them until it ends: another one waits meanwhile. When they cannot start (no
``redis-server``, a port held by another program) the tests that need them are skipped with
the reason, or fail when ``SAGA_REQUIRE_SERVICES=1``. Such tests get the ``redis_cluster`` /
``redis_sentinel`` / ``redis_unix`` marker automatically.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
import redis

from . import servers
from ._support import purge

# The marker each setup's fixtures give the tests that use them.
_MARKERS = {
    "redis_cluster_nodes": "redis_cluster",
    "redis_cluster_url": "redis_cluster",
    "redis_sentinel_url": "redis_sentinel",
    "redis_unix_url": "redis_unix",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function):
            for fixture, marker in _MARKERS.items():
                if fixture in item.fixturenames:
                    item.add_marker(marker)


@pytest.fixture
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted after the test."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    purge(redis_url, prefix)


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it with ``SAGA_REQUIRE_SERVICES=1``."""
    if os.environ.get("SAGA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (SAGA_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_setups_ports() -> Iterator[None]:
    """The setups' ports, held for the session: another test session on this machine that
    uses them (they are fixed) waits until this one ends, rather than restarting or failing
    over the servers under its tests."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(servers.ports_held())
        except servers.ServerSetupError as exc:
            error = exc
        else:
            yield
            return
    _unavailable(f"the Redis Cluster and Sentinel setups are busy: {error}")


@contextlib.contextmanager
def _running(setup: servers.Setup) -> Iterator[None]:
    """Start ``setup`` (or reuse it) for the block, and stop it afterwards if it was started
    here. Skips, or fails with ``SAGA_REQUIRE_SERVICES=1``, when it cannot start."""
    try:
        started = servers.start(setup)
    except servers.ServerSetupError as exc:
        error = exc
    else:
        try:
            yield
        finally:
            if started:
                servers.stop(setup)
        return
    # Skipped or failed outside the `except` block, so the report shows no chained traceback.
    _unavailable(f"the {setup.describe()} cannot start: {error}")


@pytest.fixture
def own_setup(redis_setups_ports: None) -> Iterator[Callable[[servers.Setup], None]]:
    """A function that starts a setup of the test's own (on ports and under a directory no
    other setup uses); each is stopped by PID when the test ends. Skips, or fails with
    ``SAGA_REQUIRE_SERVICES=1``, when one cannot start."""
    with contextlib.ExitStack() as stack:

        def start(setup: servers.Setup) -> None:
            stack.enter_context(_running(setup))

        yield start


@pytest.fixture(scope="session")
def redis_cluster_nodes(redis_setups_ports: None) -> Iterator[list[tuple[str, int]]]:
    """The Redis Cluster's masters, ``[("127.0.0.1", 7101), ...]``, started for the session
    (see :mod:`tests.redis.servers`)."""
    with _running(servers.CLUSTER):
        yield [(servers.HOST, port) for port in servers.CLUSTER_PORTS]


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster_nodes: list[tuple[str, int]]) -> str:
    """``redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103``."""
    return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in redis_cluster_nodes)


@pytest.fixture(scope="session")
def redis_sentinel_url(redis_setups_ports: None) -> Iterator[str]:
    """``redis+sentinel://127.0.0.1:7211,127.0.0.1:7212,127.0.0.1:7213/sagaprimary``: the
    Sentinel setup, started for the session. Its primary may have moved to 7202 (a test
    failed over); ask for ``sentinel_setup`` to have it on 7201."""
    with _running(servers.SENTINEL):
        sentinels = ",".join(f"{servers.HOST}:{port}" for port in servers.SENTINEL_PORTS)
        yield f"redis+sentinel://{sentinels}/{servers.SERVICE_NAME}"


@pytest.fixture(scope="session")
def redis_unix_url(redis_setups_ports: None) -> Iterator[str]:
    """``unix://<dir>/redis.sock?db=0``: a server on a unix socket, started for the session."""
    with _running(servers.UNIX):
        yield f"unix://{servers.UNIX.socket_path()}?db=0"


@pytest.fixture
def sentinel_setup(redis_sentinel_url: str) -> servers.SentinelSetup:
    """The Sentinel setup as :func:`servers.start` leaves it: healthy, empty, its primary on
    7201 and the replica following it (restarted if a failover moved the primary)."""
    servers.reset(servers.SENTINEL)
    return servers.SENTINEL


@pytest.fixture
def cluster_key_prefix(redis_cluster_nodes: list[tuple[str, int]]) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted from every node afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    for host, port in redis_cluster_nodes:
        _unlink_under(redis.Redis(host=host, port=port), prefix)


@pytest.fixture
def sentinel_key_prefix(redis_sentinel_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted from the primary afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    primary = servers.SENTINEL.primary_port()
    _unlink_under(redis.Redis(host=servers.HOST, port=primary), prefix)


def _unlink_under(server: redis.Redis, prefix: str) -> None:
    """Delete the keys under ``prefix`` on one server, and close the client."""
    try:
        # One key at a time: a cluster node refuses a DEL naming keys of different slots.
        for key in server.scan_iter(match=f"{prefix}*", count=1000):
            server.unlink(key)
    finally:
        server.close()
