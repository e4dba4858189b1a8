"""The store protocol: what :class:`~heddle.memory.AgentMemory` needs from a backend.

A store keeps, per agent id, a map of string keys to entries (JSON text plus
UTC timestamps). Stores take and give JSON *text*: AgentMemory encodes values
on the caller's side, so a save stores the value as it was when ``save()``
was called, whatever the caller does to it while the save is in flight.

Every answer carries a *version*: an opaque, hashable token such that, if a
later ``get(..., known_version=v)`` finds the version still equal to ``v``,
nothing of that agent has changed in between, in this process or any other.
Stores may change the version more often than that (SQLiteStore's changes on
any write to the database), never less. AgentMemory's cache rests on it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from heddle.core.paths import heddle_home

__all__ = [
    "DEFAULT_FILE_NAME",
    "Lookup",
    "MemoryStore",
    "StoredEntry",
    "default_store_path",
]

#: The SQLite file of the default store, inside ``$HEDDLE_HOME`` or ``./.heddle/``.
DEFAULT_FILE_NAME = "memory.db"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_store_path() -> Path:
    """Where ``AgentMemory(agent_id)`` keeps its data when given no store.

    ``$HEDDLE_HOME/memory.db`` when the ``HEDDLE_HOME`` environment variable is
    set (and not empty), else ``./.heddle/memory.db`` under the current
    directory. Read when called; nothing is created.
    """
    return heddle_home() / DEFAULT_FILE_NAME


def utc_from_micros(micros: int) -> datetime:
    """A timezone-aware UTC datetime from integer microseconds since the epoch (exact)."""
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One key as a store holds it.

    ``value`` is JSON text; ``metadata`` is the JSON text of a dict, or None
    when the save had no metadata. Timestamps are timezone-aware UTC;
    ``created_at`` is kept when a key is overwritten.
    """

    value: str
    metadata: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Lookup:
    """A store's answer to ``get()`` or ``put()``.

    ``entry`` is the key's entry (None: no such key) as of ``version``. When
    ``get()`` was given a ``known_version`` that is still current, the store
    may answer ``unchanged=True`` with ``entry=None`` without reading it.
    """

    entry: StoredEntry | None
    version: Hashable
    unchanged: bool = False


@runtime_checkable
class MemoryStore(Protocol):
    """The interface of memory backends: :class:`SQLiteStore`, :class:`FileStore`,
    :class:`InMemoryStore`, or your own.

    Every method validates ``agent_id`` (raising
    :class:`~heddle.memory.InvalidAgentId` before touching anything) and
    none blocks the event loop. A store is an async context manager; its
    ``aclose()`` is idempotent and later calls raise
    :class:`~heddle.memory.StoreClosedError`.
    """

    async def get(self, agent_id: str, key: str, *, known_version: Hashable = None) -> Lookup:
        """The entry of ``key`` (``entry=None`` if absent) and the version it was read at."""
        ...

    async def put(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        """Store JSON texts under ``key``; when this returns the write is committed."""
        ...

    async def delete(self, agent_id: str, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        ...

    async def keys(self, agent_id: str, prefix: str | None = None) -> list[str]:
        """The agent's keys (those starting with ``prefix``), sorted by code point."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources (idempotent)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
