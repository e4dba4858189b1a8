"""LocalRunner: one bounded thread pool for every run, and retries that wait for abandoned calls."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.agents import AgentSpec, describe_agent
from heddle.core.errors import ConfigurationError
from heddle.messaging import EventType, MessageBus
from heddle.workflows import LocalRunner
from heddle.workflows.runner import RunnerSession

WAIT = 10.0  # how long a blocked agent waits before giving up: a bound, never the expected path

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR")


class Calls:
    """Sync agent calls seen so far: how many ran at once, on which threads.

    Each call waits until ``gate`` calls are in flight together (or ``WAIT``
    passes), so a pool of ``gate`` threads is shown to be used in full.
    """

    def __init__(self, gate: int) -> None:
        self.gate = gate
        self.full = threading.Event()
        self.lock = threading.Lock()
        self.running = self.peak = self.count = 0
        self.threads: set[threading.Thread] = set()
        self.active_counts: list[int] = []

    def __call__(self, task: Any) -> Any:
        with self.lock:
            self.count += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread())
            self.active_counts.append(threading.active_count())
            if self.running >= self.gate:
                self.full.set()
        try:
            self.full.wait(WAIT)
            return task
        finally:
            with self.lock:
                self.running -= 1


class HangsFirst:
    """A sync agent whose first call blocks until released (then returns or raises)."""

    def __init__(self, *, first_raises: bool = False) -> None:
        self.first_raises = first_raises
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls = self.running = self.peak = 0
        self.first_thread: threading.Thread | None = None

    def __call__(self, task: Any) -> str:
        with self.lock:
            self.calls += 1
            n = self.calls
            if n == 1:
                self.first_thread = threading.current_thread()
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if n == 1:
                self.entered.set()
                if not self.release.wait(WAIT):
                    raise TimeoutError("the test never released the first call")
                if self.first_raises:
                    raise ConnectionError("the first call failed late")
            return f"{task} from call {n}"
        finally:
            with self.lock:
                self.running -= 1


async def call_all(session: RunnerSession, spec: AgentSpec, count: int) -> list[Any]:
    return list(await asyncio.gather(*(session.call(spec, k) for k in range(count))))


async def abandon_first_call(session: RunnerSession, spec: AgentSpec, task: Any) -> None:
    """Start a call, wait until its thread is in the agent, then cancel it (as a timeout does)."""
    agent = spec.agent
    assert isinstance(agent, HangsFirst)
    first = asyncio.create_task(session.call(spec, task))
    assert await asyncio.to_thread(agent.entered.wait, WAIT)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


# --- one pool for every run -------------------------------------------------------------


async def test_concurrent_runs_share_the_runners_threads() -> None:
    """200 concurrent runs of 5 sync nodes each: at most max_threads calls and threads at once."""
    calls = Calls(gate=4)
    graph = WorkflowGraph("sync")
    for k in range(5):
        graph.add_node(f"n{k}", calls)
    runner = LocalRunner(max_threads=4)
    executor = WorkflowExecutor(max_concurrent=10, runner=runner)
    before = threading.active_count()
    try:
        results = await asyncio.gather(*(executor.execute(graph, input=k) for k in range(200)))
    finally:
        await runner.aclose()
    assert all(result.ok for result in results)
    assert calls.count == 1000
    assert calls.peak == 4  # reached, never passed
    assert len(calls.threads) <= 4  # not a pool per run
    assert max(calls.active_counts) <= before + 4


async def test_by_default_the_pool_has_the_largest_max_concurrent_of_its_sessions() -> None:
    """Sessions opened with max_concurrent 2 and 3 share 3 threads."""
    calls = Calls(gate=3)
    spec = describe_agent(calls, node="n")
    runner = LocalRunner()
    small, large = runner.open(2), runner.open(3)
    await asyncio.gather(call_all(small, spec, 6), call_all(large, spec, 6))
    await runner.aclose()
    assert calls.peak == 3
    assert len(calls.threads) == 3


async def test_max_threads_bounds_sync_calls_below_max_concurrent() -> None:
    """LocalRunner(max_threads=2) runs 2 sync calls at once, whatever the session's bound."""
    calls = Calls(gate=2)
    runner = LocalRunner(max_threads=2)
    assert await call_all(runner.open(10), describe_agent(calls, node="n"), 8) == list(range(8))
    await runner.aclose()
    assert calls.peak == 2
    assert len(calls.threads) == 2


async def test_a_later_session_with_a_larger_max_concurrent_gets_a_larger_pool() -> None:
    """After a session of 1 used the pool, a session of 3 runs 3 sync calls at once."""
    calls = Calls(gate=3)
    spec = describe_agent(calls, node="n")
    runner = LocalRunner()
    calls.full.set()  # the first session's call must not wait for company
    assert await runner.open(1).call(spec, "alone") == "alone"
    calls.full.clear()
    calls.peak = 0
    assert await call_all(runner.open(3), spec, 6) == list(range(6))
    await runner.aclose()
    assert calls.peak == 3


def test_one_runner_serves_event_loops_one_after_another() -> None:
    """Two asyncio.run calls use the same pool thread; closing a session keeps the pool."""
    runner = LocalRunner(max_threads=1)
    spec = describe_agent(lambda task: threading.current_thread(), node="n")

    async def one_run() -> Any:
        session = runner.open(1)
        try:
            return await session.call(spec, None)
        finally:
            await session.aclose()

    first = asyncio.run(one_run())
    second = asyncio.run(one_run())
    asyncio.run(runner.aclose())
    assert first is second
    assert first is not threading.current_thread()


