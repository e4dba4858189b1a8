"""Several real processes on one store: no lost updates, no lost acknowledged saves on SIGKILL,
no stale cache."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heddle.memory import AgentMemory, MemoryStore

WORKER = Path(__file__).with_name("_worker.py")
StoreFactory = Callable[[str, Path], MemoryStore]


def value_for(prefix: str, i: int) -> dict[str, Any]:
    """The value tests/memory/_worker.py saves under f"{prefix}-{i}"."""
    return {"writer": prefix, "i": i, "pad": "x" * 60}


def worker(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], text=True, stderr=subprocess.PIPE, **kwargs
    )


def acknowledged(output: str) -> list[int]:
    """The indexes a worker printed in full (a line cut by a kill has no newline)."""
    return [int(line) for line in output.split("\n")[:-1] if line.strip().isdigit()]


async def _missing(store: MemoryStore, agent: str, expected: dict[str, Any]) -> list[str]:
    memory = AgentMemory(agent, store, max_cache_size=0)
    return [key for key, value in expected.items() if await memory.load(key) != value]


@pytest.mark.slow
async def test_four_processes_saving_distinct_keys_lose_nothing(
    persistent_kind: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """4 processes released together, each saving its own keys to one agent: every key lands."""
    per_writer = 150 if persistent_kind == "sqlite" else 40
    where, pipes = str(tmp_path), {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    procs = [
        worker("fill", persistent_kind, where, "shared", f"w{w}", str(per_writer), **pipes)
        for w in range(4)
    ]
    for p in procs:
        assert p.stdout is not None
        assert await asyncio.to_thread(p.stdout.readline) == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert acknowledged(out) == list(range(per_writer))
    expected = {f"w{w}-{i}": value_for(f"w{w}", i) for w in range(4) for i in range(per_writer)}
    async with make_store(persistent_kind, tmp_path) as store:
        assert await _missing(store, "shared", expected) == []
        assert await AgentMemory("shared", store).keys() == sorted(expected)


def _worker_writing_to(path: Path, *args: str) -> subprocess.Popen[str]:
    with open(path, "w") as out:
        return worker(*args, "-1", stdout=out)


def _wait_for_first_save(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.read_text().startswith("ready\n0\n"):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the worker acknowledged no save"
        time.sleep(0.002)


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
async def test_sigkill_mid_save_never_loses_an_acknowledged_save(
    persistent_kind: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """A writer SIGKILLed at random moments: every save it acknowledged loads afterwards, the
    prefilled keys are intact and the store stays readable and writable."""
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    prefilled = {f"old-{i}": value_for("old", i) for i in range(300)}  # a sizeable agent file
    async with make_store(persistent_kind, tmp_path) as store:
        memory = AgentMemory("victim", store)
        for key, value in prefilled.items():
            await memory.save(key, value)
    for run in range(4):
        acks = tmp_path / f"acks-{run}.txt"
        proc = _worker_writing_to(acks, "ack", persistent_kind, str(tmp_path), "victim", f"r{run}")
        await asyncio.to_thread(_wait_for_first_save, acks, proc)  # it is saving now
        delay = rng.uniform(0.0, 0.3)  # FileStore: ~30% of kills land mid-write
        await asyncio.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.communicate, timeout=30)
        done = acknowledged(acks.read_text().removeprefix("ready\n"))
        assert done[:1] == [0]
        expected = dict(prefilled) | {f"r{run}-{i}": value_for(f"r{run}", i) for i in done}
        if persistent_kind == "sqlite":
            assert _integrity(tmp_path / "memory.db") == "ok"
        async with make_store(persistent_kind, tmp_path) as store:
            missing = await _missing(store, "victim", expected)
            assert missing == [], f"seed {seed}, run {run}, killed after {delay:.3f}s"
            await AgentMemory("victim", store).save(f"after-{run}", run)  # still writable


@pytest.mark.slow
async def test_a_cached_value_is_never_served_after_another_process_saved(
    persistent_kind: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """A value cached in this process is replaced by the one another process saved since."""
    async with make_store(persistent_kind, tmp_path) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", "mine")
        assert await memory.load("k") == "mine"
        assert memory.cache_info().hits == 1
        for theirs in ("theirs-1", "theirs-2"):  # same size, milliseconds apart
            proc = worker("set", persistent_kind, str(tmp_path), "agent", "k", json.dumps(theirs))
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 0, err
            assert await memory.load("k") == theirs
        assert memory.cache_info().hits == 1
