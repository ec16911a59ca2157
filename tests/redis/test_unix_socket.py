"""Sagas on a Redis reached over a unix socket (``unix://`` URLs, the ``unix`` setup of
``servers.py``): the storage contract, whole runs through ``open_storage``, and the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.to_thread
import pytest
import redis

from saga_core import SagaStatus, SagaStorage, open_storage
from saga_core._cli.main import main as cli_main
from saga_redis import RedisSagaStorage

from . import servers
from .test_cluster import Parcel, mediator_for
from .test_contract import RedisDamage

pytestmark = [pytest.mark.anyio, pytest.mark.redis_unix]


@pytest.fixture
def unix_key_prefix(redis_unix_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    with redis.Redis(unix_socket_path=str(servers.UNIX.socket_path())) as client:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.unlink(key)


class TestUnixSocketContract(RedisDamage):
    """``RedisSagaStorage.from_url("unix://...")``."""

    @pytest.fixture(autouse=True)
    def raw(self, redis_unix_url: str) -> Iterator[redis.Redis]:
        socket_path = str(servers.UNIX.socket_path())
        self._raw = client = redis.Redis(unix_socket_path=socket_path, decode_responses=True)
        self._undamaged = {}
        yield client
        client.close()

    @pytest.fixture
    async def storage(
        self, redis_unix_url: str, unix_key_prefix: str
    ) -> AsyncIterator[SagaStorage]:
        async with RedisSagaStorage.from_url(redis_unix_url, key_prefix=unix_key_prefix) as storage:
            yield storage


async def test_sagas_run_over_the_socket_through_open_storage(
    redis_unix_url: str, unix_key_prefix: str
) -> None:
    async with open_storage(f"{redis_unix_url}&key_prefix={unix_key_prefix}") as storage:
        mediator = mediator_for(storage)
        done = await mediator.run(Parcel(label="done"))
        refused = await mediator.run(Parcel(label="refused", refuse_charge=True))
        assert (done.status, refused.status) == (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
        assert isinstance(storage, RedisSagaStorage)
        key = storage.record_key(done.saga_id)

    # The records are on the server behind the socket.
    with redis.Redis(unix_socket_path=str(servers.UNIX.socket_path())) as client:
        assert client.exists(key) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the CLI picks its own backend
async def test_the_cli_lists_the_sagas_behind_the_socket(
    redis_unix_url: str, unix_key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with RedisSagaStorage.from_url(redis_unix_url, key_prefix=unix_key_prefix) as storage:
        outcome = await mediator_for(storage).run(Parcel(label="listed"))
    capsys.readouterr()

    arguments = ["--url", redis_unix_url, "--option", f"key_prefix={unix_key_prefix}"]
    code = await anyio.to_thread.run_sync(cli_main, [*arguments, "list", "--json"])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert [(saga["saga_id"], saga["status"]) for saga in json.loads(out)] == [
        (str(outcome.saga_id), "completed")
    ]
