"""Shared fixtures for heddle's tests.

Tests of real services (Redis, Ray) skip with a reason when the service is
missing, and fail instead when ``HEDDLE_REQUIRE_SERVICES`` is set (as .ci/run
does), so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: Set by .ci/run: a missing Redis/Postgres/Ray fails the test instead of skipping it.
REQUIRE_SERVICES = os.environ.get("HEDDLE_REQUIRE_SERVICES", "") not in ("", "0")
#: The Redis server the Redis-backed tests use.
REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_unavailable(reason: str) -> None:
    """Skip the calling test, or fail it when CI requires the services."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (HEDDLE_REQUIRE_SERVICES is set): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", name="service_unavailable")
def service_unavailable_fixture() -> Callable[[str], None]:
    """:func:`service_unavailable` for test modules (conftest modules cannot be imported)."""
    return service_unavailable


def _redis_problem() -> str:
    try:
        import redis
    except ImportError:
        return "the redis package is not installed (pip install 'heddle[redis]')"
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2) as r:
            r.ping()
    except redis.RedisError as exc:
        return f"no Redis server at {REDIS_URL}: {exc}"
    return ""


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The test Redis server's URL, checked once; skips (fails in CI) without one."""
    problem = _redis_problem()
    if problem:
        service_unavailable(problem)
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_server: str) -> Iterator[str]:
    """A fresh key prefix on the test Redis; every key under it is deleted after the test."""
    import redis

    name = f"heddle-test-{uuid.uuid4().hex}"
    yield name
    with redis.Redis.from_url(redis_server, socket_timeout=5) as r:
        doomed = list(r.scan_iter(match=f"{name}*", count=1000))
        if doomed:
            r.unlink(*doomed)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A Redis URL whose server takes connections and never answers, as a hung Redis does."""
    with socket.create_server(("127.0.0.1", 0)) as listener:  # never accept()ed
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.fixture
def dead_redis() -> str:
    """A Redis URL where nothing listens, as during an outage."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture(autouse=True, name="heddle_home")
def heddle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HEDDLE_HOME at a per-test directory so no test writes into the work tree."""
    home = tmp_path / "heddle-home"
    monkeypatch.setenv("HEDDLE_HOME", str(home))
    return home
