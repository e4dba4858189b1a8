"""Map nodes: one activation per item of a list made at run time, gathered back in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import heddle
from heddle.core.errors import MapError
from heddle.messaging.events import Event
from heddle.workflows import NodeStatus, RetryPolicy, RunStatus, WorkflowExecutor, WorkflowGraph

NO_WAIT = RetryPolicy(max_attempts=2, initial_delay=0.0)


async def twenty_urls(topic: Any) -> list[str]:
    return [f"https://example.org/{k}" for k in range(20)]


async def count(items: list[Any]) -> int:
    return len(items)


class Events:
    """A RunObserver keeping the events."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    async def on_event(self, event: Event) -> None:
        self.seen.append(event)

    def of(self, kind: str, node: str) -> list[dict[str, Any]]:
        return [
            dict(e.payload)
            for e in self.seen
            if e.event_type == kind and e.payload.get("node") == node
        ]


def map_reduce(summarise: Any, **keywords: Any) -> WorkflowGraph:
    g = WorkflowGraph("digest").add_node("find", twenty_urls)
    g.add_map("summarise", summarise, **keywords).add_node("reduce", count)
    return g.add_edge("find", "summarise").add_edge("summarise", "reduce")


async def test_a_map_runs_each_item_and_keeps_their_order() -> None:
    """The content is the items' contents in item order; heddle.current().item is the index."""

    async def summarise(url: str) -> str:
        await asyncio.sleep(0.001 * (20 - int(url.rsplit("/", 1)[1])))  # later items end first
        return f"{heddle.current().item}:{url.rsplit('/', 1)[1]}"

    events = Events()
    result = await WorkflowExecutor(5, observers=[events]).execute(map_reduce(summarise))
    assert result.ok
    assert result.content("summarise") == [f"{k}:{k}" for k in range(20)]
    assert result.content("reduce") == 20
    items = result.results["summarise"]["items"]
    assert [e["status"] for e in items] == [NodeStatus.SUCCEEDED] * 20
    (started,) = [e for e in events.of("node.started", "summarise") if "items" in e]
    assert started["items"] == 20
    done = events.of("node.succeeded", "summarise")
    assert sorted(e["item"] for e in done if "item" in e) == list(range(20))
    assert next(e for e in done if "item" not in e)["attempts"] == 20


async def test_a_flaky_item_is_retried_and_a_failing_one_fails_the_node() -> None:
    """Each item has its own retries; one item failing for good fails the node, naming it."""
    tries: dict[int, int] = {}

    async def summarise(url: str) -> str:
        k = heddle.current().item
        assert k is not None
        tries[k] = tries.get(k, 0) + 1
        if k == 3 and tries[k] == 1:
            raise ConnectionError("503")
        if k == 11:
            raise ValueError("not a page")
        return url

    result = await WorkflowExecutor(4).execute(map_reduce(summarise, retry=NO_WAIT))
    assert result.status == RunStatus.FAILED
    node = result.results["summarise"]
    assert node["status"] == NodeStatus.FAILED
    assert node["error_type"] == "heddle.core.errors.MapError"
    assert node["error"] == (
        "MapError: map node 'summarise': 1 of 20 items failed (items 11); "
        "item 11: ValueError: not a page"
    )
    assert "not a page" in (node.get("traceback") or "")
    items = node["items"]
    assert items[3] == {"status": NodeStatus.SUCCEEDED, "error": None, "attempts": 2}
    assert items[11]["status"] == NodeStatus.FAILED and items[11]["attempts"] == 2
    assert node["content"][3] == "https://example.org/3"  # the work done is kept
    assert node["content"][11] is None
    assert result.results["reduce"]["error"] == "upstream node 'summarise' failed"


async def test_an_empty_list_succeeds_with_an_empty_list() -> None:
    """No items: the node succeeds at once with []."""

    async def nothing(topic: Any) -> list[str]:
        return []

    g = WorkflowGraph("g").add_node("find", nothing).add_map("each", count)
    result = await WorkflowExecutor().execute(g.add_edge("find", "each"))
    assert result.ok and result.content("each") == []


