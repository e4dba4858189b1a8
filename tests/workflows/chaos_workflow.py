"""A random durable workflow, run in a child process by the SIGKILL trials of test_chaos.py.

Usage: python chaos_workflow.py (execute|resume) DB SEED SIDE_EFFECT_FILE

The graph, its routing and loop (most trials have them, see
chaos_flow_workflow.py), its agents and the executor's settings all come from
SEED (see :func:`shape`), so every process of one trial builds the same
workflow. Each agent sleeps a little, appends "<node> <iteration> <pid>" to the
side-effect file (fsynced) and returns ``{"node", "iteration", "pid", "got"}``:
the test can tell which processes ran an activation and which one's result the
database recorded. Some agents fail their first attempt in each process and
are retried; in some trials one agent fails every attempt. Prints the run's
status, then the run as one JSON line (:func:`summary`); a resume refused
because another process holds the run prints "in-progress" and exits 3.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos_flow_workflow import Flow, describe, draw_flow  # a neighbour: on sys.path

import heddle
from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph, WorkflowResult
from heddle.core.errors import RunInProgressError
from heddle.workflows import SQLiteCheckpointer

WORKFLOW_ID = "chaos-kill"
#: Events kept per run: all of them, over every process of a trial.
EVENTS_KEPT = 1_000_000


@dataclass(frozen=True, slots=True)
class Shape:
    """Everything about one trial's workflow that its seed decides."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]  # forward edges; the flow says how each decides
    sync: frozenset[str]  # run as plain functions, in threads
    flaky: frozenset[str]  # fail their first attempt in each process
    broken: frozenset[str]  # fail every attempt
    seconds: Mapping[str, float]  # how long each agent works
    max_concurrent: int
    flow: Flow | None  # None: every edge is plain


def shape(seed: int) -> Shape:
    """The workflow of trial ``seed``: 8-24 nodes, random edges, random agent kinds.

    Three trials in four route and loop; one in five has a broken node, outside the
    loop and upstream of none of its nodes.
    """
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(rng.randint(8, 24))]
    density = rng.choice([0.05, 0.15, 0.3])
    edges = tuple(
        (names[i], names[j]) for j in range(len(names)) for i in range(j) if rng.random() < density
    )
    flow_rng, flow = random.Random(f"flow-{seed}"), None
    if flow_rng.random() < 0.75:
        edges, flow = draw_flow(flow_rng, names, edges)
    broken = frozenset(flow_rng.sample(names, 1) if flow_rng.random() < 0.2 else ())
    return Shape(
        nodes=tuple(names),
        edges=edges,
        sync=frozenset(n for n in names if rng.random() < 0.3),
        flaky=frozenset(n for n in names if rng.random() < 0.2),
        broken=broken,
        seconds={n: rng.uniform(0.005, 0.04) for n in names},
        max_concurrent=rng.choice([1, 2, 3, 4]),
        flow=flow,
    )


def record(node: str, iteration: int, side_effects: str) -> None:
    with open(side_effects, "a", encoding="utf-8") as f:
        f.write(f"{node} {iteration} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


class Agent:
    """Works a while, fails its first attempt if flaky (every one if broken), leaves its mark."""

    def __init__(self, node: str, shape: Shape, side_effects: str) -> None:
        self.name = node  # one circuit breaker per node
        self.node = node
        self.seconds = shape.seconds[node]
        self.flaky = node in shape.flaky
        self.broken = node in shape.broken
        self.side_effects = side_effects
        self.attempts = 0

    def _attempt(self, task: Any, iteration: int) -> dict[str, Any]:
        self.attempts += 1
        if self.broken:
            raise ConnectionError(f"{self.node} is broken")
        if self.flaky and self.attempts == 1:
            raise ConnectionError(f"{self.node}: first attempt fails")
        record(self.node, iteration, self.side_effects)
        return {
            "node": self.node,
            "iteration": iteration,
            "pid": os.getpid(),
            "got": describe(task),
        }


class AsyncAgent(Agent):
    async def arun(self, task: Any) -> dict[str, Any]:
        iteration = heddle.current().iteration
        await asyncio.sleep(self.seconds)
        return await asyncio.to_thread(self._attempt, task, iteration)


class SyncAgent(Agent):
    def run(self, task: Any) -> dict[str, Any]:
        time.sleep(self.seconds)
        return self._attempt(task, heddle.current().iteration)


def build(shape: Shape, side_effects: str) -> WorkflowGraph:
    g = WorkflowGraph("chaos-kill")
    for node in shape.nodes:
        kind = SyncAgent if node in shape.sync else AsyncAgent
        g.add_node(node, kind(node, shape, side_effects))
    if shape.flow is not None:
        shape.flow.add_edges(g)
    else:
        for source, target in shape.edges:
            g.add_edge(source, target)
    return g


async def run(mode: str, db: str | Path, seed: int, side_effects: str | Path) -> WorkflowResult:
    """Execute or resume trial ``seed``'s run (RunInProgressError if another process holds it)."""
    trial = shape(seed)
    retry = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01)
    async with (
        SQLiteCheckpointer(db, max_events_per_run=EVENTS_KEPT) as store,
        WorkflowExecutor(
            max_concurrent=trial.max_concurrent, retry=retry, checkpointer=store
        ) as ex,
    ):
        graph = build(trial, str(side_effects))
        if mode == "execute":
            return await ex.execute(graph, input=seed, workflow_id=WORKFLOW_ID)
        return await ex.resume(WORKFLOW_ID, graph)


def summary(result: WorkflowResult) -> dict[str, Any]:
    """The run as an uninterrupted one would end too: every activation, without pids."""
    return {
        "status": str(result.status),
        "activations": {
            node: [
                {
                    "iteration": r["iteration"],
                    "status": str(r["status"]),
                    "error": r["error"],
                    "taken": r.get("taken"),
                    "content": (
                        {k: v for k, v in r["content"].items() if k != "pid"}
                        if isinstance(r["content"], dict)
                        else r["content"]
                    ),
                }
                for r in result.iterations(node)
            ]
            for node in result.results
        },
    }


async def main(mode: str, db: str, seed: str, side_effects: str) -> int:
    try:
        result = await run(mode, db, int(seed), side_effects)
    except RunInProgressError:
        print("in-progress", flush=True)
        return 3
    print(result.status, flush=True)
    print(json.dumps(summary(result)), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
