"""FileStore: the file layout, atomic replacement, and corrupt files reported and left alone."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from heddle.memory import (
    AgentMemory,
    CorruptStoreError,
    FileStore,
    MemoryStoreError,
    file_store,
)

CORRUPT_FILES = {
    "truncated": b'{"format": 1, "generation": "' + b"0" * 32 + b'", "agent_id": "agent", "entr',
    "empty": b"",
    "binary": b"\x00\xff\xfe garbage",
    "not-an-object": b"[1, 2, 3]",
    "the-document's-format": b'{"k": {"value": 1, "metadata": {}, "timestamp": "2025-01-01"}}',
    "entries-not-an-object": (
        b'{"format": 1, "generation": "x", "agent_id": "agent", "entries": []}'
    ),
    "malformed-entry": (
        b'{"format": 1, "generation": "x", "agent_id": "agent", "entries": {"k": {"value": 1}}}'
    ),
    "nested-too-deeply": (
        b'{"format": 1, "generation": "x", "agent_id": "agent", "entries": {"k": {"value": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b', "metadata": null, "created_at": "2025-01-01T00:00:00+00:00", '
        b'"updated_at": "2025-01-01T00:00:00+00:00"}}}'
    ),
}


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_an_agent_file_is_readable_json_with_a_header(tmp_path: Path) -> None:
    """<agent>.json holds the format, a generation, the agent id and plain-JSON entries."""
    async with FileStore(tmp_path) as store:
        await AgentMemory("agent", store).save("k", {"v": [1, 2]}, metadata={"m": True})
    doc = json.loads((tmp_path / "agent.json").read_text())
    assert doc["format"] == 1
    assert doc["agent_id"] == "agent"
    assert len(doc["generation"]) == 32
    entry = doc["entries"]["k"]
    assert (entry["value"], entry["metadata"]) == ({"v": [1, 2]}, {"m": True})
    assert entry["created_at"].endswith("+00:00")


async def test_a_save_leaves_only_the_data_file_and_the_lock_file(tmp_path: Path) -> None:
    """After saves and a delete no temporary file remains beside the agent's file."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        for i in range(5):
            await memory.save(f"k{i}", i)
        await memory.delete("k0")
    assert _listing(tmp_path) == [".agent.lock", "agent.json"]


async def test_each_save_replaces_the_file_rather_than_rewriting_it(tmp_path: Path) -> None:
    """Each save swaps in a new inode (os.replace): a reader holding the old file reads it whole."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", "one")
        path = tmp_path / "agent.json"
        old_reader = await asyncio.to_thread(open, path, "rb")
        with old_reader:
            before = os.fstat(old_reader.fileno()).st_ino
            await memory.save("k", "two")
            assert json.loads(old_reader.read())["entries"]["k"]["value"] == "one"
        assert os.stat(path).st_ino != before
        assert await memory.load("k") == "two"


async def test_a_leftover_temp_file_from_a_crash_is_harmless(tmp_path: Path) -> None:
    """A half-written temp file left by a killed writer does not break or outlive the next save."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", 1)
        (tmp_path / ".agent.json.tmp").write_bytes(b'{"format": 1, "gen')
        assert await memory.load("k") == 1
        await memory.save("k", 2)
        assert await AgentMemory("agent", store).load("k") == 2
    assert not (tmp_path / ".agent.json.tmp").exists()


@pytest.mark.parametrize("content", CORRUPT_FILES.values(), ids=CORRUPT_FILES.keys())
async def test_a_corrupt_file_raises_on_load_and_save_and_is_never_overwritten(
    tmp_path: Path, content: bytes
) -> None:
    """Loading, saving, deleting or listing with a corrupt agent file raises CorruptStoreError
    naming the file, and the file keeps its exact bytes."""
    path = tmp_path / "agent.json"
    path.write_bytes(content)
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        for call in (
            lambda: memory.load("k"),
            lambda: memory.save("k", 1),
            lambda: memory.delete("k"),
            lambda: memory.keys(),
        ):
            with pytest.raises(CorruptStoreError) as caught:
                await call()
            assert caught.value.path == path
            assert str(path) in str(caught.value)
        assert await AgentMemory("other", store).load("k") is None  # other agents unaffected
    assert path.read_bytes() == content
    assert not (tmp_path / ".agent.json.tmp").exists()


