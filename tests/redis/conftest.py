"""Fixtures of the saga-redis tests: a key prefix of the test's own, deleted afterwards.

The server and the backends come from the root conftest (``redis_url``, ``anyio_backend``).
Every test uses the root's ``redis_url`` (database 14) under a prefix nobody else uses, so
tests never see each other's keys and may run while other programs use the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ._support import purge


@pytest.fixture
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted after the test."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    purge(redis_url, prefix)
