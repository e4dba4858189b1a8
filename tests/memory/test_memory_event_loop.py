"""No store call blocks the event loop: waits and I/O happen on the store's thread."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from heddle.memory import AgentMemory, FileStore, MemoryStore, SQLiteStore

StoreFactory = Callable[[str, Path], MemoryStore]


# What a store does to the disk: none of it may happen on the event loop's thread.
_DISK_CALLS = frozenset({"fsync", "replace", "execute", "executemany", "commit", "flock"})


@pytest.mark.parametrize("persistent_kind", ["sqlite", "file"])
async def test_400_concurrent_saves_do_their_disk_work_off_the_event_loop(
    persistent_kind: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """While 400 saves run at once, no file or SQLite call runs on the loop's thread.

    A profiler on the loop's thread (sys.setprofile sees only this thread) records
    every C call: what blocks is named, not guessed from how long a tick took.
    """
    on_loop: list[str] = []

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") in _DISK_CALLS:
            on_loop.append(getattr(arg, "__qualname__", repr(arg)))

    async with make_store(persistent_kind, tmp_path) as store:
        memory = AgentMemory("agent", store)
        sys.setprofile(profile)
        try:
            await asyncio.gather(
                *(memory.save(f"k{i}", {"i": i, "pad": "x" * 200}) for i in range(400))
            )
        finally:
            sys.setprofile(None)
        assert len(await memory.keys()) == 400
    assert on_loop == []


def _hold_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


async def test_a_file_save_waiting_for_another_writers_lock_leaves_the_loop_free(
    tmp_path: Path,
) -> None:
    """While another writer holds the agent's lock, a save waits on the store's thread: the loop
    keeps running other tasks, and the save completes once the lock is released."""
    async with FileStore(tmp_path) as store:
        memory = AgentMemory("agent", store)
        fd = _hold_lock(tmp_path / ".agent.lock")
        try:
            save = asyncio.create_task(memory.save("k", "v"))
            for _ in range(20):  # the loop is free: this task keeps running
                await asyncio.sleep(0.005)
            assert not save.done()
        finally:
            os.close(fd)  # releases the lock
        await asyncio.wait_for(save, timeout=10)
        assert await memory.load("k") == "v"


async def test_an_sqlite_save_waiting_for_another_writer_leaves_the_loop_free(
    tmp_path: Path,
) -> None:
    """While another connection holds the write lock, a save waits in SQLite's busy handler on
    the store's thread: the loop keeps running, and the save lands once the writer commits."""
    path = tmp_path / "m.db"
    async with SQLiteStore(path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", "before")
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            save = asyncio.create_task(memory.save("k", "after"))
            for _ in range(20):
                await asyncio.sleep(0.005)
            assert not save.done()
            blocker.execute("COMMIT")
        finally:
            blocker.close()
        await asyncio.wait_for(save, timeout=10)
        assert await memory.load("k") == "after"
