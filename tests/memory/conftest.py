"""Fixtures for the memory tests: each store kind, opened in the test's temp dir.

The ``redis`` kind needs the Redis server of ``HEDDLE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``): without it those tests skip, or fail when
``HEDDLE_REQUIRE_SERVICES`` is set (tests/conftest.py). Each test gets its own
key namespace, deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from heddle.memory import FileStore, InMemoryStore, MemoryStore, RedisStore, SQLiteStore

STORE_KINDS = ["sqlite", "file", "memory", "redis"]
PERSISTENT_KINDS = ["sqlite", "file"]

REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Every namespace this session creates starts with it, so cleaning up is one SCAN.
REDIS_PREFIX = f"heddle-test-{uuid.uuid4().hex[:12]}"

StoreFactory = Callable[[str, Path], MemoryStore]


def redis_namespace(where: Path) -> str:
    """The namespace of the Redis store "under" ``where`` (so reopening finds the same data)."""
    return f"{REDIS_PREFIX}-{hashlib.sha1(str(where).encode()).hexdigest()[:16]}"


def _make_store(kind: str, where: Path) -> MemoryStore:
    if kind == "sqlite":
        return SQLiteStore(where / "memory.db")
    if kind == "file":
        return FileStore(where / "files")
    if kind == "redis":
        return RedisStore(REDIS_URL, namespace=redis_namespace(where))
    return InMemoryStore()


def _delete_namespace(prefix: str) -> None:
    import redis

    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
        doomed = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if doomed:
            client.unlink(*doomed)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The test Redis server's URL (skips, or fails in CI, without one); deletes the keys after."""
    yield redis_server
    _delete_namespace(REDIS_PREFIX)


@pytest.fixture
def make_store() -> StoreFactory:
    """make_store(kind, where): a new, unopened store of ``kind`` with its data under ``where``."""
    return _make_store


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each store kind in turn (Redis only when a server is reachable)."""
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    return str(request.param)


@pytest.fixture(params=PERSISTENT_KINDS)
def persistent_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind that keeps data on disk, in turn."""
    return str(request.param)


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[MemoryStore]:
    """An open store of each kind."""
    async with _make_store(kind, tmp_path) as opened:
        yield opened
