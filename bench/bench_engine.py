"""Scheduling overhead, concurrency, critical path, growth and peak RSS of the executor.

Every comparison runs the same workload on each engine in this process
(peak RSS: one fresh process per engine). Baselines: plain asyncio
(create_task + gather for a fan-out, one awaited task per node for a chain)
is the floor; a faithful copy of the V2 design's level-by-level loop shows
what dependency-driven scheduling buys; LangGraph (a bench-only extra, see
``bench/_langgraph.py``) is the framework to beat. Without LangGraph its
cells read "langgraph not installed".
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import _langgraph as lg
from bench._util import NOT_INSTALLED, median_async, medians_interleaved, table
from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph

NO_RETRY = RetryPolicy(max_attempts=1)
ROOT = Path(__file__).resolve().parent.parent


async def noop(task: Any) -> Any:
    return task


async def returns_none(task: Any) -> None:
    return None


def fan_out(n: int, agent: Any = noop) -> WorkflowGraph:
    g = WorkflowGraph(f"fan-out-{n}").add_node("root", agent)
    for i in range(n):
        g.add_node(f"n{i}", agent).add_edge("root", f"n{i}")
    return g


def chain(
    n: int, agent: Any = noop, prefix: str = "c", g: WorkflowGraph | None = None
) -> WorkflowGraph:
    g = g if g is not None else WorkflowGraph(f"chain-{n}")
    for i in range(n):
        g.add_node(f"{prefix}{i}", agent)
        if i:
            g.add_edge(f"{prefix}{i - 1}", f"{prefix}{i}")
    return g


def mapped(n: int) -> WorkflowGraph:
    """A root returning ``n`` items and a map node running a no-op on each."""

    async def items(task: Any) -> list[int]:
        return list(range(n))

    g = WorkflowGraph(f"map-{n}").add_node("root", items).add_map("each", noop)
    return g.add_edge("root", "each")


def loop(iterations: int) -> WorkflowGraph:
    """``a -> b -> a``, going round ``iterations`` times (its bound ends it)."""
    g = WorkflowGraph(f"loop-{iterations}").add_node("a", noop).add_node("b", noop)
    return g.add_edge("a", "b").add_edge("b", "a", max_iterations=iterations)


def random_dag(
    n: int,
    edges_per_node: int = 3,
    seed: int = 7,
    window: int | None = None,
    agent: Any = noop,
) -> WorkflowGraph:
    """Node i depends on ``edges_per_node`` random earlier nodes (among the last ``window``)."""
    rnd = random.Random(seed)
    g = WorkflowGraph(f"dag-{n}")
    for i in range(n):
        g.add_node(f"n{i}", agent)
        low = 0 if window is None else max(0, i - window)
        for j in sorted(rnd.sample(range(low, i), min(i - low, edges_per_node))):
            g.add_edge(f"n{j}", f"n{i}")
    return g


def bare_walk(graph: WorkflowGraph) -> Any:
    """The random DAG's own work, no scheduler: each join's dict and a result per node."""
    plan = graph.plan()
    names, preds = plan.names, plan.predecessors

    async def walk() -> None:
        contents: list[Any] = [None] * len(names)
        results = {}
        for i in plan.order:
            inputs = preds[i]
            if not inputs:
                task: Any = None
            elif len(inputs) == 1:
                task = contents[inputs[0]]
            else:
                task = {names[p]: contents[p] for p in inputs}
            contents[i] = task
            results[names[i]] = {"content": task, "status": "succeeded", "attempts": 1}

    return walk


async def gather_floor(n: int) -> None:
    await asyncio.gather(*(asyncio.create_task(noop(i)) for i in range(n)))


async def sequential_tasks(n: int) -> None:
    for i in range(n):
        await asyncio.create_task(noop(i))


async def sequential_awaits(n: int) -> None:
    for i in range(n):
        await noop(i)


async def dag_floor(graph: WorkflowGraph, agent: Any = noop) -> None:
    """Plain asyncio on a DAG: one task per node, awaiting its predecessors' tasks.

    Each node's input is built as heddle builds it (the one predecessor's
    output, or a dict of them by name), so both do the same data work.
    """
    plan = graph.plan()
    names, preds = plan.names, plan.predecessors
    tasks: list[Any] = [None] * len(names)

    async def node(i: int) -> Any:
        ps = preds[i]
        if not ps:
            return await agent(None)
        if len(ps) == 1:
            return await agent(await tasks[ps[0]])
        return await agent({names[p]: await tasks[p] for p in ps})

    for i in plan.order:
        tasks[i] = asyncio.create_task(node(i))
    await asyncio.gather(*tasks)


async def level_by_level(graph: WorkflowGraph, max_concurrent: int) -> None:
    """The V2 design's loop: run every node of a level, wait for all, then the next level."""
    semaphore = asyncio.Semaphore(max_concurrent)
    done: set[str] = set()
    preds = {name: set(graph.predecessors(name)) for name in graph}
    nodes = graph.nodes

    async def run(name: str) -> None:
        async with semaphore:
            await nodes[name].spec.call(None)

    while len(done) < len(preds):
        level = [n for n in preds if n not in done and preds[n] <= done]
        await asyncio.gather(*(run(n) for n in level), return_exceptions=True)
        done.update(level)


