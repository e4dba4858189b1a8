"""Faults the chaos trials found (issue 10), each pinned down by a focused test.

An agent that raises CancelledError itself (it awaited a task or a future that
someone else cancelled, or something cancelled its worker) must fail its node
like any error; ``fail_fast`` with a checkpointer must return a failed result
every time; a cancel of ``execute()`` from outside must reach the canceller and
leave nothing running and a resumable run; and no ExceptionGroup, KeyError or
RecursionError may escape ``execute()``, whatever an agent returns or raises.

Every test runs under an overall ``asyncio.timeout``, so a run that hangs fails
the test instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from heddle import ExecutionContext, RetryPolicy, WorkflowExecutor, WorkflowGraph, WorkflowResult
from heddle.workflows import RunRecord, SQLiteCheckpointer

#: Seconds any one test may take before a hang counts as a failure.
LIMIT = 20

#: Retries allowed, so a test can tell "not retried" from "no retries allowed".
RETRYING = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=False)

Agent = Callable[[Any], Awaitable[Any]]


@pytest.fixture(params=[False, True], ids=["in-memory", "checkpointed"])
async def checkpointer(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """None, or an SQLite checkpointer in tmp_path (closed after the test)."""
    if not request.param:
        yield None
        return
    async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
        yield store


class Calls(Counter[str]):
    """How often each node's agent was called."""

    def agent(self, node: str, behave: Agent | None = None) -> Agent:
        """An async agent for ``node`` that counts its calls, then does ``behave`` (or returns)."""

        async def run(task: Any) -> Any:
            self[node] += 1
            if behave is None:
                return f"{node} done"
            return await behave(task)

        run.__qualname__ = node  # one circuit breaker per node
        return run


async def awaits_a_cancelled_task(task: Any) -> None:
    inner = asyncio.create_task(asyncio.sleep(3600))
    inner.cancel()
    await inner  # raises the inner task's CancelledError here, in the agent


async def awaits_a_cancelled_future(task: Any) -> None:
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def cancels_its_own_task(task: Any) -> None:
    current = asyncio.current_task()
    assert current is not None
    current.cancel()  # a third party cancelling the worker running this agent
    await asyncio.sleep(0)  # the cancel is delivered here


def raises_cancelled_in_a_thread(calls: Calls, node: str) -> Callable[[Any], None]:
    def run(task: Any) -> None:
        calls[node] += 1
        raise asyncio.CancelledError

    run.__qualname__ = node
    return run


def fork(calls: Calls, middle: Any) -> WorkflowGraph:
    """start -> (middle -> after, sibling): middle's fate must not touch sibling."""
    g = WorkflowGraph("fork").add_node("start", calls.agent("start"))
    g.add_node("middle", middle).add_node("after", calls.agent("after"))
    g.add_node("sibling", calls.agent("sibling"))
    g.add_edge("start", "middle").add_edge("middle", "after").add_edge("start", "sibling")
    return g


async def recorded_successes(checkpointer: SQLiteCheckpointer | None, wid: str) -> set[str]:
    if checkpointer is None:
        return set()
    results = await checkpointer.node_results(wid)
    return {node for node, r in results.items() if r["status"] == "succeeded"}


async def assert_consistent(
    result: WorkflowResult, graph: WorkflowGraph, checkpointer: SQLiteCheckpointer | None
) -> None:
    """Every node ended once; only nodes whose predecessors succeeded ran; the DB agrees."""
    assert list(result.results) == list(graph)
    statuses = {node: r["status"] for node, r in result.results.items()}
    assert set(statuses.values()) <= {"succeeded", "failed", "skipped"}
    for node, status in statuses.items():
        if status != "skipped":
            assert all(statuses[p] == "succeeded" for p in graph.predecessors(node)), node
    assert result.ok == all(s == "succeeded" for s in statuses.values())
    if checkpointer is not None:
        succeeded = {node for node, s in statuses.items() if s == "succeeded"}
        assert await recorded_successes(checkpointer, result.workflow_id) == succeeded
        record = await checkpointer.get_run(result.workflow_id)
        assert record is not None and record.status == result.status


# --- an agent raising CancelledError itself -----------------------------------------------

CANCELLING_AGENTS = {
    "awaits-a-cancelled-task": awaits_a_cancelled_task,
    "awaits-a-cancelled-future": awaits_a_cancelled_future,
    # current_task().cancel() in an agent: a third party cancelling the worker
    "cancels-its-own-worker": cancels_its_own_task,
}


