"""A/B: the same workloads on another commit and on this checkout, side by side.

``python -m bench.ab REV [--runs 7] [workload ...]`` checks REV out into a
temporary git worktree and runs each workload in fresh processes, taking turns
(REV, then this checkout, then REV again ...), so that load on a shared machine
falls on both alike. Each process times ``execute()`` five times after one
warm-up and reports its median; the table shows the median of those medians.

Workloads: ``fan`` (a 10,000-node fan-out at max_concurrent 10), ``chain``
(1,000 nodes in a chain), ``durable`` (a chain of 300 with an SQLite
checkpointer).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS = ("fan", "chain", "durable")

# Runs in a child process with PYTHONPATH pointing at one of the two sources.
_CHILD = """
import asyncio, gc, os, statistics, sys, tempfile, time
from heddle import WorkflowExecutor, WorkflowGraph

async def noop(task):
    return task

def graph(kind):
    g = WorkflowGraph(kind)
    if kind == "fan":
        g.add_node("root", noop)
        for i in range(10_000):
            g.add_node(f"n{i}", noop).add_edge("root", f"n{i}")
        return g
    for i in range(1_000 if kind == "chain" else 300):
        g.add_node(f"n{i}", noop)
        if i:
            g.add_edge(f"n{i - 1}", f"n{i}")
    return g

async def main(kind):
    g = graph(kind)
    g.plan()
    kwargs = {}
    if kind == "durable":
        kwargs["checkpointer"] = os.path.join(tempfile.mkdtemp(), "runs.db")
    async with WorkflowExecutor(10, **kwargs) as ex:
        await ex.execute(g, 1)
        times = []
        for _ in range(5):
            gc.collect()
            start = time.perf_counter()
            await ex.execute(g, 1)
            times.append(time.perf_counter() - start)
    print(statistics.median(times))

asyncio.run(main(sys.argv[1]))
"""


def _time(src: Path, workload: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, workload],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("rev", help="the commit to compare with (e.g. HEAD~3)")
    parser.add_argument("--runs", type=int, default=7, help="processes per side and workload")
    parser.add_argument("workload", nargs="*", help=f"any of {', '.join(WORKLOADS)} (default: all)")
    args = parser.parse_intermixed_args(argv)
    chosen = args.workload or list(WORKLOADS)
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="heddle-ab-") as tmp:
        tree = Path(tmp) / Path(tmp).name  # a unique name: git names its admin folder after it
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(tree), args.rev],
            cwd=ROOT,
            check=True,
        )
        try:
            print(f"| workload | {args.rev} (ms) | this checkout (ms) | ratio |")
            print("|---|---:|---:|---:|")
            for workload in chosen:
                old, new = [], []
                for _ in range(args.runs):
                    old.append(_time(tree / "src", workload))
                    new.append(_time(ROOT / "src", workload))
                a, b = statistics.median(old), statistics.median(new)
                print(f"| {workload} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.3f} |", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
