"""AgentMemory's cache: bounded, least recently used out, never stale."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heddle.memory import AgentMemory, FileStore, InMemoryStore, MemoryStore, SQLiteStore

StoreFactory = Callable[[str, Path], MemoryStore]


async def test_cache_never_holds_more_than_max_cache_size_entries(store: MemoryStore) -> None:
    """Saving and loading 50 keys through a memory with max_cache_size=3 caches at most 3."""
    memory = AgentMemory("agent", store, max_cache_size=3)
    for i in range(50):
        await memory.save(f"k{i}", i)
        assert memory.cache_info().size <= 3
    for i in range(50):
        assert await memory.load(f"k{i}") == i
        assert memory.cache_info().size <= 3
    assert memory.cache_info().max_size == 3


async def test_least_recently_used_entry_is_evicted_first(store: MemoryStore) -> None:
    """With room for 2, touching 'a' keeps it and evicts 'b' when 'c' arrives."""
    writer = AgentMemory("agent", store)
    for key in "abc":
        await writer.save(key, key)
    memory = AgentMemory("agent", store, max_cache_size=2)
    await memory.load("a")
    await memory.load("b")
    await memory.load("a")  # hit; a is now the most recent
    await memory.load("c")  # evicts b
    await memory.load("a")  # hit
    await memory.load("b")  # miss: b was evicted
    info = memory.cache_info()
    assert (info.hits, info.misses, info.size) == (2, 4, 2)


async def test_unchanged_entries_are_served_from_the_cache(store: MemoryStore) -> None:
    """Repeated loads of a key nobody changed are cache hits."""
    memory = AgentMemory("agent", store)
    await memory.save("k", {"big": list(range(100))})
    for _ in range(5):
        assert await memory.load("k") == {"big": list(range(100))}
    info = memory.cache_info()
    assert (info.hits, info.misses, info.size) == (5, 0, 1)


async def test_max_cache_size_zero_disables_the_cache(store: MemoryStore) -> None:
    """With max_cache_size=0 nothing is cached and every load reads the store."""
    memory = AgentMemory("agent", store, max_cache_size=0)
    await memory.save("k", 1)
    assert await memory.load("k") == 1
    assert await memory.load("k") == 1
    assert memory.cache_info() == type(memory.cache_info())(0, 2, 0, 0)


async def test_a_save_through_another_memory_is_seen(store: MemoryStore) -> None:
    """Two memories of one agent on one store: each sees the other's saves and deletes."""
    first, second = AgentMemory("agent", store), AgentMemory("agent", store)
    await first.save("k", "one")
    assert await first.load("k") == "one"
    await second.save("k", "two")
    assert await first.load("k") == "two"
    await second.delete("k")
    assert await first.load("k") is None
    assert await first.entry("k") is None


async def test_a_save_through_another_store_object_on_the_same_files_is_seen(
    persistent_kind: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """Separate store objects (separate connections, as in two processes) never serve stale data."""
    async with (
        make_store(persistent_kind, tmp_path) as a,
        make_store(persistent_kind, tmp_path) as b,
    ):
        reader, writer = AgentMemory("agent", a), AgentMemory("agent", b)
        await writer.save("k", 0)
        for i in range(1, 30):
            assert await reader.load("k") == i - 1
            await writer.save("k", i)  # same size as the previous value, microseconds apart
            assert await reader.load("k") == i
        await writer.save("other", 1)
        assert await reader.load("k") == 29
        await writer.delete("k")
        assert await reader.load("k") is None


def _overwrite_in_place(path: Path, text: str) -> None:
    with open(path, "r+") as f:
        f.write(text)


async def test_a_same_size_in_place_rewrite_of_an_agent_file_is_seen(tmp_path: Path) -> None:
    """An in-place rewrite of an agent file that keeps its inode, size and mtime is detected."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", "aaaa")
        assert await memory.load("k") == "aaaa"
        path = tmp_path / "agent.json"
        st = path.stat()
        doc = json.loads(path.read_text())
        doc["generation"] = "f" * 32
        doc["entries"]["k"]["value"] = "bbbb"
        text = json.dumps(doc)
        assert len(text) == st.st_size
        _overwrite_in_place(path, text)  # same inode, same size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
        assert await memory.load("k") == "bbbb"


async def test_a_hand_edit_that_keeps_the_generation_is_seen(tmp_path: Path) -> None:
    """Editing an agent file by hand (size changes, generation kept) invalidates the cache."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", "old")
        assert await memory.load("k") == "old"
        path = tmp_path / "agent.json"
        path.write_text(path.read_text().replace('"old"', '"edited by hand"'))
        assert await memory.load("k") == "edited by hand"


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["save", "load", "delete", "keys"]),
        st.integers(0, 1),  # which of the two memories
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 3),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(ops=_OPS, kind=st.sampled_from(["sqlite", "file", "memory"]))
def test_two_memories_behave_like_one_dict(ops: list[tuple[str, int, str, int]], kind: str) -> None:
    """Random interleaved saves, loads and deletes through two memories (each with its own
    store object and a 2-entry cache) always agree with a plain dict."""
    with tempfile.TemporaryDirectory() as tmp:

        def new_store() -> MemoryStore:
            if kind == "sqlite":
                return SQLiteStore(Path(tmp) / "m.db")
            return FileStore(tmp) if kind == "file" else shared

        shared = InMemoryStore()

        async def run() -> None:
            stores = [new_store(), new_store()]
            memories = [AgentMemory("agent", s, max_cache_size=2) for s in stores]
            model: dict[str, int] = {}
            try:
                for op, who, key, value in ops:
                    memory = memories[who]
                    if op == "save":
                        await memory.save(key, value)
                        model[key] = value
                    elif op == "load":
                        assert await memory.load(key) == model.get(key)
                    elif op == "delete":
                        assert await memory.delete(key) == (key in model)
                        model.pop(key, None)
                    else:
                        assert await memory.keys() == sorted(model)
                    assert memory.cache_info().size <= 2
            finally:
                for s in stores:
                    await s.aclose()

        asyncio.run(run())


@pytest.mark.parametrize("max_cache_size", [1, 5])
async def test_concurrent_loads_and_saves_on_one_memory_end_consistent(
    store: MemoryStore, max_cache_size: int
) -> None:
    """Loads racing saves of the same key never leave the cache serving an old value afterwards."""
    memory = AgentMemory("agent", store, max_cache_size=max_cache_size)
    await memory.save("k", -1)
    await asyncio.gather(
        *(memory.save("k", i) if i % 2 else memory.load("k") for i in range(60)),
    )
    final = await AgentMemory("agent", store, max_cache_size=0).load("k")
    assert await memory.load("k") == final
