"""Timing and table helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

#: The cell a benchmark prints where an optional engine is absent.
NOT_INSTALLED = "langgraph not installed"


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (GC collected before each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_of(run: Callable[[], float], repeats: int = 5, warmup: int = 0) -> float:
    """Median of the seconds that ``run()`` measures and returns itself.

    With more than one repeat, garbage is collected before each, so no run
    pays for an earlier one's garbage; a single (smoke) run skips that, as
    a full collection costs ~0.1 s once LangGraph is imported.
    """
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if repeats > 1:
            gc.collect()
        times.append(run())
    return statistics.median(times)


def median_async(make: Callable[[], Awaitable[object]], repeats: int = 5, warmup: int = 0) -> float:
    """Median wall time of awaiting ``make()`` in a fresh event loop, loop start-up excluded.

    ``warmup`` untimed runs go first (lazy imports and caches of the engine
    under test are then not billed to the first repeat).
    """

    async def timed() -> float:
        start = time.perf_counter()
        await make()
        return time.perf_counter() - start

    return median_of(lambda: asyncio.run(timed()), repeats, warmup)


def medians_interleaved(
    makes: Sequence[Callable[[], Awaitable[object]]], repeats: int = 5
) -> list[float]:
    """Like :func:`median_async` for several workloads, taking turns run by run.

    On a shared machine a noisy minute then slows every workload alike, so
    their ratio (a growth factor, say) holds better than with back-to-back medians.
    """

    def timer(make: Callable[[], Awaitable[object]]) -> Callable[[], float]:
        async def timed() -> float:
            start = time.perf_counter()
            await make()
            return time.perf_counter() - start

        return lambda: asyncio.run(timed())

    runs = [timer(make) for make in makes]
    times: list[list[float]] = [[] for _ in makes]
    for _ in range(repeats):
        for run, seen in zip(runs, times, strict=True):
            if repeats > 1:
                gc.collect()
            seen.append(run())
    return [statistics.median(seen) for seen in times]


def median_timed(
    make: Callable[[], Coroutine[Any, Any, float]], repeats: int = 5, warmup: int = 0
) -> float:
    """Median of the seconds each ``make()`` coroutine measures itself, each in a fresh loop.

    For runs with set-up that must not be timed (opening a database, say).
    """
    return median_of(lambda: asyncio.run(make()), repeats, warmup)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats get 4 significant digits."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