@pytest.mark.parametrize("max_concurrent", [1, 4])
@pytest.mark.parametrize("behave", CANCELLING_AGENTS.values(), ids=CANCELLING_AGENTS.keys())
async def test_an_agent_raising_cancelled_error_fails_only_its_node(
    behave: Agent, max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """Its node fails once (not retried) naming CancelledError; sibling runs, after is skipped."""
    calls = Calls()
    graph = fork(calls, calls.agent("middle", behave))
    ex = WorkflowExecutor(max_concurrent=max_concurrent, retry=RETRYING, checkpointer=checkpointer)
    async with asyncio.timeout(LIMIT):
        result = await ex.execute(graph, input="x")
    middle = result.results["middle"]
    assert middle["status"] == "failed"
    assert "CancelledError" in (middle["error"] or "")
    assert middle["attempts"] == calls["middle"] == 1
    assert result.results["sibling"]["status"] == "succeeded"
    assert result.results["after"]["status"] == "skipped"
    assert calls["after"] == 0
    assert result.status == "failed"
    await assert_consistent(result, graph, checkpointer)


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_a_sync_agent_raising_cancelled_error_fails_only_its_node(
    max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """A plain function raising CancelledError in its thread fails its node like any error."""
    calls = Calls()
    graph = fork(calls, raises_cancelled_in_a_thread(calls, "middle"))
    ex = WorkflowExecutor(max_concurrent=max_concurrent, retry=RETRYING, checkpointer=checkpointer)
    async with asyncio.timeout(LIMIT):
        result = await ex.execute(graph, input="x")
    assert result.results["middle"]["status"] == "failed"
    assert "CancelledError" in (result.results["middle"]["error"] or "")
    assert result.results["middle"]["attempts"] == calls["middle"] == 1
    assert result.results["sibling"]["status"] == "succeeded"
    assert result.results["after"]["status"] == "skipped"
    await assert_consistent(result, graph, checkpointer)


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_many_nodes_raising_cancelled_error_leave_every_other_node_ended(
    max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """More cancelling nodes than workers: each fails, every other node still runs to its end."""
    calls = Calls()
    graph = WorkflowGraph("wide")
    for i in range(10):
        graph.add_node(f"c{i}", calls.agent(f"c{i}", awaits_a_cancelled_future))
        graph.add_node(f"ok{i}", calls.agent(f"ok{i}"))
        graph.add_node(f"after{i}", calls.agent(f"after{i}")).add_edge(f"c{i}", f"after{i}")
    ex = WorkflowExecutor(max_concurrent=max_concurrent, retry=RETRYING, checkpointer=checkpointer)
    async with asyncio.timeout(LIMIT):
        result = await ex.execute(graph)
    assert result.nodes_with_status("failed") == [f"c{i}" for i in range(10)]
    assert result.nodes_with_status("succeeded") == [f"ok{i}" for i in range(10)]
    assert result.nodes_with_status("skipped") == [f"after{i}" for i in range(10)]
    await assert_consistent(result, graph, checkpointer)


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_a_task_callable_raising_cancelled_error_fails_its_node(
    max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """A task callable that awaits a cancelled future fails its node without calling the agent."""
    calls = Calls()

    async def task(ctx: ExecutionContext) -> None:
        await awaits_a_cancelled_future(None)

    graph = WorkflowGraph("task").add_node("start", calls.agent("start"))
    graph.add_node("middle", calls.agent("middle"), task=task).add_edge("start", "middle")
    graph.add_node("sibling", calls.agent("sibling")).add_edge("start", "sibling")
    ex = WorkflowExecutor(max_concurrent=max_concurrent, retry=RETRYING, checkpointer=checkpointer)
    async with asyncio.timeout(LIMIT):
        result = await ex.execute(graph)
    assert result.results["middle"]["status"] == "failed"
    assert "CancelledError" in (result.results["middle"]["error"] or "")
    assert calls["middle"] == 0
    assert result.results["sibling"]["status"] == "succeeded"
    await assert_consistent(result, graph, checkpointer)


# --- fail_fast ----------------------------------------------------------------------------


def racing_graph(calls: Calls, rng: random.Random) -> WorkflowGraph:
    """Eight short chains racing one failing node: its failure lands while others record."""

    def spinning(node: str, fail: bool) -> Agent:
        spins = rng.randint(0, 3)

        async def behave(task: Any) -> str:
            for _ in range(spins):
                await asyncio.sleep(0)
            if fail:
                raise RuntimeError(f"{node} broke")
            return f"{node} done"

        return calls.agent(node, behave)

    graph = WorkflowGraph("racing")
    for i in range(8):
        graph.add_node(f"w{i}", spinning(f"w{i}", fail=False))
        graph.add_node(f"a{i}", spinning(f"a{i}", fail=False)).add_edge(f"w{i}", f"a{i}")
    graph.add_node("bad", spinning("bad", fail=True))
    return graph


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_fail_fast_returns_a_failed_result_every_time(
    max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """50 racing runs: each returns "failed", with every node ended and the DB agreeing."""
    for rep in range(50):
        calls = Calls()
        graph = racing_graph(calls, random.Random(rep))
        ex = WorkflowExecutor(
            max_concurrent=max_concurrent,
            retry=RetryPolicy(max_attempts=1),
            fail_fast=True,
            checkpointer=checkpointer,
        )
        async with asyncio.timeout(LIMIT):
            result = await ex.execute(graph, workflow_id=f"fail-fast-{rep}")
        assert result.status == "failed", rep
        assert result.results["bad"]["status"] == "failed", rep
        for node, r in result.results.items():
            if r["status"] == "skipped":
                assert "fail_fast" in (r["error"] or "") or "'bad'" in (r["error"] or ""), node
                assert calls[node] <= r["attempts"], node  # never run, or run and cancelled
        await assert_consistent(result, graph, checkpointer)


async def test_a_fail_fast_run_is_resumed_without_rerunning_its_successes(tmp_path: Path) -> None:
    """After a fail_fast stop, resume() runs only what did not succeed, and then succeeds."""
    broken = True
    calls = Calls()

    async def bad(task: Any) -> str:
        if broken:
            raise RuntimeError("bad broke")
        return "fixed"

    graph = WorkflowGraph("racing").add_node("bad", calls.agent("bad", bad))
    for i in range(8):
        graph.add_node(f"w{i}", calls.agent(f"w{i}")).add_node(f"a{i}", calls.agent(f"a{i}"))
        graph.add_edge(f"w{i}", f"a{i}")
    async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
        ex = WorkflowExecutor(
            max_concurrent=4, retry=RetryPolicy(max_attempts=1), fail_fast=True, checkpointer=store
        )
        async with asyncio.timeout(LIMIT):
            first = await ex.execute(graph, workflow_id="ff")
            assert first.status == "failed"
            done = await recorded_successes(store, "ff")
            before = Counter(calls)
            broken = False
            second = await ex.resume("ff", graph)
        await assert_consistent(second, graph, store)
    assert second.ok
    assert all(calls[node] == before[node] for node in done)
    assert all(second.results[node].get("resumed") for node in done)


# --- a cancel of execute() from outside ---------------------------------------------------


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_cancelling_execute_reaches_the_caller_and_leaves_nothing_running(
    max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """The canceller gets CancelledError, every agent task is done, and the run is resumable."""
    calls = Calls()
    started, hanging = asyncio.Event(), True
    cancelled = 0

    async def hangs(task: Any) -> str:
        nonlocal cancelled
        if not hanging:
            return "released"
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return "never"

    graph = WorkflowGraph("held").add_node("first", calls.agent("first"))
    graph.add_node("hangs", calls.agent("hangs", hangs)).add_edge("first", "hangs")
    graph.add_node("after", calls.agent("after")).add_edge("hangs", "after")
    ex = WorkflowExecutor(max_concurrent=max_concurrent, retry=RETRYING, checkpointer=checkpointer)
    before = asyncio.all_tasks()
    async with asyncio.timeout(LIMIT):
        run = asyncio.create_task(ex.execute(graph, workflow_id="held"))
        await started.wait()  # "first" is recorded: it ends before its dependent starts
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert cancelled == 1
    assert asyncio.all_tasks() - before == set()
    if checkpointer is None:
        return
    record = await checkpointer.get_run("held")
    assert record is not None
    assert record.status != "succeeded" and record.state != "running"
    assert await recorded_successes(checkpointer, "held") == {"first"}
    hanging = False
    async with asyncio.timeout(LIMIT):
        resumed = await ex.resume("held", graph)
    assert resumed.ok
    assert calls == {"first": 1, "hangs": 2, "after": 1}
    assert resumed.results["first"].get("resumed") is True


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_a_cancel_landing_as_fail_fast_stops_the_run_still_reaches_the_caller(
    max_concurrent: int, checkpointer: SQLiteCheckpointer | None
) -> None:
    """Cancelled just as a node fails under fail_fast, execute() raises CancelledError."""
    calls = Calls()
    runs: list[asyncio.Task[WorkflowResult]] = []

    async def cancels_the_run_then_fails(task: Any) -> None:
        runs[0].cancel()  # the caller gives up at the moment the node fails
        raise RuntimeError("broke")

    graph = WorkflowGraph("stop").add_node(
        "fails", calls.agent("fails", cancels_the_run_then_fails)
    )
    graph.add_node("other", calls.agent("other")).add_node("after", calls.agent("after"))
    graph.add_edge("other", "after")
    ex = WorkflowExecutor(
        max_concurrent=max_concurrent,
        retry=RetryPolicy(max_attempts=1),
        fail_fast=True,
        checkpointer=checkpointer,
    )
    before = asyncio.all_tasks()
    async with asyncio.timeout(LIMIT):
        runs.append(asyncio.create_task(ex.execute(graph, workflow_id="stop")))
        with pytest.raises(asyncio.CancelledError):
            await runs[0]
    assert calls["fails"] == 1
    assert asyncio.all_tasks() - before == set()
    if checkpointer is not None:
        record = await checkpointer.get_run("stop")
        assert record is not None
        assert record.status != "succeeded" and record.state != "running"


class PausingCheckpointer(SQLiteCheckpointer):
    """An SQLite checkpointer that holds the run once, right after ``step``, to be cancelled there.

    A cancel that lands while a write is in flight does not stop the write (it
    finishes on the checkpointer's thread): pausing just after it is the same.
    """

    def __init__(self, path: Path, step: str) -> None:
        super().__init__(path)
        self.step = step
        self.paused = asyncio.Event()
        self.release = asyncio.Event()

    async def create_run(self, record: RunRecord) -> None:
        await super().create_run(record)
        await self._pause("create_run")

    async def add_event(self, workflow_id: str, event: dict[str, Any], **kwargs: Any) -> None:
        await super().add_event(workflow_id, event, **kwargs)
        await self._pause("add_event")

    async def _pause(self, step: str) -> None:
        if step == self.step and not self.paused.is_set():
            self.paused.set()
            await self.release.wait()


@pytest.mark.parametrize("step", ["create_run", "add_event"])
async def test_cancelling_execute_as_it_records_the_start_leaves_the_run_resumable(
    tmp_path: Path, step: str
) -> None:
    """A cancel while execute() records the run (or its first event) leaves no live lease."""
    calls = Calls()
    graph = WorkflowGraph("early").add_node("only", calls.agent("only"))
    async with PausingCheckpointer(tmp_path / "runs.db", step) as store:
        ex = WorkflowExecutor(checkpointer=store)
        async with asyncio.timeout(LIMIT):
            run = asyncio.create_task(ex.execute(graph, workflow_id="early"))
            await store.paused.wait()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            record = await store.get_run("early")
            assert record is not None  # written before the pause
            assert record.status != "succeeded"
            assert record.state != "running", "the cancelled run still holds a live lease"
            resumed = await ex.resume("early", graph)
    assert resumed.ok and calls["only"] == 1


# --- nothing but a result (or the caller's own cancel) leaves execute() --------------------


class UnprintableError(Exception):
    """An exception whose message cannot be produced: str() raises."""

    def __str__(self) -> str:
        raise ValueError("no message for you")


class SelfReferentialError(Exception):
    """An exception whose str() recurses until RecursionError."""

    def __str__(self) -> str:
        return str(self)


@pytest.mark.parametrize("error", [UnprintableError, SelfReferentialError])
async def test_an_error_that_cannot_be_printed_fails_its_node(
    error: type[Exception], checkpointer: SQLiteCheckpointer | None
) -> None:
    """An agent error whose str() raises still fails just its node, named by its type."""
    calls = Calls()

    async def raises(task: Any) -> None:
        raise error

    graph = fork(calls, calls.agent("middle", raises))
    ex = WorkflowExecutor(max_concurrent=4, retry=RETRYING, checkpointer=checkpointer)
    async with asyncio.timeout(LIMIT):
        result = await ex.execute(graph)
    assert result.results["middle"]["status"] == "failed"
    assert error.__name__ in (result.results["middle"]["error"] or "")
    assert result.results["sibling"]["status"] == "succeeded"
    await assert_consistent(result, graph, checkpointer)


async def test_a_result_too_deeply_nested_to_store_fails_its_node(tmp_path: Path) -> None:
    """A result JSON cannot encode (nested past the recursion limit) fails only its node."""
    calls = Calls()

    async def deep(task: Any) -> list[Any]:
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]
        return value

    graph = fork(calls, calls.agent("middle", deep))
    async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
        ex = WorkflowExecutor(max_concurrent=4, retry=RETRYING, checkpointer=store)
        async with asyncio.timeout(LIMIT):
            result = await ex.execute(graph)
        assert result.results["middle"]["status"] == "failed"
        assert result.results["sibling"]["status"] == "succeeded"
        assert result.results["after"]["status"] == "skipped"
        await assert_consistent(result, graph, store)
