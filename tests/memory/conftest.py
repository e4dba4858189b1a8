"""Fixtures for the memory tests: each store kind, opened in the test's temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from heddle.memory import FileStore, InMemoryStore, MemoryStore, SQLiteStore

STORE_KINDS = ["sqlite", "file", "memory"]
PERSISTENT_KINDS = ["sqlite", "file"]


StoreFactory = Callable[[str, Path], MemoryStore]


def _make_store(kind: str, where: Path) -> MemoryStore:
    if kind == "sqlite":
        return SQLiteStore(where / "memory.db")
    if kind == "file":
        return FileStore(where / "files")
    return InMemoryStore()


@pytest.fixture
def make_store() -> StoreFactory:
    """make_store(kind, where): a new, unopened store of ``kind`` with its data under ``where``."""
    return _make_store


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each store kind in turn."""
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
