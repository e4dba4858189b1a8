"""SQLiteStore: WAL and the durability setting, O(1) saves, prefix ranges, corrupt files."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heddle.memory import (
    AgentMemory,
    CorruptStoreError,
    MemoryStoreError,
    SQLiteStore,
)
from heddle.memory.sqlite_store import (
    DELETE_SQL,
    KEYS_RANGE_SQL,
    SELECT_SQL,
    UPSERT_SQL,
    Synchronous,
    prefix_upper_bound,
)


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Every SQL statement run by connections opened during the test, with its thread id."""
    statements: list[tuple[int, str]] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return statements


def _bulk_fill(path: Path, agent: str, n: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO heddle_memory VALUES (?, ?, ?, NULL, 0, 0)",
            ((agent, f"key-{i:06d}", '{"note": "' + "x" * 100 + '"}') for i in range(n)),
        )
    conn.close()


def _wal_frames(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)
    finally:
        conn.close()


def _empty_wal(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        conn.close()


async def test_the_file_is_in_wal_mode_with_the_chosen_synchronous_setting(
    tmp_path: Path, traced: list[tuple[int, str]]
) -> None:
    """Opening sets journal_mode=WAL (persistent in the file) and synchronous as configured."""
    modes: tuple[Synchronous, ...] = ("NORMAL", "FULL")
    for setting in modes:
        path = tmp_path / f"{setting}.db"
        async with SQLiteStore(path, synchronous=setting) as store:
            assert store.synchronous == setting
            await store.put("a", "k", "1", None)
        assert f"PRAGMA synchronous={setting}" in [sql for _, sql in traced]
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    assert SQLiteStore().synchronous == "NORMAL"


async def test_every_statement_runs_off_the_event_loop_thread(
    tmp_path: Path, traced: list[tuple[int, str]]
) -> None:
    """Connecting, saving, loading, listing and deleting all run on the store's own thread."""
    async with SQLiteStore(tmp_path / "m.db") as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", 1)
        await memory.load("k")
        await memory.keys("k")
        await memory.delete("k")
    assert len(traced) > 5
    assert threading.get_ident() not in {thread for thread, _ in traced}


async def test_a_save_is_one_statement_whatever_the_key_count(
    tmp_path: Path, traced: list[tuple[int, str]]
) -> None:
    """A save runs exactly one SQL statement, at 10 keys and at 5,000 keys alike."""
    path = tmp_path / "m.db"
    async with SQLiteStore(path) as store:
        memory = AgentMemory("agent", store)
        for n, agent in ((10, "small"), (5_000, "large")):
            _bulk_fill(path, agent, n)
            memory = AgentMemory(agent, store)
            before = len(traced)
            for i in range(20):
                await memory.save(f"key-{i * 37 % n:06d}", {"i": i})
            # sqlite reports the nested pragma_data_version read as "-- PRAGMA ..."
            top_level = [sql for _, sql in traced[before:] if not sql.startswith("--")]
            assert len(top_level) == 20
            assert all(sql.lstrip().startswith("INSERT INTO heddle_memory") for sql in top_level)


def test_statements_reach_rows_through_the_primary_key_index(tmp_path: Path) -> None:
    """The query plans of get, delete and ranged keys search the index; none scans the table."""

    async def create() -> None:
        async with SQLiteStore(tmp_path / "m.db"):
            pass

    asyncio.run(create())
    conn = sqlite3.connect(tmp_path / "m.db")
    for sql, params in (
        (SELECT_SQL, ("a", "k")),
        (DELETE_SQL, ("a", "k")),
        (KEYS_RANGE_SQL, ("a", "p", "q")),
        (UPSERT_SQL, ("a", "k", "1", None, 0)),
    ):
        plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "SCAN heddle_memory" not in plan, plan
        if sql is not UPSERT_SQL:
            assert "SEARCH heddle_memory USING" in plan, plan
    conn.close()


async def test_pages_written_per_save_do_not_grow_with_the_key_count(tmp_path: Path) -> None:
    """Counting WAL frames: a save at 5,000 keys writes about as many pages as at 10 keys,
    and a handful in absolute terms (rewriting 5,000 keys would take ~180 pages)."""
    path = tmp_path / "m.db"
    per_save = {}
    async with SQLiteStore(path) as store:
        for n, agent in ((10, "small"), (5_000, "large")):
            _bulk_fill(path, agent, n)
            memory = AgentMemory(agent, store)
            _empty_wal(path)
            for i in range(50):
                await memory.save(f"key-{i * 97 % n:06d}", {"note": "y" * 100, "i": i})
            per_save[n] = _wal_frames(path) / 50
    assert per_save[5_000] <= 2 * per_save[10] + 1
    assert per_save[5_000] <= 4


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        ("a", "b"),
        ("run-1/", "run-10"),
        ("x\U0010ffff", "y"),
        ("\U0010ffff", None),
        ("\ud7ff", "\ue000"),
    ],
)
def test_prefix_upper_bound_is_the_next_string_after_all_extensions(
    prefix: str, bound: str | None
) -> None:
    """The exclusive bound increments the last code point, skipping surrogates, carrying over."""
    assert prefix_upper_bound(prefix) == bound