@pytest.mark.parametrize("task", [{"a": 1}, "text", None, 3], ids=["dict", "str", "None", "int"])
async def test_a_task_that_is_not_a_list_fails_the_node_naming_its_type(task: Any) -> None:
    """A clear MapError naming the node and the type it got; the agent is never called."""
    called = []

    async def each(item: Any) -> Any:
        called.append(item)

    g = WorkflowGraph("g").add_map("each", each, task=lambda ctx: task)
    result = await WorkflowExecutor().execute(g)
    each_result = result.results["each"]
    assert each_result["status"] == NodeStatus.FAILED
    assert each_result["error"] == (
        "MapError: map node 'each': its task must be a list (one activation per item), "
        f"got {type(task).__name__}"
    )
    assert called == []
    assert issubclass(MapError, heddle.HeddleError)


async def test_items_share_the_runs_one_concurrency_bound() -> None:
    """A map beside another branch: never more than max_concurrent calls, and it is reached."""
    running = peak = 0
    gate = asyncio.Event()

    async def work(task: Any) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak == 3:
            gate.set()
        await gate.wait()
        running -= 1
        return task

    async def items(task: Any) -> list[int]:
        return list(range(10))

    g = WorkflowGraph("g").add_node("find", items).add_map("each", work).add_node("side", work)
    g.add_edge("find", "each").add_edge("find", "side")
    result = await asyncio.wait_for(WorkflowExecutor(3).execute(g), 10)
    assert result.ok
    assert peak == 3


async def test_each_item_has_its_own_timeout() -> None:
    """An item that overruns fails alone; the others are not cut short."""

    async def slow_one(k: int) -> int:
        if k == 1:
            await asyncio.sleep(30)
        return k

    async def three(task: Any) -> list[int]:
        return [0, 1, 2]

    g = WorkflowGraph("g").add_node("find", three)
    g.add_map("each", slow_one, timeout=0.05, retry=RetryPolicy(max_attempts=1))
    result = await WorkflowExecutor().execute(g.add_edge("find", "each"))
    items = result.results["each"]["items"]
    assert [e["status"] for e in items] == ["succeeded", "failed", "succeeded"]
    assert "NodeTimeoutError" in (items[1]["error"] or "")
    assert result.results["each"]["content"] == [0, None, 2]


async def test_a_resumed_map_runs_only_the_items_that_did_not_succeed(tmp_path: Path) -> None:
    """Every item is checkpointed as it ends: a resume runs the failed items only."""
    calls: list[int] = []
    broken = {3, 7}

    async def summarise(url: str) -> str:
        k = heddle.current().item
        assert k is not None
        calls.append(k)
        if k in broken:
            raise ValueError("down")
        return url

    g = map_reduce(summarise, retry=RetryPolicy(max_attempts=1))
    async with WorkflowExecutor(3, checkpointer=tmp_path / "runs.db") as ex:
        first = await ex.execute(g, workflow_id="m-1")
        assert not first.ok
        rows = await ex.checkpointer.activation_results("m-1")  # type: ignore[union-attr]
        stored = {a.item: r["status"] for a, r in rows.items() if a.node == "summarise"}
        assert stored[None] == NodeStatus.FAILED and stored[3] == NodeStatus.FAILED
        assert sum(status == NodeStatus.SUCCEEDED for status in stored.values()) == 18
        broken.clear()
        calls.clear()
        second = await ex.resume("m-1", g)
    assert second.ok
    assert sorted(calls) == [3, 7]
    assert second.content("reduce") == 20


async def test_a_map_inside_a_loop_runs_its_items_each_iteration() -> None:
    """Activations are (node, iteration, item): a loop's next round maps again."""
    seen: list[tuple[int, int | None]] = []

    async def plan(task: Any) -> list[int]:
        return [1, 2, 3]

    async def each(k: int) -> int:
        ctx = heddle.current()
        seen.append((ctx.iteration, ctx.item))
        return k * 10

    g = WorkflowGraph("g").add_node("plan", plan).add_map("each", each)
    g.add_edge("plan", "each").add_edge("each", "plan", max_iterations=2)
    result = await WorkflowExecutor(2).execute(g)
    assert result.ok
    assert sorted(seen) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [r["content"] for r in result.iterations("each")] == [[10, 20, 30]] * 2


