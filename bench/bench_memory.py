"""Memory stores: saves/s and loads/s as an agent's key count grows, plus crash and race counts.

Compared, in one run, on the same values:

* the V2 design's store (``bench/_seed_memory_store.py``: flock, truncate and
  rewrite the whole JSON file per save, a per-process LRU cache);
* heddle's FileStore (same one-file-per-agent design, temp file + fsync +
  os.replace under a lock file);
* heddle's SQLiteStore through AgentMemory, at synchronous=NORMAL (the
  default) and FULL;
* bare ``sqlite3`` calls on one connection in a single-thread executor, WAL,
  with the same synchronous setting: the floor for any SQLite-backed store.

Each rate is the median of timed batches of sequential awaited calls on
random existing keys, the backends interleaved batch by batch; "vs bare" is
the median of the ratios of batches run side by side. The cross-process
table comes from real subprocesses: 4 writers saving distinct keys at once
(lost updates), and a writer SIGKILLed at a random moment that printed each
key after its save returned (acknowledged saves lost; whether the store can
still be read).

Run: ``python -m bench memory`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._seed_memory_store import SeedAgentMemory, SeedFileStore
from heddle.memory import AgentMemory, FileStore, SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
AGENT = "bench"
REPEATS = 7  # timed batches per backend and size (the slow, file-based stores)
FAST_REPEATS = 21  # for the SQLite rows, whose batches take a fraction of a second
KINDS = ("seed", "file", "sqlite")


def value_for(i: int) -> dict[str, Any]:
    """A typical small agent note (~110 bytes of JSON)."""
    return {"role": "assistant", "step": i, "content": f"note {i}: " + "lorem ipsum " * 6}


# -- prefilling an agent with n keys, directly in each store's format ---------------------


async def _prefill_sqlite(path: Path, n: int) -> None:
    async with SQLiteStore(path):  # creates the file and its table
        pass
    now = time.time_ns() // 1000
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO heddle_memory VALUES (?, ?, ?, NULL, ?, ?)",
            ((AGENT, f"key-{i}", json.dumps(value_for(i)), now, now) for i in range(n)),
        )
    conn.close()


def _prefill_file(base: Path, n: int) -> None:
    base.mkdir(parents=True, exist_ok=True)
    now = "2025-01-01T00:00:00+00:00"
    entries = {
        f"key-{i}": {"value": value_for(i), "metadata": None, "created_at": now, "updated_at": now}
        for i in range(n)
    }
    doc = {"format": 1, "generation": os.urandom(16).hex(), "agent_id": AGENT, "entries": entries}
    (base / f"{AGENT}.json").write_text(json.dumps(doc))


def _prefill_seed(base: Path, n: int) -> None:
    base.mkdir(parents=True, exist_ok=True)
    now = "2025-01-01T00:00:00"
    data = {f"key-{i}": {"value": value_for(i), "metadata": {}, "timestamp": now} for i in range(n)}
    (base / f"{AGENT}.json").write_text(json.dumps(data))


_BARE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv"
    " (agent_id TEXT, key TEXT, value TEXT, PRIMARY KEY (agent_id, key))"
)


class BareSQLite:
    """What a hand-written store would do: one connection, one thread, one statement per call."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.executor = ThreadPoolExecutor(1)
        self.conn = self.executor.submit(self._open, path, synchronous).result()

    @staticmethod
    def _open(path: Path, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(_BARE_SCHEMA)
        return conn

    def prefill(self, n: int) -> None:
        def fill() -> None:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                    ((AGENT, f"key-{i}", json.dumps(value_for(i))) for i in range(n)),
                )

        self.executor.submit(fill).result()

    def _save(self, key: str, text: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (AGENT, key, text))

    def _load(self, key: str) -> str | None:
        rows = self.conn.execute(
            "SELECT value FROM kv WHERE agent_id = ? AND key = ?", (AGENT, key)
        ).fetchall()
        return rows[0][0] if rows else None

    async def save(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        await asyncio.get_running_loop().run_in_executor(self.executor, self._save, key, text)

    async def load(self, key: str) -> Any:
        text = await asyncio.get_running_loop().run_in_executor(self.executor, self._load, key)
        return None if text is None else json.loads(text)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.conn.close)
        self.executor.shutdown()


