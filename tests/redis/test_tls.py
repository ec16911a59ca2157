"""``rediss://``: the storage's own connections speak TLS, on asyncio and trio.

A TLS-terminating proxy with a throwaway self-signed certificate (made with the ``openssl``
command) stands in front of the test Redis, which itself speaks plain TCP.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSListener

from saga_core import SagaStatus, SagaUsageError, StorageUnavailableError
from saga_core.testing import make_checkpoint, make_new_saga
from saga_redis import RedisSagaStorage

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_port(certificate: tuple[Path, Path], redis_url: str) -> AsyncIterator[int]:
    """A loopback port that speaks TLS and forwards to the test Redis."""
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    target = urlsplit(redis_url)
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(tcp.extra(anyio.abc.SocketAttribute.local_port))

    async def forward(client: anyio.abc.ByteStream) -> None:
        async with (
            client,
            await anyio.connect_tcp(target.hostname or "127.0.0.1", target.port or 6379) as up,
            anyio.create_task_group() as pumps,
        ):

            async def pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
                try:
                    async for chunk in source:
                        await sink.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                pumps.cancel_scope.cancel()

            pumps.start_soon(pump, client, up)
            pumps.start_soon(pump, up, client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(TLSListener(tcp, server, standard_compatible=False).serve, forward)
        yield port
        tg.cancel_scope.cancel()


def _client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(certificate[0])
    return context


async def test_a_rediss_url_runs_sagas_over_tls(
    tls_port: int, certificate: tuple[Path, Path], redis_url: str, redis_key_prefix: str
) -> None:
    database = redis_url.rsplit("/", 1)[1]
    async with RedisSagaStorage.from_url(
        f"rediss://127.0.0.1:{tls_port}/{database}",
        key_prefix=redis_key_prefix,
        ssl_context=_client_context(certificate),
    ) as storage:
        new = make_new_saga()
        await storage.create(new)
        await storage.checkpoint(make_checkpoint(new.saga_id, 1, status=SagaStatus.COMPLETED))
        assert (await storage.load(new.saga_id)).status is SagaStatus.COMPLETED


async def test_an_untrusted_certificate_is_refused_as_unavailable(
    tls_port: int, redis_url: str, redis_key_prefix: str
) -> None:
    database = redis_url.rsplit("/", 1)[1]
    async with RedisSagaStorage.from_url(
        f"rediss://127.0.0.1:{tls_port}/{database}", key_prefix=redis_key_prefix
    ) as storage:
        with pytest.raises(StorageUnavailableError) as caught:
            await storage.load(make_new_saga().saga_id)
        assert any(isinstance(error, ssl.SSLError) for error in _chain(caught.value))


async def test_a_ca_bundle_named_in_the_url_makes_the_server_trusted(
    tls_port: int, certificate: tuple[Path, Path], redis_url: str, redis_key_prefix: str
) -> None:
    database = redis_url.rsplit("/", 1)[1]
    bundle = quote(str(certificate[0]), safe="")
    async with RedisSagaStorage.from_url(
        f"rediss://127.0.0.1:{tls_port}/{database}?ssl_ca_certs={bundle}",
        key_prefix=redis_key_prefix,
    ) as storage:
        new = make_new_saga()
        await storage.create(new)
        assert (await storage.load(new.saga_id)).version == 1


def test_a_ca_bundle_without_a_certificate_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "empty.pem"
    bundle.write_text("")
    with pytest.raises(SagaUsageError, match="ssl_ca_certs"):
        RedisSagaStorage.from_url("rediss://127.0.0.1:6380/0", ssl_ca_certs=str(bundle))


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from or while handling."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
