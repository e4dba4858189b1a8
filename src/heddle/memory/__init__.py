"""Agent memory: persistent key-value memory per agent, safe across processes and crashes.

::

    from heddle.memory import AgentMemory

    memory = AgentMemory("researcher")        # SQLite at $HEDDLE_HOME/memory.db or ./.heddle/
    await memory.save("notes", ["a", "b"], metadata={"source": "search"})
    await memory.load("notes")                # ['a', 'b']

Stores: :class:`SQLiteStore` (the default; WAL, one file for all agents),
:class:`FileStore` (one human-readable JSON file per agent, crash-safe) and
:class:`InMemoryStore` (for tests). See ``docs/memory.md``.
"""

from heddle.memory._validation import validate_agent_id
from heddle.memory.agent_memory import AgentMemory, CacheInfo, MemoryEntry
from heddle.memory.errors import (
    CorruptStoreError,
    InvalidAgentId,
    MemoryStoreError,
    StoreClosedError,
)
from heddle.memory.file_store import FileStore
from heddle.memory.in_memory_store import InMemoryStore
from heddle.memory.redis_store import RedisStore
from heddle.memory.sqlite_store import SQLiteStore
from heddle.memory.store import Lookup, MemoryStore, StoredEntry, default_store_path

__all__ = [
    "AgentMemory",
    "CacheInfo",
    "CorruptStoreError",
    "FileStore",
    "InMemoryStore",
    "InvalidAgentId",
    "Lookup",
    "MemoryEntry",
    "MemoryStore",
    "MemoryStoreError",
    "RedisStore",
    "SQLiteStore",
    "StoreClosedError",
    "StoredEntry",
    "default_store_path",
    "validate_agent_id",
]