# -- timing ----------------------------------------------------------------------------


@dataclass
class Speeds:
    saves: dict[int, float]  # existing keys -> median saves/s
    loads: float  # median loads/s at the largest size
    save_rates: list[float]  # per batch at the largest size, in round order


@dataclass
class _Backend:
    save: Callable[[str, Any], Awaitable[Any]]
    load: Callable[[str], Awaitable[Any]]
    batch: int
    rounds: int
    save_rates: list[float]
    load_rates: list[float]


async def _rate(op: Callable[[str], Awaitable[Any]], keys: list[str]) -> float:
    start = time.perf_counter()
    for key in keys:
        await op(key)
    return len(keys) / (time.perf_counter() - start)


def _save_one(save: Callable[[str, Any], Awaitable[Any]], key: str) -> Awaitable[Any]:
    return save(key, value_for(1))


async def _open_backend(name: str, tmp: Path, n: int, stack: AsyncExitStack) -> tuple[Any, Any]:
    """(save, load) of backend ``name`` over an agent prefilled with ``n`` keys."""
    if name == "seed":
        _prefill_seed(tmp / "seed", n)
        seed = SeedAgentMemory(AGENT, SeedFileStore(tmp / "seed"))
        return seed.save, seed.load
    if name == "file":
        _prefill_file(tmp / "files", n)
        files = await stack.enter_async_context(FileStore(tmp / "files"))
        memory = AgentMemory(AGENT, files)
        return memory.save, memory.load
    if name.startswith("sqlite-"):
        await _prefill_sqlite(tmp / "memory.db", n)
        synchronous: Any = name.removeprefix("sqlite-")
        store = await stack.enter_async_context(
            SQLiteStore(tmp / "memory.db", synchronous=synchronous)
        )
        memory = AgentMemory(AGENT, store)
        return memory.save, memory.load
    bare = BareSQLite(tmp / "bare.db", name.removeprefix("bare-"))
    bare.prefill(n)
    stack.push_async_callback(bare.aclose)
    return bare.save, bare.load


async def _measure_size(
    names: list[str], plan: dict[str, tuple[int, int]], tmp: Path, n: int, do_loads: bool
) -> dict[str, _Backend]:
    """Time every backend at ``n`` keys, interleaved: round r runs one batch of each backend
    that has rounds left (``plan``: name -> (batch, rounds)), rotating who goes first, so a
    burst of load on the machine hits them alike and batches of one round can be compared."""
    rng = random.Random(n)
    backends: dict[str, _Backend] = {}
    async with AsyncExitStack() as stack:
        for name in names:
            (tmp / name).mkdir()
            save, load = await _open_backend(name, tmp / name, n, stack)
            await save("warm-up", value_for(0))
            await load("warm-up")
            backends[name] = _Backend(save, load, *plan[name], [], [])
        for r in range(max(b.rounds for b in backends.values())):
            active = [name for name in names if r < backends[name].rounds]
            for name in active[r % len(active) :] + active[: r % len(active)]:
                b = backends[name]
                keys = [f"key-{rng.randrange(n)}" for _ in range(b.batch)]
                b.save_rates.append(await _rate(functools.partial(_save_one, b.save), keys))
                if do_loads:
                    keys = [f"key-{rng.randrange(n)}" for _ in range(b.batch)]
                    b.load_rates.append(await _rate(b.load, keys))
    return backends


