"""MessageBus publish throughput, and history append cost: deque vs the design's list + pop(0).

Publish is timed on pre-built events (building an Event is its own row), in
one event loop per repeat; async rows include ``drain()``, so they measure
delivery, not just queueing. The "V2 design" column is a faithful copy of the
user's publish loop (snapshot the subscriber list, await each callback in
turn), which only takes async callbacks and has no isolation.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from bench._util import median_of, table
from heddle.messaging import Event, MessageBus


class _V2Bus:
    """A simple bus as V2 designs write it: snapshot, then await each callback in turn."""

    def __init__(self, max_history: int = 1000) -> None:
        self._subscribers: dict[str, list[tuple[str, Callable[[Event], Awaitable[None]]]]]
        self._subscribers = defaultdict(list)
        self._event_history: deque[Event] = deque(maxlen=max_history)

    def subscribe(self, event_type: str, callback: Callable[[Event], Awaitable[None]]) -> None:
        self._subscribers[event_type].append((str(len(self._subscribers)), callback))

    async def publish(self, event: Event) -> None:
        self._event_history.append(event)
        type_subscribers = self._subscribers.get(event.event_type, []).copy()
        for _sid, callback in type_subscribers:
            await callback(event)


def _sync_sink(event: Event) -> None:
    pass


async def _async_sink(event: Event) -> None:
    pass


def _publish_seconds(
    make_bus: Callable[[], Any], events: list[Event], *, drain: bool, interleave: bool = False
) -> float:
    async def timed() -> float:
        bus = make_bus()
        start = time.perf_counter()
        for event in events:
            await bus.publish(event)
            if interleave:  # the publisher does other work between events, as the executor does
                await asyncio.sleep(0)
        if drain:
            await bus.drain()
        return time.perf_counter() - start

    return asyncio.run(timed())


def _heddle_bus(subscribers: int, callback: Callable[[Event], Any], n: int) -> Callable[[], Any]:
    def make() -> MessageBus:
        bus = MessageBus(max_history=1000, max_pending=n + 1)
        for _ in range(subscribers):
            bus.subscribe("node.*", callback)
        return bus

    return make


def _v2_bus(subscribers: int) -> Callable[[], Any]:
    def make() -> _V2Bus:
        bus = _V2Bus(max_history=1000)
        for _ in range(subscribers):
            bus.subscribe("node.started", _async_sink)
        return bus

    return make


def publish_table(n: int, repeats: int) -> str:
    events = [Event("node.started", {"node": f"n{i}"}, workflow_id="wf") for i in range(n)]

    def per_event_us(
        make_bus: Callable[[], Any], drain: bool = False, interleave: bool = False
    ) -> float:
        def run() -> float:
            return _publish_seconds(make_bus, events, drain=drain, interleave=interleave)

        return median_of(run, repeats) / n * 1e6

    def build_events() -> float:
        start = time.perf_counter()
        for _ in range(n):
            Event("node.started", {"node": "x"}, workflow_id="wf")
        return time.perf_counter() - start

    cases: list[tuple[str, float, float]] = [
        (
            "publish, 0 subscribers",
            per_event_us(_heddle_bus(0, _sync_sink, n)),
            per_event_us(_v2_bus(0)),
        ),
    ]
    for k in (1, 10):
        cases.append(
            (
                f"publish, {k} sync subscriber(s) (V2: async, awaited inline)",
                per_event_us(_heddle_bus(k, _sync_sink, n)),
                per_event_us(_v2_bus(k)),
            )
        )
    for k in (1, 10):
        cases.append(
            (
                f"publish all, then drain: {k} async subscriber(s)",
                per_event_us(_heddle_bus(k, _async_sink, n), drain=True),
                per_event_us(_v2_bus(k)),
            )
        )
    cases.append(
        (
            "publish + sleep(0) each: 1 async subscriber",
            per_event_us(_heddle_bus(1, _async_sink, n), drain=True, interleave=True),
            per_event_us(_v2_bus(1), interleave=True),
        )
    )
    rows = [
        [
            "Event(...) construction (uuid4 + UTC now)",
            f"{median_of(build_events, repeats) / n * 1e6:.3g}",
            "",
            "",
        ]
    ]
    rows += [
        [label, f"{heddle_us:.3g}", f"{v2_us:.3g}", f"{heddle_us / v2_us:.2f}x"]
        for label, heddle_us, v2_us in cases
    ]
    headers = ["case", "heddle µs/event", "V2 design µs/event", "heddle / V2"]
    return table(headers, rows) + (
        f"\n\n{n:,} events per run, median of {repeats} runs. The V2 loop awaits each callback"
        " inside publish(): no isolation, no timeout, and a slow subscriber stalls the publisher."
    )


def _append_seconds(size: int, appends: int, kind: str) -> float:
    if kind == "deque":
        history: Any = deque(range(size), maxlen=size)

        def append(item: int) -> None:
            history.append(item)

    else:
        history = list(range(size))

        def append(item: int) -> None:
            history.append(item)
            if len(history) > size:
                history.pop(0)

    start = time.perf_counter()
    for i in range(appends):
        append(i)
    return time.perf_counter() - start


def history_table(appends: int, repeats: int) -> str:
    rows = []
    events = [Event("node.started") for _ in range(appends)]
    for size in (10, 100_000):

        def appends_ns(kind: str, size: int = size) -> float:
            return median_of(lambda: _append_seconds(size, appends, kind), repeats) / appends * 1e9

        deque_ns, list_ns = appends_ns("deque"), appends_ns("list")

        def make_full_bus(size: int = size) -> MessageBus:
            bus = MessageBus(max_history=size)
            bus._history.extend(events[:1] * size)  # start full, as in a long run
            return bus

        publish_us = (
            median_of(lambda: _publish_seconds(make_full_bus, events, drain=False), repeats)
            / appends
            * 1e6
        )
        rows.append(
            [
                f"{size:,}",
                f"{deque_ns:.3g}",
                f"{list_ns:.3g}",
                f"{list_ns / deque_ns:.1f}x",
                f"{publish_us:.3g}",
            ]
        )
    headers = [
        "max_history (full)",
        "deque append ns",
        "list append + pop(0) ns",
        "list / deque",
        "MessageBus.publish µs (0 subscribers)",
    ]
    return table(headers, rows) + f"\n\n{appends:,} appends per run, median of {repeats} runs."


def main(quick: bool = False) -> str:
    """Run the bus benchmarks and return them as Markdown."""
    n = 2_000 if quick else 50_000
    appends = 1_000 if quick else 20_000
    repeats = 1 if quick else 7
    return (
        "### Publish throughput\n\n"
        + publish_table(n, repeats)
        + "\n\n### History append cost\n\n"
        + history_table(appends, repeats)
    )


if __name__ == "__main__":
    print(main())
