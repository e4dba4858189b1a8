"""A durable workflow run in a child process by test_crash_resume.py.

Usage: python crash_workflow.py (execute|resume) DB WORKFLOW_ID SIDE_EFFECT_FILE
Every agent appends "<pid> <node>" to the side-effect file (fsynced) before it
returns, so the test can tell which process ran which node. Prints the run's
status; a resume refused because another process holds the run prints
"in-progress" and exits 3.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from heddle import WorkflowExecutor, WorkflowGraph
from heddle.core.errors import RunInProgressError

NODES = ["load", "clean", "split", "w0", "w1", "w2", "w3", "merge", "publish"]


def agent(name: str, side_effects: str) -> Any:
    def record() -> None:
        with open(side_effects, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name}\n")
            f.flush()
            os.fsync(f.fileno())

    async def run(task: Any) -> str:
        await asyncio.sleep(float(os.environ.get("CRASH_NODE_SECONDS", "0.15")))
        await asyncio.to_thread(record)
        return f"{name} done"

    run.__qualname__ = name
    return run


def build(side_effects: str) -> WorkflowGraph:
    g = WorkflowGraph("crashy")
    for name in NODES:
        g.add_node(name, agent(name, side_effects))
    g.add_edge("load", "clean").add_edge("clean", "split")
    for w in ("w0", "w1", "w2", "w3"):
        g.add_edge("split", w).add_edge(w, "merge")
    g.add_edge("merge", "publish")
    return g


async def run_or_resume(
    ex: WorkflowExecutor, graph: WorkflowGraph, mode: str, workflow_id: str, input: Any
) -> int:
    """Execute or resume the run; print its status (or "in-progress") and return the exit code.

    Shared with chaos_workflow.py: 0 succeeded, 1 failed, 3 held by another process.
    """
    if mode == "execute":
        result = await ex.execute(graph, input=input, workflow_id=workflow_id)
    else:
        try:
            result = await ex.resume(workflow_id, graph)
        except RunInProgressError:
            print("in-progress", flush=True)
            return 3
    print(result.status, flush=True)
    return 0 if result.ok else 1


async def main(mode: str, db: str, workflow_id: str, side_effects: str) -> int:
    async with WorkflowExecutor(checkpointer=db, max_concurrent=2) as ex:
        return await run_or_resume(ex, build(side_effects), mode, workflow_id, "data")


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
