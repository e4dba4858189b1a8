"""AgentMemory's API on every store: save, load, entry, delete, keys, errors, lifecycle."""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from heddle.core.errors import ConfigurationError, HeddleError
from heddle.memory import (
    AgentMemory,
    InMemoryStore,
    MemoryStore,
    MemoryStoreError,
    SQLiteStore,
    StoreClosedError,
    default_store_path,
)
from heddle.memory._validation import MAX_NESTING

JSON_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**70),
    1.5,
    "",
    "naïve ☃ \U0001f600",
    [],
    [1, [2, [3]]],
    {},
    {"nested": {"list": [1, "two", None], "flag": False}},
]


async def test_load_returns_what_save_stored(store: MemoryStore) -> None:
    """Every kind of JSON value comes back equal from every store."""
    memory = AgentMemory("agent", store)
    for i, value in enumerate(JSON_VALUES):
        await memory.save(f"k{i}", value)
    fresh = AgentMemory("agent", store)  # empty cache: read from the store
    for i, value in enumerate(JSON_VALUES):
        assert await fresh.load(f"k{i}") == value
        assert await memory.load(f"k{i}") == value


async def test_tuples_come_back_as_lists(store: MemoryStore) -> None:
    """A tuple is saved as a JSON array, as documented."""
    memory = AgentMemory("agent", store)
    await memory.save("t", (1, (2, 3)))
    assert await memory.load("t") == [1, [2, 3]]


async def test_load_of_a_missing_key_returns_the_default(store: MemoryStore) -> None:
    """A key never saved loads as None, or as the default given."""
    memory = AgentMemory("agent", store)
    assert await memory.load("missing") is None
    assert await memory.load("missing", default=[]) == []
    assert await memory.entry("missing") is None


async def test_save_replaces_the_previous_value(store: MemoryStore) -> None:
    """A second save of a key overwrites the first."""
    memory = AgentMemory("agent", store)
    await memory.save("k", "first")
    await memory.save("k", {"second": 2})
    assert await memory.load("k") == {"second": 2}
    assert await AgentMemory("agent", store).load("k") == {"second": 2}


async def test_entry_carries_metadata_and_utc_timestamps(store: MemoryStore) -> None:
    """entry() gives the value, the metadata dict and timezone-aware UTC timestamps."""
    memory = AgentMemory("agent", store)
    await memory.save("k", [1], metadata={"source": "search", "score": 0.5})
    entry = await memory.entry("k")
    assert entry is not None
    assert (entry.key, entry.value, entry.metadata) == (
        "k",
        [1],
        {"source": "search", "score": 0.5},
    )
    assert entry.created_at.utcoffset() == timedelta(0)
    assert entry.created_at.tzinfo is not None
    assert entry.updated_at == entry.created_at
    assert abs(datetime.now(UTC) - entry.created_at) < timedelta(minutes=1)


async def test_metadata_defaults_to_an_empty_dict(store: MemoryStore) -> None:
    """An entry saved without metadata reports {}."""
    memory = AgentMemory("agent", store)
    await memory.save("k", 1)
    entry = await AgentMemory("agent", store).entry("k")
    assert entry is not None
    assert entry.metadata == {}


async def test_overwrite_keeps_created_at_and_moves_updated_at(store: MemoryStore) -> None:
    """created_at is the first save, updated_at the latest (never earlier)."""
    memory = AgentMemory("agent", store)
    await memory.save("k", 1)
    first = await memory.entry("k")
    await asyncio.sleep(0.002)
    await memory.save("k", 2, metadata={"v": 2})
    second = await AgentMemory("agent", store).entry("k")
    assert first is not None
    assert second is not None
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert second.metadata == {"v": 2}


async def test_entry_values_are_fresh_objects(store: MemoryStore) -> None:
    """Mutating a loaded value does not change what the next load returns (cache included)."""
    memory = AgentMemory("agent", store)
    original = {"items": [1, 2]}
    await memory.save("k", original)
    original["items"].append(3)  # after save: not stored
    loaded = await memory.load("k")
    loaded["items"].append(99)
    assert await memory.load("k") == {"items": [1, 2]}


@pytest.mark.parametrize(
    "bad",
    [object(), {1, 2}, b"bytes", float("nan"), math.inf, {"a": -math.inf}, {1: "int key"}],
    ids=["object", "set", "bytes", "nan", "inf", "nested-inf", "int-key"],
)
async def test_a_value_json_cannot_hold_raises_type_error_and_writes_nothing(
    store: MemoryStore, bad: Any
) -> None:
    """A non-JSON value is refused before anything is written: the old value stays."""
    memory = AgentMemory("agent", store)
    await memory.save("k", "old")
    with pytest.raises(TypeError, match="value"):
        await memory.save("k", bad)
    with pytest.raises(TypeError):
        await memory.save("new", [1, {"x": bad}])
    assert await AgentMemory("agent", store).load("k") == "old"
    assert await memory.keys() == ["k"]


