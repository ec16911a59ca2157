"""Fixtures every test can use: the async backends and the local PostgreSQL and Redis servers.

Every async test (``@pytest.mark.anyio``) runs once on asyncio and once on trio.

A test that needs a server takes ``postgres_url`` or ``redis_url``. The test is skipped, with the
reason, when the server does not accept a TCP connection; with ``SAGA_REQUIRE_SERVICES=1`` (set
by ``.ci/run``) it fails instead, so CI never passes by skipping. Such tests get the
``postgres`` / ``redis`` marker automatically, so ``pytest -m "not postgres"`` deselects them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from urllib.parse import urlsplit

import pytest

# Tests may only ever talk to this machine: a URL naming another host is refused outright.
LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

# A local server accepts a TCP connection at once; waiting longer only slows down the skip.
CONNECT_TIMEOUT_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Service:
    """A server some tests need, where to find it, and how to point the tests elsewhere."""

    name: str
    env_var: str
    default_url: str
    default_port: int
    fixture: str
    marker: str

    def url(self) -> str:
        """The URL the tests use: ``$env_var`` when set and not empty, else the default."""
        return os.environ.get(self.env_var) or self.default_url

    def address(self) -> tuple[str, int]:
        """The host and port of :meth:`url`.

        Raises ``pytest.UsageError`` when the URL names a host other than this machine, or is
        not a URL with a host at all.
        """
        url = self.url()
        parts = urlsplit(url)
        try:
            port = parts.port or self.default_port
        except ValueError as exc:
            raise pytest.UsageError(f"{self.env_var}={url!r}: {exc}") from exc
        host = parts.hostname
        if host is None or host not in LOCAL_HOSTS:
            raise pytest.UsageError(
                f"{self.env_var}={url!r}: tests only talk to this machine; "
                f"use one of {', '.join(sorted(LOCAL_HOSTS))} as the host"
            )
        return host, port


POSTGRES = Service(
    name="PostgreSQL",
    env_var="SAGA_TEST_POSTGRES",
    default_url="postgresql://postgres@127.0.0.1:5432/test",
    default_port=5432,
    fixture="postgres_url",
    marker="postgres",
)
REDIS = Service(
    name="Redis",
    env_var="SAGA_TEST_REDIS",
    default_url="redis://127.0.0.1:6379/14",
    default_port=6379,
    fixture="redis_url",
    marker="redis",
)
SERVICES = (POSTGRES, REDIS)


def services_required() -> bool:
    """Whether an unreachable server fails the tests that need it instead of skipping them."""
    return os.environ.get("SAGA_REQUIRE_SERVICES") == "1"


def pytest_configure(config: pytest.Config) -> None:
    # Check the service URLs before any test runs, so a remote host stops the whole run with
    # one clear message instead of failing test by test.
    for service in SERVICES:
        service.address()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Mark every test that needs a server (directly or through another fixture), so that
    # `-m "not postgres"` works without relying on each test being marked by hand.
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        for service in SERVICES:
            if service.fixture in item.fixturenames:
                item.add_marker(service.marker)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test on both backends; a missing trio is an error, never a skip."""
    return str(request.param)


def reachable_url(service: Service) -> str:
    """Return the service's URL once its server accepts a TCP connection.

    Skips the calling test when it does not, or fails it when ``SAGA_REQUIRE_SERVICES=1``.
    """
    host, port = service.address()
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            return service.url()
    except OSError as exc:
        error = exc
    # Skipped or failed outside the `except` block, so the report shows no chained traceback.
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = f"{service.name} not reachable at {where}: start it or set {service.env_var}"
    if services_required():
        pytest.fail(f"{reason} (SAGA_REQUIRE_SERVICES=1; {error})", pytrace=False)
    pytest.skip(reason)


# Session-scoped: the server is probed once; pytest remembers a skip or failure and repeats it
# for every later test that asks, without probing again.
@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test PostgreSQL database (``SAGA_TEST_POSTGRES``, default 127.0.0.1:5432)."""
    return reachable_url(POSTGRES)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis database (``SAGA_TEST_REDIS``, default 127.0.0.1:6379 db 14)."""
    return reachable_url(REDIS)
