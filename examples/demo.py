"""A small research workflow: plan, three researchers in parallel, a writer, an editor.

Offline and deterministic: the "agents" are plain Python standing in for LLM
calls. One researcher is flaky (its first call fails) to show retries with
backoff; the writer joins the three branches. Run it with ``make demo``.
"""

from __future__ import annotations

import asyncio
import textwrap

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph

FACTS = {
    "history": "the lithium-ion cell was commercialised by Sony in 1991",
    "chemistry": "solid electrolytes replace the flammable liquid between the electrodes",
    "market": "carmakers plan pilot lines for solid-state packs before 2030",
}


class Researcher:
    """Looks up one angle of the topic (a stand-in for a search + LLM call)."""

    def __init__(self, angle: str, *, flaky: bool = False) -> None:
        self.name = f"researcher-{angle}"
        self.angle = angle
        self.calls = 0
        self.flaky = flaky

    async def arun(self, task: str, **kwargs: object) -> str:
        self.calls += 1
        await asyncio.sleep(0.05)  # the "network"
        if self.flaky and self.calls == 1:
            raise ConnectionError(f"{self.angle} source timed out")
        return f"{self.angle}: {FACTS[self.angle]}"


def plan(topic: str) -> str:
    """A sync agent: heddle runs it in a worker thread."""
    return f"research plan for {topic!r}: history, chemistry, market"


async def write(notes: dict[str, str]) -> str:
    body = "; ".join(notes[name] for name in sorted(notes))
    return f"Solid-state batteries, in brief. {body}."


async def edit(draft: str) -> str:
    return draft.replace("in brief", "in three facts")


def build_graph() -> WorkflowGraph:
    graph = WorkflowGraph("research-brief")
    graph.add_node("plan", plan)
    for angle in FACTS:
        graph.add_node(angle, Researcher(angle, flaky=angle == "market"), task="{plan}")
        graph.add_edge("plan", angle)
        graph.add_edge(angle, "write")
    graph.add_node("write", write)  # several predecessors: gets {name: content}
    graph.add_node("edit", edit).add_edge("write", "edit")
    return graph


def main() -> int:
    executor = WorkflowExecutor(
        max_concurrent=4, retry=RetryPolicy(max_attempts=3, initial_delay=0.1, jitter=False)
    )
    result = executor.run(build_graph(), input="solid-state batteries")
    print(f"workflow {result.workflow_id}: {result.status} in {result.duration:.2f}s\n")
    print(f"{'node':<10} {'status':<8} {'attempts':>8}  content")
    for name, node in result.results.items():
        preview = textwrap.shorten(str(node["content"]), 60)
        print(f"{name:<10} {node['status']:<8} {node['attempts']:>8}  {preview}")
    print("\n" + textwrap.fill(str(result.content("edit")), 88))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