async def test_a_circular_value_raises_type_error(store: MemoryStore) -> None:
    """A list that contains itself is not JSON."""
    memory = AgentMemory("agent", store)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="value"):
        await memory.save("k", loop)
    assert await memory.keys() == []


def _nested(kind: str, levels: int, inner: Any = 0) -> Any:
    """``inner`` inside ``levels`` lists or dicts, each in the next (``[[0]]`` for list, 2)."""
    value = inner
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


def _nested_text(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("container", ["list", "dict"])
@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 1_000, 100_000])
async def test_a_value_nested_too_deeply_raises_type_error_and_writes_nothing(
    store: MemoryStore, container: str, levels: int
) -> None:
    """A value or metadata nested past the limit (or past Python's recursion limit) is refused
    with the documented TypeError, not a RecursionError, before anything is written."""
    memory = AgentMemory("agent", store)
    await memory.save("k", "old")
    deep = _nested(container, levels)
    with pytest.raises(TypeError, match="value is not JSON-serialisable: nested too deeply"):
        await memory.save("k", deep)
    with pytest.raises(TypeError, match="metadata is not JSON-serialisable: nested too deeply"):
        await memory.save("new", 1, metadata={"deep": deep})
    assert await AgentMemory("agent", store).load("k") == "old"
    assert await memory.keys() == ["k"]


async def test_a_value_at_the_nesting_limit_is_stored_and_loaded_back(store: MemoryStore) -> None:
    """MAX_NESTING levels of lists and dicts round-trip through every store."""
    memory = AgentMemory("agent", store, max_cache_size=0)
    value = _nested("list", MAX_NESTING - 1, inner={"k": None})
    await memory.save("k", value, metadata=_nested("dict", MAX_NESTING))
    entry = await memory.entry("k")
    assert entry is not None
    assert (entry.value, entry.metadata) == (value, _nested("dict", MAX_NESTING))


async def test_a_non_str_key_deep_inside_a_value_is_refused(store: MemoryStore) -> None:
    """The check for non-str dict keys reaches every level, up to the nesting limit."""
    memory = AgentMemory("agent", store)
    with pytest.raises(TypeError, match="dict key 1 is not a str"):
        await memory.save("k", _nested("list", MAX_NESTING - 1, inner={1: "int key"}))
    assert await memory.keys() == []


@pytest.mark.parametrize("kind", ["sqlite", "memory", "redis"], indirect=True)
async def test_reading_a_value_stored_too_deeply_nested_raises_memory_store_error(
    store: MemoryStore,
) -> None:
    """JSON text that another program stored, nested deeper than Python's parser can follow,
    makes load() and entry() raise MemoryStoreError naming the key, not RecursionError."""
    deep = _nested_text(100_000)
    await store.put("agent", "deep-value", deep, None)
    await store.put("agent", "deep-metadata", "1", '{"m":' + deep + "}")
    memory = AgentMemory("agent", store)
    for call in (lambda: memory.load("deep-value"), lambda: memory.entry("deep-value")):
        with pytest.raises(
            MemoryStoreError, match=r"value of key 'deep-value'.* nested too deeply"
        ):
            await call()
    assert await memory.load("deep-metadata") == 1
    with pytest.raises(MemoryStoreError, match="metadata of key 'deep-metadata'"):
        await memory.entry("deep-metadata")
    await memory.save("deep-value", "replaced")
    assert await memory.load("deep-value") == "replaced"


@pytest.mark.parametrize("bad", [["list"], "text", {"x": object()}, {2: "int key"}])
async def test_bad_metadata_raises_type_error_and_writes_nothing(
    store: MemoryStore, bad: Any
) -> None:
    """Metadata must be a dict of JSON values (or None)."""
    memory = AgentMemory("agent", store)
    with pytest.raises(TypeError, match="metadata"):
        await memory.save("k", 1, metadata=bad)
    assert await memory.keys() == []


