"""Peak RSS of one engine running one fan-out, in its own process.

``python -m bench._peak_rss ENGINE N`` (ENGINE: asyncio, heddle or langgraph)
imports the engine, builds a fan-out of N no-op nodes, runs it once and
prints one JSON line: the resident set after the imports (``baseline_kib``)
and the process's high-water mark (``peak_kib``). Each engine gets a fresh
process so that one's heap cannot inflate another's peak.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_kib() -> int:
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # bytes on macOS


async def _noop(task: Any) -> Any:
    return task


def _make_asyncio(n: int) -> Any:
    async def run() -> None:
        await asyncio.gather(*(asyncio.create_task(_noop(i)) for i in range(n)))

    return run


def _make_heddle(n: int) -> Any:
    from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph

    graph = WorkflowGraph(f"fan-out-{n}").add_node("root", _noop)
    for i in range(n):  # the fan-out of bench_engine, built here so LangGraph is not imported
        graph.add_node(f"n{i}", _noop).add_edge("root", f"n{i}")
    graph.validate()
    executor = WorkflowExecutor(max_concurrent=10, retry=RetryPolicy(max_attempts=1))

    async def run() -> None:
        result = await executor.execute(graph)
        assert result.ok

    return run


def _make_langgraph(n: int) -> Any:
    from bench import _langgraph as lg

    return lg.fan_out(n, max_concurrency=10)


def main(argv: list[str]) -> int:
    engine, n = argv[0], int(argv[1])
    make = {"asyncio": _make_asyncio, "heddle": _make_heddle, "langgraph": _make_langgraph}[engine]
    if engine == "heddle":
        import heddle  # noqa: F401  (imports count towards the baseline)
    elif engine == "langgraph":
        from bench import _langgraph as lg

        if lg.VERSION is None:
            print(json.dumps({"error": "langgraph not installed"}))
            return 0
    baseline = _status_kib("VmRSS") or 0
    run = make(n)
    asyncio.run(run())
    print(json.dumps({"baseline_kib": baseline, "peak_kib": _peak_kib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
