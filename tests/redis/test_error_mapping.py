"""What a client's exception means for a saga: which core error each becomes."""

from __future__ import annotations

import coredis.exceptions
import pytest
import redis

from saga_core import (
    SagaError,
    SagaStorageError,
    SagaUsageError,
    StorageCorruptedError,
    StorageUnavailableError,
)
from saga_redis._replies import transport_error


@pytest.mark.parametrize(
    "error",
    [
        coredis.exceptions.ConnectionError("Unable to establish a connection to 127.0.0.1:1"),
        coredis.exceptions.ClusterError("no node serves slot 42"),
        coredis.exceptions.RedisClusterError("Redis Cluster cannot be connected."),
        coredis.exceptions.RedisClusterError("Not all slots are covered"),
        coredis.exceptions.ClusterRoutingError("no node for the keys"),
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
        # Keys in two slots: a bug of ours, not an outage.
        (coredis.exceptions.ClusterCrossSlotError(), SagaStorageError),
        (RuntimeError("a client bug"), SagaStorageError),
    ],
    ids=repr,
)
def test_other_failures_are_storage_errors(error: Exception, expected: type[SagaError]) -> None:
    translated = transport_error(error, "p:")
    assert type(translated) is expected
    assert not isinstance(translated, StorageUnavailableError)


def test_an_unavailable_deployment_is_named_by_where_the_storage_was_opened() -> None:
    error = coredis.exceptions.ConnectionError("Unable to connect")
    named = transport_error(error, "p:", "redis+cluster://h1:7000,h2:7000")
    assert "Redis cannot be reached at redis+cluster://h1:7000,h2:7000 (" in str(named)
    assert "cannot be reached (" in str(transport_error(error, "p:"))


def test_a_cluster_url_on_a_server_without_cluster_mode_is_a_usage_error() -> None:
    error = coredis.exceptions.RedisClusterError("Redis Cluster cannot be connected.")
    error.__cause__ = coredis.exceptions.ResponseError("This instance has cluster support disabled")
    assert isinstance(transport_error(error, "p:", "redis+cluster://h:6379"), SagaUsageError)