async def test_a_map_routes_on_its_list() -> None:
    """Conditions after a map see the list of the items' contents."""

    async def three(task: Any) -> list[int]:
        return [1, 2, 3]

    async def double(k: int) -> int:
        return 2 * k

    g = WorkflowGraph("g").add_node("find", three).add_map("double", double)
    g.add_node("big", count).add_node("small", count).add_edge("find", "double")
    g.add_edge("double", "big", when=lambda xs: sum(xs) > 10)
    g.add_edge("double", "small", when=lambda xs: sum(xs) <= 10)
    result = await WorkflowExecutor().execute(g)
    assert result.ok
    assert result.results["double"]["taken"] == ["big"]


def test_a_map_node_is_drawn_as_a_subroutine_and_changes_the_fingerprint() -> None:
    """Mermaid [[...]], DOT double border; a map is a structural change."""
    plain = WorkflowGraph("g").add_node("each", count)
    mapped = WorkflowGraph("g").add_map("each", count)
    assert '    n0[["each"]]' in mapped.to_mermaid()
    assert '"each" [peripheries=2];' in mapped.to_dot()
    assert plain.fingerprint() != mapped.fingerprint()
    assert mapped.nodes["each"].map and not plain.nodes["each"].map


async def test_fail_fast_cancels_a_maps_items_in_flight() -> None:
    """Another node failing under fail_fast stops the items still running; the map is skipped."""
    started = asyncio.Event()

    async def forever(k: int) -> int:
        started.set()
        await asyncio.sleep(30)
        return k

    async def boom(task: Any) -> None:
        await started.wait()
        raise ValueError("boom")

    async def three(task: Any) -> list[int]:
        return [1, 2, 3]

    g = WorkflowGraph("g").add_node("find", three).add_map("each", forever)
    g.add_node("bad", boom, retry=RetryPolicy(max_attempts=1)).add_edge("find", "each")
    result = await asyncio.wait_for(WorkflowExecutor(4, fail_fast=True).execute(g), 10)
    assert result.results["bad"]["status"] == NodeStatus.FAILED
    each = result.results["each"]
    assert each["status"] == NodeStatus.SKIPPED
    assert each["error"] == "cancelled: fail_fast after node 'bad' failed"


async def test_a_resume_does_not_reuse_a_result_for_a_different_item(tmp_path: Path) -> None:
    """Items are matched by index and by what they hold: a changed list runs the changed item."""
    pages = ["tides", "waves", "reefs"]
    down = {"waves"}
    calls: list[str] = []

    async def summarise(page: str) -> str:
        calls.append(page)
        if page in down:
            raise ConnectionError("down")
        return page.upper()

    g = WorkflowGraph("digest").add_map(
        "summarise", summarise, task=lambda ctx: list(pages), retry=RetryPolicy(max_attempts=1)
    )
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        assert not (await ex.execute(g, workflow_id="d-1")).ok
        down.clear()
        pages[:] = ["kelp", "waves"]
        calls.clear()
        result = await ex.resume("d-1", g)
    assert result.ok
    assert result.content("summarise") == ["KELP", "WAVES"]
    assert sorted(calls) == ["kelp", "waves"]


def test_run_errors_do_not_read_as_raised_while_looking_for_a_loop() -> None:
    """executor.run(): a failed node's traceback starts in the agent, with no unrelated cause."""

    async def bad(task: Any) -> None:
        raise LookupError("x")

    g = WorkflowGraph("g").add_node("bad", bad, retry=RetryPolicy(max_attempts=1))
    traceback = WorkflowExecutor().run(g).results["bad"].get("traceback") or ""
    assert "no running event loop" not in traceback
    assert "LookupError: x" in traceback


async def test_under_fail_fast_a_failing_item_fails_its_map_and_stops_the_run() -> None:
    """fail_fast: the first item to fail for good ends the map at once; the others stop."""

    async def item(k: int) -> int:
        if k == 0:
            raise ValueError("bad item")
        await asyncio.sleep(30)
        return k

    async def three(task: Any) -> list[int]:
        return [0, 1, 2]

    g = WorkflowGraph("g").add_node("find", three)
    g.add_map("each", item, retry=RetryPolicy(max_attempts=1)).add_edge("find", "each")
    result = await asyncio.wait_for(WorkflowExecutor(4, fail_fast=True).execute(g), 10)
    each = result.results["each"]
    assert each["status"] == NodeStatus.FAILED
    assert each["error"] == (
        "MapError: map node 'each': 1 of 3 items failed (items 0); item 0: ValueError: bad item"
    )
    assert [e["status"] for e in each["items"]] == ["failed", "skipped", "skipped"]
