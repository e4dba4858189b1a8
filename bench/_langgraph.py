"""LangGraph versions of the engine workloads (``langgraph`` is a bench-only extra).

Each builder compiles its graph up front, so only ``ainvoke`` is timed, and
returns a zero-argument coroutine function (or None when LangGraph is not
installed: callers then print :data:`bench._util.NOT_INSTALLED`). The
shapes follow LangGraph's own documentation: fan-out is the map-reduce
pattern (a conditional edge from START returning one ``Send`` per item, with
an ``operator.add`` reducer collecting the results); a chain is nodes joined
by ``add_edge``; ``max_concurrency`` in the run config bounds the parallel
tasks of a superstep, as ``max_concurrent`` does in heddle.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import operator
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

try:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    VERSION: str | None = importlib.metadata.version("langgraph")
except ImportError:  # the bench extra is not installed
    VERSION = None

try:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    SQLITE_VERSION: str | None = importlib.metadata.version("langgraph-checkpoint-sqlite")
except ImportError:
    SQLITE_VERSION = None

#: LangGraph counts supersteps against a recursion limit (default 25).
NO_LIMIT = 10**9

Run = Callable[[], Awaitable[Any]]


class Count(TypedDict):
    done: Annotated[int, operator.add]


class Value(TypedDict):
    x: int


class TwoChains(TypedDict, total=False):
    slow: int
    fast: int


async def _one(state: Any) -> dict[str, int]:
    return {"done": 1}


async def _step(state: Value) -> dict[str, int]:
    return {"x": state["x"] + 1}


def _sleep_one(seconds: float) -> Callable[[Any], Awaitable[dict[str, int]]]:
    async def node(state: Any) -> dict[str, int]:
        await asyncio.sleep(seconds)
        return {"done": 1}

    return node


def _config(max_concurrency: int | None = None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"recursion_limit": NO_LIMIT, **extra}
    if max_concurrency is not None:
        config["max_concurrency"] = max_concurrency
    return config


def _send_fan_out(n: int, node: Callable[[Any], Awaitable[dict[str, int]]]) -> Any:
    builder = StateGraph(Count)
    builder.add_node("work", node)
    builder.add_conditional_edges(
        START, lambda state: [Send("work", {"done": 0}) for _ in range(n)], ["work"]
    )
    builder.add_edge("work", END)
    return builder.compile()


def _checked(expected: int, key: str, app: Any, state: Any, config: dict[str, Any]) -> Run:
    async def run() -> Any:
        out = await app.ainvoke(state, config)
        assert out[key] == expected, (key, out)
        return out

    return run


def fan_out(n: int, max_concurrency: int = 10) -> Run | None:
    """N no-op branches through ``Send`` (LangGraph's map-reduce pattern)."""
    if VERSION is None:
        return None
    app = _send_fan_out(n, _one)
    return _checked(n, "done", app, {"done": 0}, _config(max_concurrency))


def fan_out_static(n: int, max_concurrency: int = 10) -> Run | None:
    """N no-op nodes, each with an edge from START and one to END."""
    if VERSION is None:
        return None
    builder = StateGraph(Count)
    for i in range(n):
        builder.add_node(f"n{i}", _one)
        builder.add_edge(START, f"n{i}")
        builder.add_edge(f"n{i}", END)
    app = builder.compile()
    return _checked(n, "done", app, {"done": 0}, _config(max_concurrency))


def _chain_builder(n: int) -> Any:
    builder = StateGraph(Value)
    for i in range(n):
        builder.add_node(f"c{i}", _step)
        builder.add_edge(START if i == 0 else f"c{i - 1}", f"c{i}")
    builder.add_edge(f"c{n - 1}", END)
    return builder


def chain(n: int) -> Run | None:
    """N nodes in a line, each adding one to the state."""
    if VERSION is None:
        return None
    return _checked(n, "x", _chain_builder(n).compile(), {"x": 0}, _config())


def sleepers(count: int, seconds: float, limit: int) -> Run | None:
    """``count`` branches (via ``Send``) each sleeping ``seconds``, ``limit`` at a time."""
    if VERSION is None:
        return None
    app = _send_fan_out(count, _sleep_one(seconds))
    return _checked(count, "done", app, {"done": 0}, _config(limit))


def two_chains(
    slow_n: int, slow_s: float, fast_n: int, fast_s: float, max_concurrency: int = 10
) -> Run | None:
    """Two independent chains from START: ``slow_n`` x ``slow_s`` beside ``fast_n`` x ``fast_s``."""
    if VERSION is None:
        return None
    builder = StateGraph(TwoChains)
    for key, n, seconds in (("slow", slow_n, slow_s), ("fast", fast_n, fast_s)):

        def make(key: str = key, seconds: float = seconds) -> Any:
            async def node(state: Any) -> dict[str, int]:
                await asyncio.sleep(seconds)
                return {key: 1}

            return node

        for i in range(n):
            builder.add_node(f"{key}{i}", make())
            builder.add_edge(START if i == 0 else f"{key}{i - 1}", f"{key}{i}")
        builder.add_edge(f"{key}{n - 1}", END)
    app = builder.compile()
    return _checked(1, "fast", app, {}, _config(max_concurrency))


def durable_chain(n: int, path: Path, durability: str) -> Callable[[], Any] | None:
    """A chain of ``n`` checkpointed by ``AsyncSqliteSaver`` at ``path``.

    Returns a coroutine function that opens the saver (untimed), runs the
    chain on a fresh thread id and returns the seconds ``ainvoke`` took.
    ``durability="sync"`` persists each superstep before the next starts
    (heddle's guarantee); ``"async"`` (LangGraph's default) writes it while
    the next step runs.
    """
    if VERSION is None or SQLITE_VERSION is None:
        return None
    compiled = _chain_builder(n).compile()
    runs = iter(range(10**9))

    async def run() -> float:
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            await saver.setup()
            app = compiled.copy(update={"checkpointer": saver})
            config = _config(configurable={"thread_id": f"t{next(runs)}"})
            start = time.perf_counter()
            out = await app.ainvoke({"x": 0}, config, durability=durability)
            elapsed = time.perf_counter() - start
        assert out["x"] == n, out
        return elapsed

    return run