_KEY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=4)


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(_KEY_TEXT, max_size=12), prefix=_KEY_TEXT)
def test_prefix_queries_match_str_startswith(keys: set[str], prefix: str) -> None:
    """keys(prefix) in SQLite returns exactly the sorted keys for which key.startswith(prefix)."""
    with tempfile.TemporaryDirectory() as tmp:

        async def run() -> list[str]:
            async with SQLiteStore(Path(tmp) / "m.db") as store:
                for key in keys:
                    await store.put("agent", key, "1", None)
                return await store.keys("agent", prefix)

        assert asyncio.run(run()) == sorted(k for k in keys if k.startswith(prefix))


async def test_a_file_that_is_not_a_database_raises_corrupt_store_error_and_is_kept(
    tmp_path: Path,
) -> None:
    """Garbage at the store's path fails loads and saves with CorruptStoreError naming it,
    and the file's bytes are left exactly as they were."""
    path = tmp_path / "memory.db"
    garbage = b"this is not an SQLite database\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(CorruptStoreError):
        async with SQLiteStore(path):
            pass
    store = SQLiteStore(path)
    memory = AgentMemory("agent", store)
    for call in (lambda: memory.load("k"), lambda: memory.save("k", 1), memory.keys):
        with pytest.raises(CorruptStoreError) as caught:
            await call()
        assert caught.value.path == path
        assert str(path) in str(caught.value)
    await store.aclose()
    assert path.read_bytes() == garbage
    assert issubclass(CorruptStoreError, MemoryStoreError)


async def test_a_write_waits_for_another_writer_then_fails_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """A save blocked past the timeout by another connection's write raises MemoryStoreError."""
    path = tmp_path / "m.db"
    async with SQLiteStore(path) as setup:
        await setup.put("agent", "k", "1", None)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        async with SQLiteStore(path, timeout=0.05) as store:
            with pytest.raises(MemoryStoreError, match="locked") as caught:
                await store.put("agent", "k", "2", None)
            assert caught.value.path == path
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_many_stores_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Eight stores racing to create the same database file (WAL switch, table) all work."""
    path = tmp_path / "race" / "m.db"
    stores = [SQLiteStore(path) for _ in range(8)]
    await asyncio.gather(*(s.put("agent", f"k{i}", str(i), None) for i, s in enumerate(stores)))
    assert await stores[0].keys("agent") == [f"k{i}" for i in range(8)]
    for s in stores:
        await s.aclose()


async def test_the_database_path_may_be_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is taken from the current directory when the store is built."""
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sub/m.db")
    assert store.path == tmp_path / "sub" / "m.db"
    async with store:
        await store.put("agent", "k", "1", None)
    assert (tmp_path / "sub" / "m.db").is_file()
