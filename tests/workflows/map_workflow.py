"""A durable 1,000-item map run in a child process by test_map_durability.py.

Usage: python map_workflow.py (execute|resume) DB WORKFLOW_ID SIDE_EFFECT_FILE
Every item appends "<pid> <item>" to the side-effect file (one write on an
O_APPEND descriptor: a SIGKILL cannot leave half a line) before it returns.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import heddle
from heddle import WorkflowExecutor, WorkflowGraph

ITEMS = 1_000


def build(side_effects: str) -> WorkflowGraph:
    fd = os.open(side_effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def listing(task: Any) -> list[int]:
        return list(range(ITEMS))

    async def square(k: int) -> int:
        await asyncio.sleep(0.002)
        assert heddle.current().item == k
        os.write(fd, f"{os.getpid()} {k}\n".encode())
        return k * k

    async def total(squares: list[int]) -> int:
        return sum(squares)

    g = WorkflowGraph("squares").add_node("list", listing).add_map("square", square)
    return g.add_node("total", total).add_edge("list", "square").add_edge("square", "total")


async def main(mode: str, db: str, workflow_id: str, side_effects: str) -> int:
    async with WorkflowExecutor(8, checkpointer=db) as ex:
        graph = build(side_effects)
        if mode == "execute":
            result = await ex.execute(graph, workflow_id=workflow_id)
        else:
            result = await ex.resume(workflow_id, graph)
    print(result.status, result.content("total"), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
