"""A faithful copy of the V2 design's ``v2/memory/agent_memory.py`` store: the benchmark baseline.

Rebuilt from the V2 design's sections 3 (fcntl lock, then truncate and dump in
place), 4 (``asyncio.to_thread`` per call, a per-agent ``asyncio.Lock``), 8
(``lambda: datetime.now()``), 9 (regex plus ``str.startswith``) and "LRU
Cache" (an ``OrderedDict`` that only this process updates). Its flaws are
kept on purpose, they are what the benchmark measures:

* every save reads and rewrites the whole file (O(keys));
* a process killed between ``truncate()`` and the end of ``json.dump`` leaves
  a truncated file that no later load or save can parse;
* the cache serves stale values after another process saved the key.

Not part of heddle; do not use.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass
class MemoryEntry:
    key: str
    value: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now())  # section 8


class SeedFileStore:
    """The document's JSON file store: one file per agent, flock, truncate-and-rewrite."""

    def __init__(self, base_path: str | Path) -> None:
        self.base_path = Path(base_path)
        self.base_path.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def _get_file_path(self, agent_id: str) -> Path:
        # Section 9, as written.
        if not re.match(r"^[a-zA-Z0-9_-]+$", agent_id):
            raise ValueError("Invalid agent_id")
        file_path = (self.base_path / f"{agent_id}.json").resolve()
        if not str(file_path).startswith(str(self.base_path.resolve())):
            raise ValueError("Path traversal attempted")
        return file_path

    def _get_lock(self, agent_id: str) -> asyncio.Lock:
        if agent_id not in self._locks:
            self._locks[agent_id] = asyncio.Lock()
        return self._locks[agent_id]

    def _save_sync(
        self, file_path: Path, key: str, value: Any, metadata: dict[str, Any] | None
    ) -> None:
        # Section 3, as written: lock, read, modify, seek(0), truncate, dump.
        mode = "r+" if file_path.exists() else "w+"
        with open(file_path, mode) as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                data = json.load(f) if mode == "r+" else {}
                data[key] = {
                    "value": value,
                    "metadata": metadata or {},
                    "timestamp": datetime.now().isoformat(),
                }
                f.seek(0)
                f.truncate()
                json.dump(data, f)
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _load_sync(self, file_path: Path, key: str) -> dict[str, Any] | None:
        if not file_path.exists():
            return None
        with open(file_path) as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            try:
                data: dict[str, Any] = json.load(f)
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return data.get(key)

    async def save(
        self, agent_id: str, key: str, value: Any, metadata: dict[str, Any] | None = None
    ) -> None:
        file_path = self._get_file_path(agent_id)
        async with self._get_lock(agent_id):  # section 4
            await asyncio.to_thread(self._save_sync, file_path, key, value, metadata)

    async def load(self, agent_id: str, key: str) -> dict[str, Any] | None:
        file_path = self._get_file_path(agent_id)
        async with self._get_lock(agent_id):
            return await asyncio.to_thread(self._load_sync, file_path, key)


class SeedAgentMemory:
    """The document's AgentMemory: the store plus a per-process LRU cache ("LRU Cache")."""

    def __init__(self, agent_id: str, store: SeedFileStore, max_cache_size: int = 1000) -> None:
        self.agent_id = agent_id
        self.store = store
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_lock = asyncio.Lock()
        self.max_cache_size = max_cache_size

    async def save(self, key: str, value: Any, metadata: dict[str, Any] | None = None) -> None:
        await self.store.save(self.agent_id, key, value, metadata)
        async with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)  # LRU
            self._cache[key] = value
            while len(self._cache) > self.max_cache_size:
                self._cache.popitem(last=False)

    async def load(self, key: str, default: Any = None) -> Any:
        async with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        record = await self.store.load(self.agent_id, key)
        if record is None:
            return default
        async with self._cache_lock:
            self._cache[key] = record["value"]
            while len(self._cache) > self.max_cache_size:
                self._cache.popitem(last=False)
        return record["value"]