def sleeper(seconds: float) -> Any:
    async def agent(task: Any) -> None:
        await asyncio.sleep(seconds)

    return agent


def heddle_run(graph: WorkflowGraph, max_concurrent: int = 10) -> Any:
    graph.validate()
    executor = WorkflowExecutor(max_concurrent=max_concurrent, retry=NO_RETRY)

    async def run() -> None:
        result = await executor.execute(graph)
        assert result.ok, result

    return run


def _us(seconds: float | None, n: int) -> float | str:
    return NOT_INSTALLED if seconds is None else seconds / n * 1e6


def _ratio(a: float | str | None, b: float | str | None) -> float | str:
    if isinstance(a, float) and isinstance(b, float):
        return a / b
    return NOT_INSTALLED if lg.VERSION is None else "-"


def _lg_median(run: Any, repeats: int) -> float | None:
    return None if run is None else median_async(run, repeats)


def _warm_up() -> None:
    """One tiny run of each engine, so lazy imports are not billed to the first workload."""
    asyncio.run(heddle_run(fan_out(10))())
    for run in (lg.fan_out(10), lg.chain(10)):
        if run is not None:
            asyncio.run(run())


def scheduling(quick: bool, repeats: int) -> tuple[str, dict[str, float | str]]:
    sizes = [10, 50] if quick else [100, 1_000, 10_000, 100_000]
    lg_max = 50 if quick else 10_000  # LangGraph's fan-out is O(N^2) in its pending writes
    static_max = 50 if quick else 1_000  # compiling N static branches is slow too
    rows: list[list[object]] = []
    seen: dict[str, float | str] = {}
    for n in sizes:
        graph = fan_out(n)
        floor = median_async(lambda n=n: gather_floor(n), repeats)
        ours = median_async(heddle_run(graph), repeats)
        ours_wide = median_async(heddle_run(graph, max_concurrent=n), repeats)
        skipped = f"not run (> {lg_max:,})" if lg.VERSION else NOT_INSTALLED
        static_skipped = f"not run (> {static_max:,})" if lg.VERSION else NOT_INSTALLED
        theirs = _lg_median(lg.fan_out(n, 10), repeats) if n <= lg_max else None
        theirs_wide = _lg_median(lg.fan_out(n, None), repeats) if n <= lg_max else None
        static = _lg_median(lg.fan_out_static(n, 10), repeats) if n <= static_max else None
        lg_us = _us(theirs, n) if n <= lg_max else skipped
        lg_wide_us = _us(theirs_wide, n) if n <= lg_max else skipped
        static_us = _us(static, n) if n <= static_max else static_skipped
        ours_us, floor_us = ours / n * 1e6, floor / n * 1e6
        rows.append(
            [
                f"fan-out {n:,}",
                floor_us,
                ours_us,
                ours_wide / n * 1e6,
                lg_us,
                lg_wide_us,
                static_us,
                ours / floor,
                _ratio(lg_us, ours_us),
            ]
        )
        seen[f"fan-out {n}"] = ours / floor
        seen[f"fan-out {n} wide"] = ours_wide / floor
        seen[f"fan-out {n} langgraph"] = _ratio(lg_us, ours_us)
    n = 50 if quick else 10_000
    fanned = median_async(heddle_run(fan_out(n)), repeats)
    each = median_async(heddle_run(mapped(n)), repeats)
    rows.append([f"map over {n:,} items", "-", each / n * 1e6, "-", "-", "-", "-", "-", "-"])
    seen["map / fan-out"] = each / fanned
    n = 20 if quick else 1_000
    graph = chain(n)
    floor = median_async(lambda: sequential_tasks(n), repeats)
    plain = median_async(lambda: sequential_awaits(n), repeats)
    ours = median_async(heddle_run(graph), repeats)
    theirs = _lg_median(lg.chain(n), repeats)
    lg_us, ours_us = _us(theirs, n), ours / n * 1e6
    rows.append(
        [
            f"chain {n:,}",
            floor / n * 1e6,
            ours_us,
            ours_us,
            lg_us,
            lg_us,
            "-",
            ours / floor,
            _ratio(lg_us, ours_us),
        ]
    )
    seen["chain"] = ours / floor
    seen["chain langgraph"] = _ratio(lg_us, ours_us)
    # A loop of two nodes going round n / 2 times: n activations, as many as the chain.
    looped = median_async(heddle_run(loop(n // 2)), repeats)
    loop_us = looped / n * 1e6
    rows.append(
        [
            f"loop, 2 nodes x {n // 2:,} iterations",
            "-",
            loop_us,
            loop_us,
            "-",
            "-",
            "-",
            "-",
            "-",
        ]
    )
    seen["loop / chain step"] = looped / ours
    text = (
        "Scheduling overhead, no-op agents, µs per node (asyncio: create_task + gather for "
        "a fan-out, one awaited task per node for the chain; LangGraph: `Send` fan-out, "
        "`max_concurrency` 10 or unset, and static START->node edges; heddle `mc` = "
        "`max_concurrent`):\n\n"
        + table(
            [
                "workload",
                "asyncio",
                "heddle mc=10",
                "heddle mc=N",
                "LangGraph Send mc=10",
                "LangGraph Send unbounded",
                "LangGraph static edges mc=10",
                "heddle mc=10 / asyncio",
                "LangGraph mc=10 / heddle mc=10",
            ],
            rows,
        )
        + f"\n\nThe chain of {n:,} as a bare loop of awaits (no task per node): "
        f"{plain / n * 1e6:.3g} µs per node; heddle is {ours / plain:.3g}x that. "
        f"A loop's activation costs {looped / ours:.3g}x a chain step (µs per node run)."
    )
    return text, seen


def concurrency(quick: bool, repeats: int) -> tuple[str, dict[str, float | str]]:
    count, each, limit = (20, 0.005, 10) if quick else (100, 0.01, 10)
    ideal = count * each / limit
    g = WorkflowGraph("sleepers")
    for i in range(count):
        g.add_node(f"s{i}", sleeper(each))
    ours = median_async(heddle_run(g, limit), repeats)
    theirs = _lg_median(lg.sleepers(count, each, limit), repeats)
    rows: list[list[object]] = [
        ["heddle", ours, ours / ideal],
        ["LangGraph (Send)", *((theirs, theirs / ideal) if theirs else (NOT_INSTALLED, "-"))],
    ]
    text = (
        f"Concurrency efficiency: {count} agents x {each * 1000:g} ms at a limit of {limit} "
        f"(ideal {ideal:.3f} s):\n\n" + table(["engine", "seconds", "x ideal"], rows)
    )
    return text, {"concurrency": ours / ideal}


def critical_path(quick: bool, repeats: int) -> str:
    slow_n, fast_n, slow_s, fast_s = (2, 10, 0.01, 0.001) if quick else (10, 100, 0.02, 0.002)
    g = chain(slow_n, sleeper(slow_s), "slow")
    chain(fast_n, sleeper(fast_s), "fast", g)
    ideal = max(slow_n * slow_s, fast_n * fast_s)
    ours = median_async(heddle_run(g, 10), repeats)
    levels = median_async(lambda: level_by_level(g, 10), repeats)
    theirs = _lg_median(lg.two_chains(slow_n, slow_s, fast_n, fast_s), repeats)
    rows: list[list[object]] = [
        ["heddle (dependency-driven)", ours, ours / ideal],
        ["V2 level-by-level", levels, levels / ideal],
        ["LangGraph (supersteps)", *((theirs, theirs / ideal) if theirs else (NOT_INSTALLED, "-"))],
    ]
    return (
        f"Critical path: a chain of {slow_n} x {slow_s * 1000:g} ms beside a chain of "
        f"{fast_n} x {fast_s * 1000:g} ms, limit 10 (ideal {ideal:.3f} s):\n\n"
        + table(["scheduler", "seconds", "x ideal"], rows)
    )


def growth(quick: bool, repeats: int) -> tuple[str, dict[str, float | str]]:
    small, big = (50, 500) if quick else (10_000, 100_000)
    rows = []
    seen: dict[str, float | str] = {}
    cases: list[tuple[str, Any, Any]] = [
        ("fan-out", fan_out, lambda g, n: gather_floor(n)),
        ("random DAG, 3 edges/node", random_dag, lambda g, n: dag_floor(g)),
        (
            "random DAG, 3 edges/node among the previous 100",
            lambda n: random_dag(n, window=100),
            lambda g, n: dag_floor(g),
        ),
        (
            "random DAG, 3 edges/node, agents return None",
            lambda n: random_dag(n, agent=returns_none),
            lambda g, n: dag_floor(g, returns_none),
        ),
    ]
    for label, make, floor in cases:
        gs, gb = make(small), make(big)
        ts, tb, fs, fb = medians_interleaved(
            [
                heddle_run(gs),
                heddle_run(gb),
                lambda g=gs, floor=floor: floor(g, small),
                lambda g=gb, floor=floor: floor(g, big),
            ],
            repeats,
        )
        rows.append([label, ts, tb, tb / ts, fs, fb, fb / fs])
        seen[label] = tb / ts
    gs, gb = random_dag(small), random_dag(big)
    ws, wb = medians_interleaved([bare_walk(gs), bare_walk(gb)], repeats)
    seen["bare walk"] = wb / ws
    text = (
        f"Growth, {small:,} -> {big:,} nodes, seconds (linear is a ratio of {big // small}; "
        "asyncio: gather for the fan-out, one task per node awaiting its predecessors' "
        "tasks for the DAGs). No-op agents return their task, so a DAG's outputs nest "
        "(each join's dict holds its inputs) and all stay alive; in the last row they "
        "return None:\n\n"
        + table(
            [
                "graph",
                f"heddle {small:,}",
                f"heddle {big:,}",
                "heddle ratio",
                f"asyncio {small:,}",
                f"asyncio {big:,}",
                "asyncio ratio",
            ],
            rows,
        )
        + f"\n\nThe random DAG's own work with no scheduler at all (a loop in topological "
        f"order building each join's dict and a result per node) grows {wb / ws:.3g}x "
        f"({ws:.4g} s -> {wb:.4g} s): the floor of any engine's ratio on this graph."
    )
    return text, seen


def peak_rss(n: int) -> dict[str, dict[str, int] | str]:
    """Run ``bench._peak_rss`` for each engine in a fresh process."""
    out: dict[str, dict[str, int] | str] = {}
    for engine in ("asyncio", "heddle", "langgraph"):
        proc = subprocess.run(
            [sys.executable, "-m", "bench._peak_rss", engine, str(n)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        out[engine] = data.get("error") or data
    return out


def memory(quick: bool) -> tuple[str, dict[str, float | str]]:
    n = 100 if quick else 10_000
    rows: list[list[object]] = []
    seen: dict[str, float | str] = {}
    for engine, data in peak_rss(n).items():
        if isinstance(data, str):
            rows.append([engine, data, "-", "-"])
            continue
        base, peak = data["baseline_kib"] / 1024, data["peak_kib"] / 1024
        rows.append([engine, base, peak, peak - base])
        seen[engine] = peak
    return (
        f"Peak RSS, fan-out of {n:,} no-op nodes, limit 10, one process per engine (MiB; "
        "baseline = resident after the imports):\n\n"
        + table(["engine", "baseline MiB", "peak MiB", "peak - baseline MiB"], rows)
    ), seen


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets(seen: dict[str, float | str], quick: bool) -> str:
    big = "50" if quick else "10000"
    rows: list[list[object]] = []
    ratio = seen[f"fan-out {big}"]
    rows.append([f"fan-out {int(big):,}: heddle / gather", "<= 3", ratio, _verdict(ratio <= 3)])
    lg_ratio = seen[f"fan-out {big} langgraph"]
    rows.append(
        [
            f"fan-out {int(big):,}: LangGraph / heddle",
            ">= 20",
            lg_ratio,
            _verdict(lg_ratio >= 20) if isinstance(lg_ratio, float) else "-",
        ]
    )
    for n in ("100", "1000", big):
        ratio = seen.get(f"fan-out {n} wide")
        if isinstance(ratio, float):
            rows.append(
                [
                    f"fan-out {int(n):,} at mc=N: heddle / gather",
                    "<= 1.5",
                    ratio,
                    _verdict(ratio <= 1.5),
                ]
            )
    ratio = seen["chain"]
    rows.append(["chain: heddle / one task per node", "<= 5", ratio, _verdict(ratio <= 5)])
    ratio = seen["map / fan-out"]
    rows.append(["map / static fan-out, same size", "<= 1.5", ratio, _verdict(ratio <= 1.5)])
    ratio = seen["loop / chain step"]
    rows.append(["loop activation / chain step", "<= 2", ratio, _verdict(ratio <= 2)])
    ratio = seen["concurrency"]
    rows.append(["100 x 10 ms at limit 10: x ideal", "<= 1.1", ratio, _verdict(ratio <= 1.1)])
    for label in ("fan-out", "random DAG, 3 edges/node"):
        ratio = seen[label]
        rows.append([f"growth, {label}", "<= 12", ratio, _verdict(ratio <= 12)])
    peak = seen.get("heddle")
    if isinstance(peak, float):
        rows.append(["peak RSS, heddle (MiB)", "< 100", peak, _verdict(peak < 100)])
    return "Targets (issues 6, 12 and 13):\n\n" + table(
        ["target", "bound", "measured", "verdict"], rows
    )


def main(quick: bool = False) -> str:
    repeats = 1 if quick else 5
    _warm_up()
    seen: dict[str, float | str] = {}
    parts = []
    for section in (scheduling, concurrency):
        text, numbers = section(quick, repeats)
        parts.append(text)
        seen.update(numbers)
    parts.append(critical_path(quick, repeats))
    text, numbers = growth(quick, repeats)
    parts.append(text)
    seen.update(numbers)
    text, numbers = memory(quick)
    parts.append(text)
    seen.update(numbers)
    parts.append(targets(seen, quick))
    versions = f"heddle, LangGraph {lg.VERSION}" if lg.VERSION else f"heddle; {NOT_INSTALLED}"
    parts.insert(0, f"Medians of {repeats} runs ({versions}).")
    return "\n\n".join(parts)
