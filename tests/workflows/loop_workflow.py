"""A durable writer/reviewer loop run in a child process by test_loop_durability.py.

Usage: python loop_workflow.py (execute|resume) DB WORKFLOW_ID SIDE_EFFECT_FILE
Every agent appends "<pid> <node> <iteration>" to the side-effect file (fsynced)
before it returns, so the test can tell which process ran which activation. The
reviewer approves the draft of iteration APPROVE_AT; the loop's bound is BOUND.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import heddle
from heddle import WorkflowExecutor, WorkflowGraph

APPROVE_AT = 4
BOUND = 6


def agent(name: str, side_effects: str, result: Any) -> Any:
    def record(iteration: int) -> None:
        with open(side_effects, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name} {iteration}\n")
            f.flush()
            os.fsync(f.fileno())

    async def run(task: Any) -> Any:
        iteration = heddle.current().iteration
        await asyncio.sleep(float(os.environ.get("LOOP_NODE_SECONDS", "0.1")))
        await asyncio.to_thread(record, iteration)
        return result(iteration, task)

    run.__qualname__ = name
    return run


def build(side_effects: str) -> WorkflowGraph:
    g = WorkflowGraph("loopy")
    g.add_node("write", agent("write", side_effects, lambda i, task: f"draft {i}"))
    g.add_node(
        "review",
        agent("review", side_effects, lambda i, draft: {"ok": i == APPROVE_AT, "draft": draft}),
    )
    g.add_node("publish", agent("publish", side_effects, lambda i, verdict: verdict["draft"]))
    g.add_edge("write", "review")
    g.add_edge("review", "write", when=lambda verdict: not verdict["ok"], max_iterations=BOUND)
    g.add_edge("review", "publish", when=lambda verdict: verdict["ok"])
    return g


async def main(mode: str, db: str, workflow_id: str, side_effects: str) -> int:
    async with WorkflowExecutor(checkpointer=db) as ex:
        if mode == "execute":
            result = await ex.execute(build(side_effects), input="topic", workflow_id=workflow_id)
        else:
            result = await ex.resume(workflow_id, build(side_effects))
    print(result.status, result.content("publish"), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