async def test_keys_must_be_valid_strings(store: MemoryStore) -> None:
    """A non-str key is a TypeError; a lone surrogate is a ConfigurationError (ValueError)."""
    memory = AgentMemory("agent", store)
    with pytest.raises(TypeError, match="str"):
        await memory.save(1, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        await memory.load("bad\ud800")
    assert caught.value.parameter == "key"
    assert isinstance(caught.value, ValueError)


async def test_any_unicode_key_works(store: MemoryStore) -> None:
    """Empty, spaced, slashed, NUL and astral-plane keys are all ordinary keys."""
    memory = AgentMemory("agent", store)
    keys = ["", " ", "a/b/../c", "nul\x00byte", "ключ", "\U0010ffff", "é"]
    for i, key in enumerate(keys):
        await memory.save(key, i)
    for i, key in enumerate(keys):
        assert await AgentMemory("agent", store).load(key) == i
    assert await memory.keys() == sorted(keys)


async def test_delete_reports_whether_the_key_existed(store: MemoryStore) -> None:
    """delete() removes the key and returns True, then False."""
    memory = AgentMemory("agent", store)
    await memory.save("k", 1)
    assert await memory.delete("k") is True
    assert await memory.delete("k") is False
    assert await memory.load("k") is None
    assert await AgentMemory("agent", store).load("k") is None
    assert await AgentMemory("never-saved", store).delete("k") is False


async def test_keys_lists_sorted_and_filters_by_prefix(store: MemoryStore) -> None:
    """keys() is sorted; keys(prefix) keeps exactly those starting with it."""
    memory = AgentMemory("agent", store)
    for key in ["run-2/b", "run-1/a", "run-10/c", "run-1/b", "other", "run-1"]:
        await memory.save(key, key)
    assert await memory.keys() == ["other", "run-1", "run-1/a", "run-1/b", "run-10/c", "run-2/b"]
    assert await memory.keys("run-1/") == ["run-1/a", "run-1/b"]
    assert await memory.keys("run-1") == ["run-1", "run-1/a", "run-1/b", "run-10/c"]
    assert await memory.keys("zzz") == []
    assert await memory.keys("") == await memory.keys()


async def test_agents_do_not_see_each_others_keys(store: MemoryStore) -> None:
    """The same key under two agents holds two values."""
    alice, bob = AgentMemory("alice", store), AgentMemory("bob", store)
    await alice.save("k", "a")
    await bob.save("k", "b")
    assert (await alice.load("k"), await bob.load("k")) == ("a", "b")
    await alice.delete("k")
    assert await bob.keys() == ["k"]
    assert await alice.keys() == []


async def test_concurrent_saves_from_one_process_all_land(store: MemoryStore) -> None:
    """200 saves started at once on one memory all end up stored."""
    memory = AgentMemory("agent", store)
    await asyncio.gather(*(memory.save(f"k{i}", i) for i in range(200)))
    fresh = AgentMemory("agent", store)
    assert await fresh.keys() == sorted(f"k{i}" for i in range(200))
    assert [await fresh.load(f"k{i}") for i in range(200)] == list(range(200))


async def test_data_survives_closing_and_reopening(
    persistent_kind: str, tmp_path: Path, make_store: Callable[[str, Path], MemoryStore]
) -> None:
    """A persistent store gives back, after reopening, what was saved before closing."""
    async with make_store(persistent_kind, tmp_path) as store:
        await AgentMemory("agent", store).save("k", {"kept": True}, metadata={"m": 1})
    async with make_store(persistent_kind, tmp_path) as store:
        entry = await AgentMemory("agent", store).entry("k")
    assert entry is not None
    assert (entry.value, entry.metadata) == ({"kept": True}, {"m": 1})


async def test_default_store_is_sqlite_under_heddle_home() -> None:
    """With no store, AgentMemory uses SQLite at $HEDDLE_HOME/memory.db."""
    home = Path(os.environ["HEDDLE_HOME"])
    async with AgentMemory("agent") as memory:
        assert isinstance(memory.store, SQLiteStore)
        await memory.save("k", 1)
    assert default_store_path() == home / "memory.db"
    assert await asyncio.to_thread((home / "memory.db").is_file)
    async with AgentMemory("agent") as again:
        assert await again.load("k") == 1


async def test_default_store_is_under_dot_heddle_without_heddle_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without HEDDLE_HOME the default store is ./.heddle/memory.db."""
    monkeypatch.delenv("HEDDLE_HOME")
    monkeypatch.chdir(tmp_path)
    async with AgentMemory("agent") as memory:
        await memory.save("k", 1)
    assert await asyncio.to_thread((tmp_path / ".heddle" / "memory.db").is_file)


async def test_constructing_a_memory_touches_no_file() -> None:
    """The default store is opened on first use, not by the constructor."""
    home = Path(os.environ["HEDDLE_HOME"])
    memory = AgentMemory("agent")
    assert not await asyncio.to_thread(home.exists)
    await memory.aclose()
    assert not await asyncio.to_thread(home.exists)


async def test_aclose_closes_an_owned_store_and_is_idempotent() -> None:
    """A memory's own default store is closed with it; calls after aclose() fail clearly."""
    memory = AgentMemory("agent")
    await memory.save("k", 1)
    await memory.aclose()
    await memory.aclose()
    assert isinstance(memory.store, SQLiteStore)
    assert memory.store.closed
    with pytest.raises(StoreClosedError, match="closed"):
        await memory.load("k")
    with pytest.raises(StoreClosedError):
        await memory.save("k", 2)


async def test_aclose_leaves_a_shared_store_open(store: MemoryStore) -> None:
    """Closing a memory does not close a store that was passed in."""
    async with AgentMemory("one", store) as memory:
        await memory.save("k", 1)
    assert await AgentMemory("one", store).load("k") == 1


async def test_a_closed_store_refuses_calls_and_aclose_is_idempotent(
    kind: str, tmp_path: Path, make_store: Callable[[str, Path], MemoryStore]
) -> None:
    """After aclose() (twice is fine) every store call raises StoreClosedError."""
    store = make_store(kind, tmp_path)
    await store.put("agent", "k", "1", None)
    await store.aclose()
    await store.aclose()
    calls: list[tuple[str, tuple[object, ...]]] = [
        ("get", ("agent", "k")),
        ("put", ("agent", "k", "1", None)),
        ("delete", ("agent", "k")),
        ("keys", ("agent",)),
    ]
    for method, args in calls:
        with pytest.raises(StoreClosedError):
            await getattr(store, method)(*args)
    assert issubclass(StoreClosedError, HeddleError)
    assert issubclass(StoreClosedError, RuntimeError)


async def test_aclose_stops_the_store_thread(
    persistent_kind: str, tmp_path: Path, make_store: Callable[[str, Path], MemoryStore]
) -> None:
    """A thread-backed store leaves no thread behind once closed."""
    before = set(threading.enumerate())
    store = make_store(persistent_kind, tmp_path)
    await store.put("agent", "k", "1", None)
    (thread,) = set(threading.enumerate()) - before
    assert thread.name.startswith("heddle-")
    await store.aclose()
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()


def test_a_store_serves_several_event_loops_in_turn(
    persistent_kind: str, tmp_path: Path, make_store: Callable[[str, Path], MemoryStore]
) -> None:
    """One store object works across asyncio.run() calls (its thread is not loop-bound)."""
    store = make_store(persistent_kind, tmp_path)
    memory = AgentMemory("agent", store)
    asyncio.run(memory.save("k", 1))
    assert asyncio.run(memory.load("k")) == 1
    asyncio.run(store.aclose())


async def test_a_cancelled_save_leaves_the_store_usable(store: MemoryStore) -> None:
    """Cancelling a save in flight leaves the old or the new value, and the store working."""
    memory = AgentMemory("agent", store)
    await memory.save("k", "old")
    task = asyncio.create_task(memory.save("k", "new"))
    await asyncio.sleep(0)
    task.cancel()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    assert outcome is None or isinstance(outcome, asyncio.CancelledError)
    assert await memory.load("k") in ("old", "new")
    await memory.save("k", "after")
    assert await AgentMemory("agent", store).load("k") == "after"


def test_store_argument_must_be_a_store(tmp_path: Path) -> None:
    """Passing a path instead of a store fails at construction with a TypeError."""
    with pytest.raises(TypeError, match="MemoryStore"):
        AgentMemory("agent", str(tmp_path / "memory.db"))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [-1, 1.5, True, "10"])
def test_max_cache_size_must_be_a_non_negative_int(size: Any) -> None:
    """A bad max_cache_size is a ConfigurationError naming the parameter."""
    with pytest.raises(ConfigurationError) as caught:
        AgentMemory("agent", InMemoryStore(), max_cache_size=size)
    assert caught.value.parameter == "max_cache_size"


def test_sqlite_store_rejects_bad_settings() -> None:
    """synchronous other than NORMAL/FULL, or a negative timeout, is refused up front."""
    with pytest.raises(ConfigurationError) as caught:
        SQLiteStore(synchronous="OFF")  # type: ignore[arg-type]
    assert caught.value.parameter == "synchronous"
    with pytest.raises(ConfigurationError):
        SQLiteStore(timeout=-1)


async def test_reprs_name_the_agent_and_the_file(tmp_path: Path) -> None:
    """repr() shows the agent id and where the data lives."""
    async with SQLiteStore(tmp_path / "m.db") as store:
        memory = AgentMemory("agent", store)
        assert "agent" in repr(memory)
        assert "m.db" in repr(memory)
    assert "closed" in repr(store)
    assert "InMemoryStore" in repr(InMemoryStore())
