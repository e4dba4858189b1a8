"""Durable cost: a chain with and without a checkpointer, against SQLite itself and LangGraph.

Every heddle node's result is committed (SQLite, WAL, ``synchronous=NORMAL``)
before its dependents start, so a chain pays one commit per step. The floors
are the same commit done directly: on the calling thread, and through one
worker thread as a non-blocking store must. LangGraph runs the same chain
with its ``AsyncSqliteSaver``, ``durability="sync"`` (each superstep
persisted before the next: heddle's guarantee) and ``"async"`` (its default).
Database files live in a temporary directory on the same disk as /tmp.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench import _langgraph as lg
from bench._util import NOT_INSTALLED, median_timed, table
from bench.bench_engine import NO_RETRY, chain, fan_out
from heddle import WorkflowExecutor, WorkflowGraph

HAS_CHECKPOINTER = "checkpointer" in inspect.signature(WorkflowExecutor.__init__).parameters

Timed = Callable[[], Coroutine[Any, Any, float]]


def heddle_timed(graph: WorkflowGraph, path: Path | None) -> Timed:
    """Time one run of ``graph``; the checkpointer (if any) is opened by an untimed warm-up run."""
    graph.validate()
    warm = WorkflowGraph("warm-up").add_node("one", lambda task: task)

    async def run() -> float:
        if path is None:
            executor = WorkflowExecutor(retry=NO_RETRY)
        else:
            executor = WorkflowExecutor(retry=NO_RETRY, checkpointer=path)
        async with executor:
            await executor.execute(warm)
            start = time.perf_counter()
            result = await executor.execute(graph)
            elapsed = time.perf_counter() - start
        assert result.ok, result
        return elapsed

    return run


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS step (run INTEGER, node INTEGER, result TEXT)")
    return conn


def sqlite_timed(n: int, path: Path, thread: bool) -> Timed:
    """``n`` single-row commits in a row, on this thread or each through a worker thread."""
    runs = iter(range(10**9))

    async def run() -> float:
        conn = _connect(path)
        run_id = next(runs)

        def commit(i: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO step VALUES (?, ?, ?)", (run_id, i, '{"content": null}'))
            conn.execute("COMMIT")

        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for i in range(n):
            if thread:
                await loop.run_in_executor(None, commit, i)
            else:
                commit(i)
        elapsed = time.perf_counter() - start
        conn.close()
        return elapsed

    return run


def main(quick: bool = False) -> str:
    n = 20 if quick else 1_000
    repeats = 1 if quick else 5
    rows: list[list[object]] = []

    def add(label: str, seconds: float | str, plain: float | None) -> None:
        if isinstance(seconds, str):
            rows.append([label, seconds, "-", "-"])
            return
        extra = (seconds - plain) / n * 1e6 if plain is not None else "-"
        rows.append([label, seconds, seconds / n * 1e6, extra])

    with tempfile.TemporaryDirectory(prefix="heddle-bench-") as tmp:
        base = Path(tmp)
        plain = median_timed(heddle_timed(chain(n), None), repeats)
        add(f"heddle chain {n:,}, no checkpointer", plain, None)
        if HAS_CHECKPOINTER:
            durable = median_timed(heddle_timed(chain(n), base / "heddle.db"), repeats)
            add(f"heddle chain {n:,}, checkpointer", durable, plain)
            fan_plain = median_timed(heddle_timed(fan_out(n), None), repeats)
            fan = median_timed(heddle_timed(fan_out(n), base / "fan.db"), repeats)
            add(f"heddle fan-out {n:,}, no checkpointer", fan_plain, None)
            add(f"heddle fan-out {n:,}, checkpointer (group commit)", fan, fan_plain)
        else:
            add(f"heddle chain {n:,}, checkpointer", "checkpointer not available yet", None)
        add(
            f"SQLite: {n:,} commits on the calling thread",
            median_timed(sqlite_timed(n, base / "floor.db", thread=False), repeats),
            0.0,
        )
        add(
            f"SQLite: {n:,} commits, each through a worker thread",
            median_timed(sqlite_timed(n, base / "floor.db", thread=True), repeats),
            0.0,
        )
        lg_plain_run = lg.chain(n)
        if lg_plain_run is None:
            add(f"LangGraph chain {n:,}", NOT_INSTALLED, None)
        else:
            lg_plain = median_timed(_timed(lg_plain_run), repeats)
            add(f"LangGraph chain {n:,}, no checkpointer", lg_plain, None)
            for mode in ("sync", "async"):
                run = lg.durable_chain(n, base / f"lg-{mode}.db", mode)
                label = f'LangGraph chain {n:,}, AsyncSqliteSaver, durability="{mode}"'
                if run is None:
                    add(label, "langgraph-checkpoint-sqlite not installed", None)
                else:
                    add(label, median_timed(run, repeats), lg_plain)
    text = f"Durable cost, medians of {repeats} runs (SQLite WAL, synchronous=NORMAL):\n\n" + table(
        ["run", "seconds", "µs per node", "durable cost µs per node"], rows
    )
    durable_row = next((r for r in rows if r[0] == f"heddle chain {n:,}, checkpointer"), None)
    if durable_row is not None and isinstance(durable_row[2], float):
        per_step = durable_row[2] / 1000
        verdict = "met" if per_step <= 0.3 else "**missed**"
        text += (
            f"\n\nTarget: a durable step at most 0.3 ms: {per_step:.3f} ms per node of the "
            f"durable chain: {verdict}."
        )
    return text


def _timed(run: Callable[[], Any]) -> Timed:
    async def timed() -> float:
        start = time.perf_counter()
        await run()
        return time.perf_counter() - start

    return timed