async def test_aclose_does_not_wait_for_a_stuck_call_and_the_runner_starts_again() -> None:
    """aclose() returns while a thread is still in an agent; that thread then ends; reusable."""
    agent = HangsFirst()
    spec = describe_agent(agent, node="n")
    runner = LocalRunner(max_threads=1)
    await abandon_first_call(runner.open(1), spec, "t")
    await runner.aclose()
    await runner.aclose()  # idempotent
    assert agent.running == 1  # still in the agent: aclose did not wait for it
    stuck = agent.first_thread
    assert stuck is not None
    agent.release.set()
    await asyncio.to_thread(stuck.join, WAIT)
    assert not stuck.is_alive()  # the pool was shut down: its thread ended after the call
    assert await runner.open(1).call(spec, "u") == "u from call 2"  # a new pool
    await runner.aclose()


async def test_each_sync_call_sees_its_callers_context_variables() -> None:
    """Two calls sharing one thread each see the context variables of their own caller."""
    runner = LocalRunner(max_threads=1)
    spec = describe_agent(lambda task: VAR.get(), node="n")

    async def call_with(value: str) -> str:
        VAR.set(value)
        result: str = await runner.open(1).call(spec, None)
        return result

    assert await asyncio.gather(call_with("a"), call_with("b")) == ["a", "b"]
    await runner.aclose()


async def test_async_agents_start_no_thread() -> None:
    """A session that only calls async agents leaves the thread count alone."""

    async def echo(task: Any) -> Any:
        return task

    runner = LocalRunner()
    before = set(threading.enumerate())
    assert await runner.open(4).call(describe_agent(echo, node="n"), 1) == 1
    assert set(threading.enumerate()) <= before  # threads of earlier tests may have ended
    await runner.aclose()


def test_max_threads_must_be_a_positive_int() -> None:
    """0, a negative, a bool, a float or a string is a ConfigurationError naming max_threads."""
    bad: list[Callable[[], object]] = [
        lambda: LocalRunner(max_threads=0),
        lambda: LocalRunner(max_threads=-1),
        lambda: LocalRunner(max_threads=True),
        lambda: LocalRunner(max_threads=2.0),  # type: ignore[arg-type]
        lambda: LocalRunner(max_threads="4"),  # type: ignore[arg-type]
    ]
    for make in bad:
        with pytest.raises(ConfigurationError, match="max_threads") as info:
            make()
        assert info.value.parameter == "max_threads"
    assert repr(LocalRunner()) == "LocalRunner(max_threads=None)"


# --- a retry never overlaps the call it retries ---------------------------------------------


async def test_a_retry_waits_for_the_abandoned_call_and_takes_its_result() -> None:
    """The retry does not call the agent while the abandoned call runs; it returns that result."""
    agent = HangsFirst()
    spec, other = describe_agent(agent, node="n"), describe_agent(agent, node="m")
    session = LocalRunner(max_threads=2).open(2)
    task = "t"
    await abandon_first_call(session, spec, task)
    retry = asyncio.create_task(session.call(spec, task))
    # Another node of the same agent is not held back. Its call is queued after the
    # retry's would be, on the one free thread, so "call 2" means the retry made none.
    assert await asyncio.create_task(session.call(other, "u")) == "u from call 2"
    assert not retry.done()
    agent.release.set()
    assert await retry == "t from call 1"
    assert agent.calls == 2  # one call of n, one of m


async def test_a_retry_calls_again_once_the_abandoned_call_has_failed() -> None:
    """When the abandoned call raises, the retry calls the agent afresh, after it ended."""
    agent = HangsFirst(first_raises=True)
    spec = describe_agent(agent, node="n")
    session = LocalRunner(max_threads=2).open(2)
    task = "t"
    await abandon_first_call(session, spec, task)
    retry = asyncio.create_task(session.call(spec, task))
    # Queued after the retry's call would be, on the one free thread: once it is done,
    # a retry that did not wait would have run beside the first call.
    marker = describe_agent(lambda task: task, node="marker")
    assert await asyncio.create_task(session.call(marker, "u")) == "u"
    agent.release.set()
    assert await retry == "t from call 2"
    assert agent.peak == 1  # the two calls never ran at once


async def test_a_retry_cancelled_while_waiting_leaves_the_next_one_waiting() -> None:
    """A retry that times out while the abandoned call runs hands the wait on to the next one."""
    agent = HangsFirst()
    spec, other = describe_agent(agent, node="n"), describe_agent(agent, node="m")
    session = LocalRunner(max_threads=2).open(2)
    task = "t"
    await abandon_first_call(session, spec, task)
    retry = asyncio.create_task(session.call(spec, task))
    # Queued after the retry started (see the test above): the retry is waiting by now.
    assert await asyncio.create_task(session.call(other, "u")) == "u from call 2"
    retry.cancel()
    with pytest.raises(asyncio.CancelledError):
        await retry
    again = asyncio.create_task(session.call(spec, task))
    agent.release.set()
    assert await again == "t from call 1"
    assert agent.calls == 2


async def test_a_timed_out_sync_node_is_retried_with_the_late_result() -> None:
    """Through the executor: attempt 2 of a timed-out sync node gets attempt 1's late result."""
    agent = HangsFirst()
    bus = MessageBus()
    bus.subscribe(EventType.NODE_RETRYING, lambda event: agent.release.set())
    retry = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=False)
    graph = WorkflowGraph("late").add_node("n", agent, timeout=1.0, retry=retry)
    runner = LocalRunner()
    result = await WorkflowExecutor(runner=runner, bus=bus).execute(graph, input="t")
    await runner.aclose()
    assert result.ok, result.results["n"]
    assert result.content("n") == "t from call 1"
    assert result.results["n"]["attempts"] >= 2
    assert agent.calls == 1