def _bench(
    names: list[str], sizes: tuple[int, ...], plans: dict[int, dict[str, tuple[int, int]]]
) -> dict[str, Speeds]:
    speeds = {name: Speeds({}, 0.0, []) for name in names}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="heddle-bench-") as tmp:
            measured = asyncio.run(_measure_size(names, plans[n], Path(tmp), n, n == sizes[-1]))
        for name, b in measured.items():
            speeds[name].saves[n] = statistics.median(b.save_rates)
            speeds[name].save_rates = b.save_rates
            if b.load_rates:
                speeds[name].loads = statistics.median(b.load_rates)
    return speeds


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """The median, over rounds, of ours/theirs within the same round (same machine load)."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


# -- cross-process runs -------------------------------------------------------------------


def _child_command(kind: str, where: Path, mode: str, prefix: str, count: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.bench_memory",
        "--child",
        kind,
        str(where),
        mode,
        prefix,
        str(count),
    ]


def _spawn(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # a crashing writer is counted by its exit status
        text=True,
    )


def _read_back(kind: str, where: Path, keys: list[str]) -> tuple[int, bool]:
    """How many of ``keys`` load with their value, and whether the store could be read at all."""

    async def read() -> tuple[int, bool]:
        found = 0
        try:
            if kind == "seed":
                data = json.loads((where / f"{AGENT}.json").read_text())
                return sum(
                    1
                    for k in keys
                    if k in data and data[k]["value"] == value_for(int(k.rsplit("-", 1)[1]))
                ), True
            store = FileStore(where) if kind == "file" else SQLiteStore(where / "memory.db")
            async with store:
                memory = AgentMemory(AGENT, store)
                for k in keys:
                    if await memory.load(k) == value_for(int(k.rsplit("-", 1)[1])):
                        found += 1
            return found, True
        except Exception:
            return 0, False

    return asyncio.run(read())


def lost_update_run(kind: str, tmp: Path, writers: int, per_writer: int) -> tuple[int, int, int]:
    """``writers`` processes save distinct keys at once: (acknowledged saves, of them lost,
    writers that crashed)."""
    where = tmp / f"lost-{kind}"
    procs = [
        _spawn(_child_command(kind, where, "fill", f"w{w}", per_writer)) for w in range(writers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:  # release them together
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    acked: list[str] = []
    crashed = 0
    for w, p in enumerate(procs):
        out, _ = p.communicate(timeout=600)
        acked += [f"w{w}-{line}" for line in out.split()]
        crashed += p.returncode != 0
    found, _ = _read_back(kind, where, acked)
    return len(acked), len(acked) - found, crashed


def kill_run(
    kind: str, tmp: Path, prefill: int, rng: random.Random, delay: float
) -> tuple[int, int, bool]:
    """SIGKILL a saving process after ~``delay`` s: (acked saves, of them lost, store readable)."""
    where = tmp / f"kill-{kind}"
    if kind == "seed":
        _prefill_seed(where, prefill)
    elif kind == "file":
        _prefill_file(where, prefill)
    else:
        where.mkdir(parents=True, exist_ok=True)
        asyncio.run(_prefill_sqlite(where / "memory.db", prefill))
    proc = _spawn(_child_command(kind, where, "ack", "ack", 10**9))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(delay / 2, delay))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    # A line without its newline may have been cut by the kill: not an acknowledgement.
    acked = [f"ack-{line}" for line in out.split("\n")[:-1] if line.strip()]
    keys = acked + [f"key-{i}" for i in range(prefill)]
    found, readable = _read_back(kind, where, keys)
    return len(acked), len(keys) - found, readable


async def _child(kind: str, where: Path, mode: str, prefix: str, count: int) -> None:
    if kind == "seed":
        seed = SeedAgentMemory(AGENT, SeedFileStore(where))
        save: Callable[[str, Any], Awaitable[None]] = seed.save
        store = None
    else:
        store = FileStore(where) if kind == "file" else SQLiteStore(where / "memory.db")
        save = AgentMemory(AGENT, store).save
    print("ready", flush=True)
    if mode == "fill":
        sys.stdin.readline()
    for i in range(count):
        key = f"{prefix}-{i}"
        await save(key, value_for(i))
        print(i, flush=True)  # acknowledged: save() returned
    if store is not None:
        await store.aclose()


# -- the report -----------------------------------------------------------------------------


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def main(quick: bool = False) -> str:
    """Run the memory benchmark and return its Markdown tables."""
    small, large = (100, 300) if quick else (1_000, 10_000)
    sizes = (small, large)
    repeats, fast_repeats = (5, 5) if quick else (REPEATS, FAST_REPEATS)
    slow_batch = {small: (3, repeats), large: (2, repeats)}
    if not quick:
        slow_batch = {small: (20, repeats), large: (5, repeats)}
    fast = (50, fast_repeats) if quick else (300, fast_repeats)
    fast_batch = {small: fast, large: fast}
    rows = [
        ("seed", "document's store (truncate + rewrite, fcntl)", slow_batch),
        ("file", "FileStore (temp + fsync + os.replace)", slow_batch),
        ("sqlite-NORMAL", "SQLiteStore via AgentMemory, synchronous=NORMAL", fast_batch),
        ("bare-NORMAL", "bare sqlite3 in a thread, WAL, synchronous=NORMAL", fast_batch),
        ("sqlite-FULL", "SQLiteStore via AgentMemory, synchronous=FULL", fast_batch),
        ("bare-FULL", "bare sqlite3 in a thread, WAL, synchronous=FULL", fast_batch),
    ]
    speeds = _bench(
        [name for name, _, _ in rows],
        sizes,
        {n: {name: batch[n] for name, _, batch in rows} for n in sizes},
    )
    seed_large = speeds["seed"].saves[large]
    lines = [
        f"| store | saves/s @ {small:,} keys | saves/s @ {large:,} keys | loads/s @ {large:,} keys "
        f"| saves vs document's @ {large:,} | saves vs bare sqlite3 @ {large:,} "
        f"(median of {fast_repeats} paired batches) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label, _ in rows:
        s = speeds[name]
        versus_seed = f"{s.saves[large] / seed_large:,.0f}x"
        bare = {"sqlite-NORMAL": "bare-NORMAL", "sqlite-FULL": "bare-FULL"}.get(name)
        versus_bare = ""
        if bare:
            versus_bare = f"{paired_ratio(s.save_rates, speeds[bare].save_rates):.2f}x"
        lines.append(
            f"| {label} | {_fmt(s.saves[small])} | {_fmt(s.saves[large])} | {_fmt(s.loads)} "
            f"| {versus_seed} | {versus_bare} |"
        )

    writers, per_writer = (2, 5) if quick else (4, 200)
    kills, prefill, delay = (1, 100, 0.2) if quick else (5, 2_000, 1.5)
    rng = random.Random(4)
    lines += [
        "",
        f"| store | lost-update run ({writers} processes at once): acknowledged saves lost "
        f"| writers that crashed | kill runs ({kills}): acknowledged saves lost "
        f"(incl. {prefill:,} prefilled keys) | kill runs leaving an unreadable store |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {"seed": "document's store", "file": "FileStore", "sqlite": "SQLiteStore (NORMAL)"}
    for kind in KINDS:
        with tempfile.TemporaryDirectory(prefix="heddle-bench-") as tmp:
            saved, lost_saves, crashed = lost_update_run(kind, Path(tmp), writers, per_writer)
        acked = lost = unreadable = 0
        for k in range(kills):
            with tempfile.TemporaryDirectory(prefix="heddle-bench-") as tmp:
                a, lo, readable = kill_run(kind, Path(tmp) / str(k), prefill, rng, delay)
            acked, lost, unreadable = acked + a + prefill, lost + lo, unreadable + (not readable)
        lines.append(
            f"| {labels[kind]} | {lost_saves:,} of {saved:,} | {crashed} of {writers} "
            f"| {lost:,} of {acked:,} | {unreadable} of {kills} |"
        )
    lines += [
        "",
        f"Rates are medians of {repeats} batches (document's store, FileStore) or "
        f"{fast_repeats} batches of {fast[0]} calls (SQLite rows); "
        f"Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, where, mode, prefix, count = sys.argv[2:7]
        asyncio.run(_child(kind, Path(where), mode, prefix, int(count)))
    else:
        print(main(quick="--quick" in sys.argv))
