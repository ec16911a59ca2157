"""What a client's exception means for a saga: which core error each becomes."""

from __future__ import annotations

import coredis.exceptions
import pytest
import redis

from saga_core import SagaError, SagaStorageError, StorageCorruptedError, StorageUnavailableError
from saga_redis._replies import transport_error


@pytest.mark.parametrize(
    "error",
    [
        coredis.exceptions.ConnectionError("Unable to establish a connection to 127.0.0.1:1"),
        coredis.exceptions.ClusterError("no node serves slot 42"),
        coredis.exceptions.PrimaryNotFoundError("no primary for 'orders'"),
        coredis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        coredis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        coredis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing"),
        coredis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."),
        coredis.exceptions.ResponseError("LOADING Redis is loading the dataset in memory"),
        redis.ConnectionError("Connection refused"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        TimeoutError(),
    ],
    ids=repr,
)
def test_a_server_that_cannot_serve_now_is_unavailable(error: Exception) -> None:
    assert isinstance(transport_error(error, "p:"), StorageUnavailableError)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            coredis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
            StorageCorruptedError,
        ),
        (coredis.exceptions.ResponseError("ERR user_script:1: boom"), SagaStorageError),
        (RuntimeError("a client bug"), SagaStorageError),
    ],
    ids=repr,
)
def test_other_failures_are_storage_errors(error: Exception, expected: type[SagaError]) -> None:
    translated = transport_error(error, "p:")
    assert type(translated) is expected
    assert not isinstance(translated, StorageUnavailableError)