class _Died(BaseException):
    """Stands for the process dying at an injected point of a write."""


@pytest.mark.parametrize("point", ["write", "fsync", "replace", "directory fsync"])
async def test_dying_at_any_step_of_a_write_leaves_the_old_or_the_new_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """A writer that dies while writing the temp file, before or after its fsync, or right
    after os.replace, leaves a complete file holding every earlier save, and the store works."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        for i in range(20):
            await memory.save(f"k{i}", i)
        real_fsync, real_replace = os.fsync, os.replace
        fsyncs = 0

        def die_in_fsync(fd: int) -> None:
            nonlocal fsyncs
            fsyncs += 1
            if (point, fsyncs) in (("fsync", 1), ("directory fsync", 2)):
                raise _Died
            real_fsync(fd)

        def die_in_replace(src: str, dst: str, **dir_fds: int) -> None:
            if point == "replace":
                real_replace(src, dst, **dir_fds)
                raise _Died

        class HalfWritten:
            def __init__(self, f: Any) -> None:
                self.f = f

            def __enter__(self) -> HalfWritten:
                return self

            def __exit__(self, *exc: object) -> None:
                self.f.close()

            def write(self, data: bytes) -> int:
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                raise _Died

        def open_dying_on_write(path: Any, mode: str = "r", *args: Any) -> Any:
            f = open(path, mode, *args)  # noqa: SIM115
            return HalfWritten(f) if "w" in mode else f

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", die_in_fsync)
            patch.setattr(os, "replace", die_in_replace if point == "replace" else real_replace)
            if point == "write":
                patch.setattr(file_store, "open", open_dying_on_write, raising=False)
            with pytest.raises(_Died):
                await memory.save("new", "value")
        fresh = AgentMemory("agent", store, max_cache_size=0)
        assert [await fresh.load(f"k{i}") for i in range(20)] == list(range(20))
        assert await fresh.load("new") == (
            "value" if point in ("replace", "directory fsync") else None
        )
        await fresh.save("after", 1)
        assert await fresh.load("after") == 1


async def test_a_corrupt_file_is_reported_even_after_being_cached(tmp_path: Path) -> None:
    """A memory that cached an entry notices when the file is later corrupted."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", 1)
        assert await memory.load("k") == 1
        (tmp_path / "agent.json").write_bytes(CORRUPT_FILES["truncated"])
        with pytest.raises(CorruptStoreError):
            await memory.load("k")


async def test_a_file_of_another_agent_is_refused(tmp_path: Path) -> None:
    """If bob.json holds agent 'Bob' (ids differing in case share a file on case-insensitive
    file systems), FileStore refuses to mix the two agents."""
    async with FileStore(tmp_path) as store:
        await AgentMemory("Bob", store).save("k", "Bob's")
        (tmp_path / "Bob.json").rename(tmp_path / "bob.json")
        with pytest.raises(MemoryStoreError, match="belongs to agent 'Bob'") as caught:
            await AgentMemory("bob", store).save("k", "bob's")
        assert not isinstance(caught.value, CorruptStoreError)
    assert json.loads((tmp_path / "bob.json").read_text())["entries"]["k"]["value"] == "Bob's"


async def test_put_of_text_nested_too_deeply_raises_type_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """FileStore.put given JSON text deeper than Python's parser can follow raises the
    documented TypeError, not RecursionError, and leaves the agent's file as it was."""
    async with FileStore(tmp_path) as store:
        await store.put("agent", "k", '"old"', None)
        before = (tmp_path / "agent.json").read_bytes()
        deep = "[" * 100_000 + "]" * 100_000
        with pytest.raises(TypeError, match=r"value is not JSON text: .*nested too deeply"):
            await store.put("agent", "k", deep, None)
        with pytest.raises(TypeError, match="metadata is not JSON text"):
            await store.put("agent", "k", "1", deep)
    assert (tmp_path / "agent.json").read_bytes() == before


async def test_delete_of_an_agent_without_a_file_creates_nothing(tmp_path: Path) -> None:
    """delete() and keys() on an agent never saved return False and [] and create no file."""
    async with FileStore(tmp_path / "base") as store:
        memory = AgentMemory("agent", store)
        assert await memory.delete("k") is False
        assert await memory.keys() == []
        assert await memory.load("k") is None
    assert not (tmp_path / "base").exists()
