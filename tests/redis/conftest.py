"""Fixtures of the saga-redis tests: a key prefix of the test's own, deleted afterwards.

The server and the backends come from the root conftest (``redis_url``, ``anyio_backend``).
Every test uses Redis database 14 (the root's default ``redis_url``) under a prefix nobody
else uses, so tests never see each other's keys and may run while other tests use the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis


def purge(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` in the database of ``url``; return how many."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def keys_under(url: str, prefix: str) -> list[str]:
    """The keys under ``prefix``, sorted, as text."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


@pytest.fixture
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted after the test."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    purge(redis_url, prefix)
