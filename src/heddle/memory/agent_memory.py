"""AgentMemory: an agent's persistent key-value memory, with a cache that is never stale.

A cache that serves whatever this process last saw misses another process's
saves. So every ``load()`` asks the store whether the agent's data changed
since the cached entry was read (a version check: ``PRAGMA data_version`` for
SQLite, a per-write generation for files); only an unchanged version serves
the cached entry. The cache holds at most ``max_cache_size`` entries, least
recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from heddle.core._checks import check_int
from heddle.core._resource import AsyncResource
from heddle.memory._validation import (
    check_key,
    decode_json,
    encode_metadata,
    encode_value,
    validate_agent_id,
)
from heddle.memory.errors import MemoryStoreError, StoreClosedError
from heddle.memory.sqlite_store import SQLiteStore
from heddle.memory.store import MemoryStore, StoredEntry

__all__ = ["AgentMemory", "CacheInfo", "MemoryEntry"]


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """A saved value with its metadata and timestamps (timezone-aware UTC).

    ``metadata`` is ``{}`` when the save had none; ``created_at`` is the
    first save of the key, ``updated_at`` the latest.
    """

    key: str
    value: Any
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """Counters of an AgentMemory's cache (see :meth:`AgentMemory.cache_info`).

    ``hits`` counts reads answered from the cache after the store confirmed
    it current; ``misses`` reads that had to fetch the entry.
    """

    hits: int
    misses: int
    size: int
    max_size: int


@dataclass(frozen=True, slots=True)
class _Cached:
    version: Hashable
    entry: StoredEntry


class AgentMemory(AsyncResource):
    """The memory of one agent: JSON values under string keys, kept by a store.

    ``store`` defaults to an :class:`~heddle.memory.SQLiteStore` at
    :func:`~heddle.memory.default_store_path` (``$HEDDLE_HOME/memory.db`` or
    ``./.heddle/memory.db``), opened on first use and closed by
    :meth:`aclose`. A store you pass in is shared, not owned: close it yourself.
    The agent id is checked here, before any file is touched.

    ``max_cache_size`` bounds the number of cached entries (0 disables the cache).
    """

    __slots__ = ("_agent_id", "_cache", "_closed", "_hits", "_max", "_misses", "_owns", "_store")

    def __init__(
        self, agent_id: str, store: MemoryStore | None = None, *, max_cache_size: int = 1000
    ) -> None:
        self._agent_id = validate_agent_id(agent_id)
        check_int(max_cache_size, "max_cache_size", minimum=0)
        if store is not None and not isinstance(store, MemoryStore):
            raise TypeError(
                f"store must be a MemoryStore (SQLiteStore, FileStore, ...), got {store!r}"
            )
        self._owns = store is None
        self._store: MemoryStore = SQLiteStore() if store is None else store
        self._max = max_cache_size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._closed = False

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def store(self) -> MemoryStore:
        return self._store

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"AgentMemory({self._agent_id!r}) is closed")

    def _remember(self, key: str, version: Hashable, entry: StoredEntry) -> None:
        if self._max == 0:
            return
        self._cache[key] = _Cached(version, entry)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def save(self, key: str, value: Any, metadata: dict[str, Any] | None = None) -> None:
        """Store ``value`` (anything JSON can hold) under ``key``, replacing any previous value.

        ``value`` and ``metadata`` (a dict) are encoded before anything is
        written: a TypeError leaves the store as it was. NaN, infinities,
        non-str dict keys and values nested more than 500 levels deep are
        refused, since JSON cannot give them back; tuples come back as lists.
        When ``save`` returns, the value is committed.
        """
        self._check_open()
        check_key(key)
        value_text = encode_value(value)
        metadata_text = encode_metadata(metadata)
        lookup = await self._store.put(self._agent_id, key, value_text, metadata_text)
        if lookup.entry is not None:
            self._remember(key, lookup.version, lookup.entry)

    async def _stored(self, key: str) -> StoredEntry | None:
        self._check_open()
        check_key(key)
        cached = self._cache.get(key)
        lookup = await self._store.get(
            self._agent_id, key, known_version=None if cached is None else cached.version
        )
        if lookup.unchanged and cached is not None:
            self._hits += 1
            if key in self._cache:
                self._cache.move_to_end(key)
            return cached.entry
        self._misses += 1
        if lookup.entry is None:
            self._cache.pop(key, None)
        else:
            self._remember(key, lookup.version, lookup.entry)
        return lookup.entry

    def _decode(self, key: str, what: str, text: str) -> Any:
        try:
            return decode_json(text)
        except ValueError as exc:
            # save() stores only what it can read back, so this text was
            # stored some other way (another program, a direct store.put).
            raise MemoryStoreError(
                f"the {what} of key {key!r} of agent {self._agent_id!r} in {self._store!r} "
                f"cannot be read: {exc}"
            ) from exc

    async def load(self, key: str, default: Any = None) -> Any:
        """The value saved under ``key``, or ``default`` if there is none.

        A stored value that is not JSON heddle can decode (written by another
        program) raises :class:`~heddle.memory.MemoryStoreError`.
        """
        stored = await self._stored(key)
        return default if stored is None else self._decode(key, "value", stored.value)

    async def entry(self, key: str) -> MemoryEntry | None:
        """The :class:`MemoryEntry` of ``key`` (value, metadata, timestamps), or None."""
        stored = await self._stored(key)
        if stored is None:
            return None
        return MemoryEntry(
            key=key,
            value=self._decode(key, "value", stored.value),
            metadata={}
            if stored.metadata is None
            else self._decode(key, "metadata", stored.metadata),
            created_at=stored.created_at,
            updated_at=stored.updated_at,
        )

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        self._check_open()
        check_key(key)
        self._cache.pop(key, None)
        return await self._store.delete(self._agent_id, key)

    async def keys(self, prefix: str | None = None) -> list[str]:
        """The agent's keys, sorted; only those starting with ``prefix`` if given."""
        self._check_open()
        return await self._store.keys(self._agent_id, prefix)

    def cache_info(self) -> CacheInfo:
        """Hits, misses and size of the cache."""
        return CacheInfo(self._hits, self._misses, len(self._cache), self._max)

    async def aclose(self) -> None:
        """Drop the cache and close the store if this memory opened it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._cache.clear()
        if self._owns:
            await self._store.aclose()

    def __repr__(self) -> str:
        return f"AgentMemory({self._agent_id!r}, store={self._store!r})"
