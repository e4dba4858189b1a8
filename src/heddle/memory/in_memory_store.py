"""InMemoryStore: the store protocol over a dict, for tests and throwaway runs."""

from __future__ import annotations

import time
from collections.abc import Hashable

from heddle.core._resource import AsyncResource
from heddle.memory._validation import check_key, validate_agent_id
from heddle.memory.errors import StoreClosedError
from heddle.memory.store import Lookup, StoredEntry, utc_from_micros

__all__ = ["InMemoryStore"]


class InMemoryStore(AsyncResource):
    """A :class:`~heddle.memory.MemoryStore` that keeps everything in this process's memory.

    It checks agent ids and keys and round-trips values through JSON exactly
    like the persistent stores, so tests written against it hold for them;
    nothing survives the process.

    >>> import asyncio
    >>> from heddle.memory import AgentMemory, InMemoryStore
    >>> async def demo():
    ...     async with InMemoryStore() as store:
    ...         memory = AgentMemory("tester", store)
    ...         await memory.save("answer", {"value": 42})
    ...         return await memory.load("answer")
    >>> asyncio.run(demo())
    {'value': 42}
    """

    __slots__ = ("_agents", "_closed", "_version")

    def __init__(self) -> None:
        self._agents: dict[str, dict[str, StoredEntry]] = {}
        # One write counter for the whole store: a version is never reused.
        self._version = 0
        self._closed = False

    def _entries(self, agent_id: str, key: str | None) -> dict[str, StoredEntry]:
        validate_agent_id(agent_id)
        if key is not None:
            check_key(key)
        if self._closed:
            raise StoreClosedError("InMemoryStore is closed")
        return self._agents.setdefault(agent_id, {})

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    async def get(self, agent_id: str, key: str, *, known_version: Hashable = None) -> Lookup:
        """The entry of ``key`` (``entry=None`` if absent); every write makes a new version."""
        entries = self._entries(agent_id, key)
        if self._version == known_version:
            return Lookup(None, self._version, unchanged=True)
        return Lookup(entries.get(key), self._version)

    async def put(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        """Store JSON texts under ``key``."""
        entries = self._entries(agent_id, key)
        now = utc_from_micros(time.time_ns() // 1000)
        old = entries.get(key)
        entry = StoredEntry(value, metadata, old.created_at if old else now, now)
        entries[key] = entry
        self._version += 1
        return Lookup(entry, self._version)

    async def delete(self, agent_id: str, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        entries = self._entries(agent_id, key)
        if entries.pop(key, None) is None:
            return False
        self._version += 1
        return True

    async def keys(self, agent_id: str, prefix: str | None = None) -> list[str]:
        """The agent's keys (those starting with ``prefix``), sorted by code point."""
        entries = self._entries(agent_id, prefix)
        return sorted(k for k in entries if not prefix or k.startswith(prefix))

    async def aclose(self) -> None:
        """Mark the store closed (idempotent); the data is dropped."""
        self._closed = True
        self._agents.clear()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<InMemoryStore {len(self._agents)} agents{state}>"
