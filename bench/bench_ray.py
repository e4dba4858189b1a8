"""Per-node overhead of RayRunner next to LocalRunner (``python -m bench ray``).

The same graphs of no-op agents run through ``WorkflowExecutor(runner=...)``
with the local runner and with a :class:`RayRunner` on a local Ray cluster
(started once, warmed up, not timed), so the difference is what a node pays
for its round trip to an actor: pickling the task, Ray's scheduling, the
actor's event loop, the result coming back. The fan-out shows throughput
with many calls in flight; the chain shows latency, one call at a time.
Without Ray the Ray cells read "ray not installed".
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from bench._util import median_async, table
from heddle import WorkflowExecutor, WorkflowGraph
from heddle.workflows import LocalRunner, Runner

RAY_NOT_INSTALLED = "ray not installed"


async def noop(task: Any) -> Any:
    return task


def noop_sync(task: Any) -> Any:
    return task


async def sleep_half_second(task: Any) -> Any:
    await asyncio.sleep(0.5)
    return task


def fan_out(n: int, agent: Any = noop) -> WorkflowGraph:
    g = WorkflowGraph(f"fan-out-{n}").add_node("root", agent)
    for i in range(n):
        g.add_node(f"n{i}", agent).add_edge("root", f"n{i}")
    return g


def chain(n: int) -> WorkflowGraph:
    g = WorkflowGraph(f"chain-{n}")
    for i in range(n):
        g.add_node(f"c{i}", noop)
        if i:
            g.add_edge(f"c{i - 1}", f"c{i}")
    return g


def independent(n: int, agent: Any) -> WorkflowGraph:
    g = WorkflowGraph(f"independent-{n}")
    for i in range(n):
        g.add_node(f"n{i}", agent)
    return g


def _ray_runner() -> Any:
    """A started RayRunner, or None without Ray."""
    try:
        import ray
    except ImportError:
        return None
    from heddle.distributed import RayRunner

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers cannot import bench/ (not an installed package): ship its agents by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runner = RayRunner(
        num_actors=2,
        init_kwargs={"include_dashboard": False, "log_to_driver": False},
    )
    return runner.start()


def _timed(runner: Runner, graph: WorkflowGraph, max_concurrent: int, repeats: int) -> float:
    executor = WorkflowExecutor(max_concurrent=max_concurrent, runner=runner)

    async def run() -> None:
        result = await executor.execute(graph)
        assert result.ok, result

    return median_async(run, repeats, warmup=1)


def main(quick: bool = False) -> str:
    repeats = 1 if quick else 5
    wide, long, sleeps = (20, 10, 4) if quick else (200, 100, 20)
    workloads = [
        (f"fan-out of {wide} async no-ops", fan_out(wide), 100),
        (f"fan-out of {wide} sync no-ops", fan_out(wide, noop_sync), 100),
        (f"chain of {long} async no-ops", chain(long), 10),
        (f"{sleeps} x 0.5 s async sleeps", independent(sleeps, sleep_half_second), sleeps),
    ]
    started = time.perf_counter()
    ray_runner = _ray_runner()
    start_up = time.perf_counter() - started
    rows: list[list[object]] = []
    try:
        for label, graph, max_concurrent in workloads:
            nodes = len(graph)
            local = _timed(LocalRunner(), graph, max_concurrent, repeats)
            row: list[object] = [label, max_concurrent, local, local / nodes * 1e6]
            if ray_runner is None:
                row += [RAY_NOT_INSTALLED] * 3
            else:
                on_ray = _timed(ray_runner, graph, max_concurrent, repeats)
                row += [on_ray, on_ray / nodes * 1e6, (on_ray - local) / nodes * 1e6]
            rows.append(row)
    finally:
        if ray_runner is not None:
            ray_runner.shutdown()
    headers = [
        "workload",
        "max_concurrent",
        "LocalRunner s",
        "LocalRunner µs/node",
        "RayRunner s",
        "RayRunner µs/node",
        "Ray overhead µs/node",
    ]
    note = (
        f"Medians of {repeats} runs after one warm-up run. RayRunner: 2 pool actors on a "
        f"local Ray cluster (started in {start_up:.1f} s, not timed)."
        if ray_runner is not None
        else f"Medians of {repeats} runs; {RAY_NOT_INSTALLED} (pip install 'heddle[ray]')."
    )
    return note + "\n\n" + table(headers, rows)
