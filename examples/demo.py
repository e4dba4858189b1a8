"""The demo workflow driven from Python instead of the command line.

``make demo`` (``heddle demo``) runs the bundled research-brief workflow with
a live progress display. This file runs the same graph with the library API:
an executor, a message bus whose events it prints, and a durable checkpoint,
so you can see what the command line does for you. Run it with
``.venv/bin/python examples/demo.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
from pathlib import Path

from heddle import Event, MessageBus, WorkflowExecutor
from heddle.examples.demo import TOPIC, build_graph


def show(event: Event) -> None:
    """A bus subscriber: one line per node event (sync callbacks run inline)."""
    p = event.payload
    detail = p.get("error") or p.get("reason") or ""
    print(f"{event.event_type:<15} {p.get('node', ''):<10} {detail}")


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            MessageBus() as bus,
            WorkflowExecutor(max_concurrent=4, bus=bus, checkpointer=Path(tmp) / "runs.db") as ex,
        ):
            bus.subscribe("node.*", show)
            result = await ex.execute(build_graph(), input=TOPIC)
    print(f"\nworkflow {result.workflow_id}: {result.status} in {result.duration:.2f}s")
    for name, node in result.results.items():
        preview = textwrap.shorten(str(node["content"]), 60)
        print(f"  {name:<10} {node['status']:<8} {node['attempts']} attempt(s)  {preview}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
