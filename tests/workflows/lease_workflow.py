"""A durable workflow with a 1 s lease, run in a child process by test_crash_resume.py.

Usage: python lease_workflow.py (execute|resume) DB WORKFLOW_ID SIDE_EFFECT_FILE MARKER_FILE

first -> slow -> after, and first -> side1, side2, on one worker: while slow
runs, side1 and side2 wait for the worker. Every agent appends "<pid> start
<node>" to the side-effect file (fsynced) when it starts and returns
"<node> by <pid>". When executing, slow creates MARKER_FILE once it is in
flight, then takes LEASE_SLOW_SECONDS (so the test can pause the process
there). Prints the run's status; a lost lease prints "lease-lost: ..." and
exits 4, a resume refused because another process holds the run prints
"in-progress" and exits 3.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from heddle import WorkflowExecutor, WorkflowGraph
from heddle.core.errors import LeaseLostError, RunInProgressError
from heddle.workflows import SQLiteCheckpointer


def append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{line}\n")
        f.flush()
        os.fsync(f.fileno())


def agent(name: str, side_effects: str, marker: str | None) -> Any:
    async def run(task: Any) -> str:
        append(side_effects, f"{os.getpid()} start {name}")
        if marker is not None:
            append(marker, "in flight")
            await asyncio.sleep(float(os.environ.get("LEASE_SLOW_SECONDS", "0.05")))
        return f"{name} by {os.getpid()}"

    run.__qualname__ = name
    return run


def build(side_effects: str, marker: str | None) -> WorkflowGraph:
    g = WorkflowGraph("leased")
    for name in ("first", "slow", "after", "side1", "side2"):
        g.add_node(name, agent(name, side_effects, marker if name == "slow" else None))
    g.add_edge("first", "slow").add_edge("slow", "after")
    g.add_edge("first", "side1").add_edge("first", "side2")
    return g


async def main(mode: str, db: str, workflow_id: str, side_effects: str, marker: str) -> int:
    async with (
        SQLiteCheckpointer(db, lease=1.0) as checkpointer,
        WorkflowExecutor(checkpointer=checkpointer, max_concurrent=1) as ex,
    ):
        try:
            if mode == "execute":
                graph = build(side_effects, marker)
                result = await ex.execute(graph, input="data", workflow_id=workflow_id)
            else:
                result = await ex.resume(workflow_id, build(side_effects, None))
        except RunInProgressError:
            print("in-progress", flush=True)
            return 3
        except LeaseLostError as exc:
            print(f"lease-lost: {exc}", flush=True)
            return 4
    print(result.status, flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:6])))
