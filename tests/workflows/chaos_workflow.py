"""A random durable workflow, run in a child process by the SIGKILL trials of test_chaos.py.

Usage: python chaos_workflow.py (execute|resume) DB SEED SIDE_EFFECT_FILE

The graph, its agents and the executor's settings all come from SEED (see
:func:`shape`), so every process of one trial builds the same workflow. Each
agent sleeps a little, appends "<node> <pid>" to the side-effect file (fsynced)
and returns ``{"node": ..., "pid": ...}``: the test can tell which processes
ran a node and which one's result the database recorded. Some agents fail
their first attempt in each process and are retried. Prints the run's status;
a resume refused because another process holds the run prints "in-progress"
and exits 3.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crash_workflow import run_or_resume  # a neighbour: the script's directory is on sys.path

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph

WORKFLOW_ID = "chaos-kill"


@dataclass(frozen=True, slots=True)
class Shape:
    """Everything about one trial's workflow that its seed decides."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    sync: frozenset[str]  # run as plain functions, in threads
    flaky: frozenset[str]  # fail their first attempt in each process
    seconds: Mapping[str, float]  # how long each agent works
    max_concurrent: int


def shape(seed: int) -> Shape:
    """The workflow of trial ``seed``: 8-24 nodes, random edges, random agent kinds."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(rng.randint(8, 24))]
    density = rng.choice([0.05, 0.15, 0.3])
    edges = tuple(
        (names[i], names[j]) for j in range(len(names)) for i in range(j) if rng.random() < density
    )
    return Shape(
        nodes=tuple(names),
        edges=edges,
        sync=frozenset(n for n in names if rng.random() < 0.3),
        flaky=frozenset(n for n in names if rng.random() < 0.2),
        seconds={n: rng.uniform(0.005, 0.04) for n in names},
        max_concurrent=rng.choice([1, 2, 3, 4]),
    )


def record(node: str, side_effects: str) -> None:
    with open(side_effects, "a", encoding="utf-8") as f:
        f.write(f"{node} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


class Agent:
    """Works a while, fails its first attempt if flaky, then leaves its side effect."""

    def __init__(self, node: str, shape: Shape, side_effects: str) -> None:
        self.name = node  # one circuit breaker per node
        self.node = node
        self.seconds = shape.seconds[node]
        self.flaky = node in shape.flaky
        self.side_effects = side_effects
        self.attempts = 0

    def _attempt(self) -> dict[str, Any]:
        self.attempts += 1
        if self.flaky and self.attempts == 1:
            raise ConnectionError(f"{self.node}: first attempt fails")
        record(self.node, self.side_effects)
        return {"node": self.node, "pid": os.getpid()}


class AsyncAgent(Agent):
    async def arun(self, task: Any) -> dict[str, Any]:
        await asyncio.sleep(self.seconds)
        return await asyncio.to_thread(self._attempt)


class SyncAgent(Agent):
    def run(self, task: Any) -> dict[str, Any]:
        time.sleep(self.seconds)
        return self._attempt()


def build(shape: Shape, side_effects: str) -> WorkflowGraph:
    g = WorkflowGraph("chaos-kill")
    for node in shape.nodes:
        kind = SyncAgent if node in shape.sync else AsyncAgent
        g.add_node(node, kind(node, shape, side_effects))
    for source, target in shape.edges:
        g.add_edge(source, target)
    return g


async def main(mode: str, db: str, seed: str, side_effects: str) -> int:
    trial = shape(int(seed))
    retry = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01)
    async with WorkflowExecutor(
        max_concurrent=trial.max_concurrent, retry=retry, checkpointer=db
    ) as ex:
        graph = build(trial, side_effects)
        return await run_or_resume(ex, graph, mode, WORKFLOW_ID, int(seed))


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
