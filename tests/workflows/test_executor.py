"""WorkflowExecutor: scheduling, concurrency, retries, breakers, timeouts, failures."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest

from heddle import (
    CircuitBreakerOpen,
    ExecutionContext,
    GraphValidationError,
    RetryPolicy,
    WorkflowExecutor,
    WorkflowGraph,
)
from heddle.core.errors import ConfigurationError
from heddle.testing import FakeClock
from heddle.workflows import CircuitState, LocalCircuitBreakers, LocalRunner
from heddle.workflows import _frontier as frontier_module

NO_RETRY = RetryPolicy(max_attempts=1)
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=False)


async def echo(task: Any) -> Any:
    return task


async def boom(task: Any) -> Any:
    raise ValueError(f"bad {task}")


def chain(*names: str, agent: Any = echo) -> WorkflowGraph:
    g = WorkflowGraph("chain")
    for name in names:
        g.add_node(name, agent)
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    return g


# --- results and ids -----------------------------------------------------------------


async def test_result_shape_for_a_successful_chain() -> None:
    """Every node has content, status, error, attempts; the run succeeded."""
    result = await WorkflowExecutor().execute(chain("a", "b"), input="hello")
    assert result.status == "succeeded" and result.ok
    assert result.results["b"]["content"] == "hello"
    assert {k: result.results["a"][k] for k in ("status", "error", "attempts")} == {  # type: ignore[literal-required]
        "status": "succeeded",
        "error": None,
        "attempts": 1,
    }
    assert result.results["a"]["duration"] >= 0
    assert list(result.results) == ["a", "b"]
    assert result.duration >= 0 and result.started_at.tzinfo is not None


async def test_workflow_id_is_generated_from_uuid4() -> None:
    """Without an id, each run gets 'workflow_' plus 12 hex chars, all different."""
    ex = WorkflowExecutor()
    ids = {(await ex.execute(chain("a"))).workflow_id for _ in range(20)}
    assert len(ids) == 20
    for wid in ids:
        assert wid.startswith("workflow_") and len(wid) == 21
        int(wid[9:], 16)


async def test_given_workflow_id_is_kept() -> None:
    """A caller-supplied id is used as is, in the result and the context."""
    result = await WorkflowExecutor().execute(chain("a"), workflow_id="nightly-2026-11-27")
    assert result.workflow_id == result.context.workflow_id == "nightly-2026-11-27"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, 7])
async def test_bad_workflow_id_is_rejected(bad: Any) -> None:
    """An id that is empty, too long or has odd characters is refused before running."""
    with pytest.raises(ConfigurationError, match="workflow_id"):
        await WorkflowExecutor().execute(chain("a"), workflow_id=bad)


async def test_execute_requires_a_graph() -> None:
    """Passing something else than a WorkflowGraph is a TypeError."""
    with pytest.raises(TypeError, match="needs a WorkflowGraph"):
        await WorkflowExecutor().execute("graph")  # type: ignore[arg-type]


# --- tasks ---------------------------------------------------------------------------


async def test_default_tasks_root_gets_input_single_predecessor_its_content() -> None:
    """Roots get the input; a node with one predecessor gets that content."""

    async def double(task: str) -> str:
        return task * 2

    g = chain("a", "b", agent=double)
    result = await WorkflowExecutor().execute(g, input="ab")
    assert result.content("a") == "abab"
    assert result.content("b") == "abababab"


async def test_default_task_with_several_predecessors_is_a_dict_in_edge_order() -> None:
    """A join gets {predecessor: content} in the order its edges were added."""
    seen: list[Any] = []

    async def join(task: Any) -> str:
        seen.append(task)
        return "joined"

    g = WorkflowGraph("g").add_node("x", echo).add_node("y", echo).add_node("j", join)
    g.add_edge("y", "j").add_edge("x", "j")
    await WorkflowExecutor().execute(g, input=1)
    assert seen == [{"y": 1, "x": 1}]
    assert list(seen[0]) == ["y", "x"]


async def test_string_task_is_a_template_over_input_and_predecessors() -> None:
    """'{input}' and predecessor names are filled in; '{{' stays a brace."""
    g = WorkflowGraph("g").add_node("fetch", echo, task="page for {input}")
    g.add_node("sum", echo, task="summary of <{fetch}> re {input} {{x}}").add_edge("fetch", "sum")
    result = await WorkflowExecutor().execute(g, input="cats")
    assert result.content("sum") == "summary of <page for cats> re cats {x}"


async def test_callable_task_receives_the_context() -> None:
    """A task callable (sync or async) sees the input and earlier results."""

    async def build(ctx: ExecutionContext) -> str:
        return f"{ctx.input}:{ctx.content('a')}:{len(ctx.messages)}"

    g = chain("a").add_node("b", echo, task=build).add_edge("a", "b")
    g.add_node("c", echo, task=lambda ctx: ctx.workflow_id).add_edge("b", "c")
    result = await WorkflowExecutor().execute(g, input="in", workflow_id="w1")
    assert result.content("b") == "in:in:1"
    assert result.content("c") == "w1"


async def test_literal_non_string_task_is_passed_as_is() -> None:
    """A dict task reaches the agent unchanged."""
    g = WorkflowGraph("g").add_node("a", echo, task={"k": [1, 2]})
    assert (await WorkflowExecutor().execute(g)).content("a") == {"k": [1, 2]}


async def test_failing_task_callable_fails_the_node_without_calling_the_agent() -> None:
    """An exception while building the task fails the node with TaskBuildError, 0 attempts."""
    called = []

    async def agent(task: Any) -> None:
        called.append(task)

    def bad(ctx: ExecutionContext) -> Any:
        return ctx.content("nope")

    g = WorkflowGraph("g").add_node("a", agent, task=bad)
    result = await WorkflowExecutor().execute(g)
    assert result.results["a"]["status"] == "failed"
    error = result.results["a"]["error"]
    assert error is not None
    assert error.startswith("TaskBuildError: building the task of node 'a' failed: KeyError")
    assert result.results["a"]["error_type"] == "heddle.core.errors.TaskBuildError"
    assert "ctx.content" in (result.results["a"]["traceback"] or "")
    assert result.results["a"]["attempts"] == 0
    assert called == []


# --- agents --------------------------------------------------------------------------


class AsyncAgent:
    name = "async-agent"

    async def arun(self, task: Any, **kwargs: Any) -> str:
        return f"arun:{task}"


class SyncAgent:
    name = "sync-agent"

    def __init__(self) -> None:
        self.threads: list[int] = []

    def run(self, task: Any, **kwargs: Any) -> str:
        self.threads.append(threading.get_ident())
        return f"run:{task}"


async def test_all_agent_kinds_run() -> None:
    """arun objects, run objects, coroutine functions and plain functions all work."""

    def plain(task: Any) -> str:
        return f"plain:{task}"

    sync = SyncAgent()
    g = WorkflowGraph("g").add_node("a", AsyncAgent()).add_node("s", sync)
    g.add_node("p", plain).add_node("c", echo)
    result = await WorkflowExecutor().execute(g, input="x")
    assert [result.content(n) for n in "aspc"] == ["arun:x", "run:x", "plain:x", "x"]
    assert sync.threads and threading.get_ident() not in sync.threads


async def test_sync_agents_run_off_the_event_loop() -> None:
    """A blocking sync agent does not stall an async sibling."""
    release = threading.Event()
    order: list[str] = []

    def blocking(task: Any) -> str:
        assert release.wait(10), "the async sibling never ran while we blocked"
        order.append("blocking")
        return "done"

    async def sibling(task: Any) -> str:
        order.append("sibling")
        release.set()
        return "ok"

    g = WorkflowGraph("g").add_node("block", blocking).add_node("sib", sibling)
    result = await WorkflowExecutor(max_concurrent=2).execute(g)
    assert result.ok
    assert order == ["sibling", "blocking"]


async def test_sync_function_returning_a_coroutine_is_awaited() -> None:
    """A lambda wrapping an async call still yields the awaited value."""
    g = WorkflowGraph("g").add_node("a", lambda task: echo(task * 3))
    assert (await WorkflowExecutor().execute(g, input=2)).content("a") == 6


# --- scheduling ----------------------------------------------------------------------


async def test_node_starts_as_soon_as_its_own_predecessors_finish() -> None:
    """b depends only on a; it runs while the unrelated slow node is still running."""
    b_ran = asyncio.Event()

    async def slow(task: Any) -> str:
        # Finishes only once b has run: a level-by-level scheduler would deadlock here.
        await asyncio.wait_for(b_ran.wait(), timeout=10)
        return "slow"

    async def b(task: Any) -> str:
        b_ran.set()
        return "b"

    g = WorkflowGraph("g").add_node("a", echo).add_node("slow", slow).add_node("b", b)
    g.add_edge("a", "b")
    g.add_node("a2", echo).add_edge("slow", "a2")  # slow is on the same "level" as a
    result = await WorkflowExecutor(max_concurrent=4).execute(g)
    assert result.ok


async def test_every_node_runs_exactly_once_in_a_diamond_lattice() -> None:
    """In a graph with many joins, each agent call happens once, after all its predecessors."""
    calls: dict[str, int] = {}
    finished: set[str] = set()
    g = WorkflowGraph("lattice")

    def make(name: str, preds: list[str]) -> Any:
        async def agent(task: Any) -> str:
            assert all(p in finished for p in preds)
            calls[name] = calls.get(name, 0) + 1
            await asyncio.sleep(0)
            finished.add(name)
            return name

        return agent

    width, depth = 6, 6
    for level in range(depth):
        for k in range(width):
            preds = [f"{level - 1}.{j}" for j in range(width) if level and (j - k) % 3 != 1]
            g.add_node(f"{level}.{k}", make(f"{level}.{k}", preds))
            for p in preds:
                g.add_edge(p, f"{level}.{k}")
    result = await WorkflowExecutor(max_concurrent=5).execute(g)
    assert result.ok
    assert calls == dict.fromkeys(g, 1)


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_max_concurrent_is_a_bound_and_is_reached(limit: int) -> None:
    """No more than max_concurrent agents run at once, and the bound is hit when work allows."""
    running = peak = 0

    async def agent(task: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    g = WorkflowGraph("g")
    for i in range(30):
        g.add_node(f"n{i}", agent)
    await WorkflowExecutor(max_concurrent=limit).execute(g)
    assert peak == limit


async def test_max_concurrent_bounds_sync_agents_too() -> None:
    """Sync agents in threads are bounded by max_concurrent and reach it."""
    lock = threading.Lock()
    running = peak = 0
    barrier = threading.Barrier(4, timeout=10)

    def agent(task: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        barrier.wait()  # only passes when 4 threads are in here together
        with lock:
            running -= 1

    g = WorkflowGraph("g")
    for i in range(12):
        g.add_node(f"n{i}", agent)
    result = await WorkflowExecutor(max_concurrent=4).execute(g)
    assert result.ok, result.results
    assert peak == 4


async def test_context_keeps_every_message_with_1000_concurrent_nodes() -> None:
    """1,000 nodes finishing concurrently leave 1,000 messages and results."""

    async def agent(task: Any) -> int:
        await asyncio.sleep(0)
        return 1

    g = WorkflowGraph("wide").add_node("root", echo)
    for i in range(1000):
        g.add_node(f"n{i}", agent).add_edge("root", f"n{i}")
    result = await WorkflowExecutor(max_concurrent=1000).execute(g)
    ctx = result.context
    assert len(ctx.messages) == 1001
    assert len(ctx.results) == 1001
    assert sorted(m["node"] for m in ctx.messages) == sorted(g)
    assert sum(result.content(f"n{i}") for i in range(1000)) == 1000


async def test_scheduling_work_is_linear_in_nodes_and_edges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The frontier touches each node's bookkeeping O(1) times per incident edge, no rescans."""
    reads = 0

    class CountingList(list):  # type: ignore[type-arg]
        def __getitem__(self, i: Any) -> Any:
            nonlocal reads
            reads += 1
            return super().__getitem__(i)

        def __setitem__(self, i: Any, v: Any) -> None:
            nonlocal reads
            reads += 1
            super().__setitem__(i, v)

    original = frontier_module.Frontier.__init__

    def counting_init(self: Any, *args: Any) -> None:
        original(self, *args)
        self.pending = CountingList(self.pending)
        self.state = CountingList(self.state)

    monkeypatch.setattr(frontier_module.Frontier, "__init__", counting_init)

    g_small, g_big = _layered(300), _layered(3000)
    await WorkflowExecutor().execute(g_small)
    small = reads
    reads = 0
    await WorkflowExecutor().execute(g_big)
    big = reads
    edges_small, edges_big = len(g_small.edges), len(g_big.edges)
    assert big <= 12 * (3000 + edges_big)
    assert big / small < 1.1 * (3000 + edges_big) / (300 + edges_small)


def _layered(n: int) -> WorkflowGraph:
    g = WorkflowGraph("layered")
    for i in range(n):
        g.add_node(f"n{i}", echo)
        for back in (1, 2, 3):
            if i - back >= 0:
                g.add_edge(f"n{i - back}", f"n{i}")
    return g


# --- failures ------------------------------------------------------------------------


async def test_failure_skips_descendants_but_not_siblings() -> None:
    """A failed node's downstream is skipped with the reason; independent branches finish."""
    g = WorkflowGraph("g").add_node("root", echo).add_node("bad", boom).add_node("good", echo)
    g.add_node("after_bad", echo).add_node("after_both", echo).add_node("after_good", echo)
    g.add_edge("root", "bad").add_edge("root", "good").add_edge("bad", "after_bad")
    g.add_edge("after_bad", "after_both").add_edge("good", "after_both").add_edge(
        "good", "after_good"
    )
    result = await WorkflowExecutor(retry=NO_RETRY).execute(g, input="x")
    assert result.status == "failed" and not result.ok
    assert result.results["bad"]["status"] == "failed"
    assert result.results["bad"]["error"] == "ValueError: bad x"
    for name in ("after_bad", "after_both"):
        assert result.results[name]["status"] == "skipped"
        assert result.results[name]["error"] == "upstream node 'bad' failed"
        assert result.results[name]["attempts"] == 0
    assert result.nodes_with_status("succeeded") == ["root", "good", "after_good"]
    assert [m["node"] for m in result.context.messages if m["status"] == "failed"] == ["bad"]


async def test_failed_node_does_not_cancel_a_running_sibling() -> None:
    """A sibling that is mid-call when another node fails completes normally."""
    failed = asyncio.Event()

    async def fails(task: Any) -> None:
        failed.set()
        raise RuntimeError("x")

    async def patient(task: Any) -> str:
        await asyncio.wait_for(failed.wait(), 10)
        await asyncio.sleep(0.01)
        return "finished"

    g = WorkflowGraph("g").add_node("fails", fails).add_node("patient", patient)
    result = await WorkflowExecutor(retry=NO_RETRY).execute(g)
    assert result.content("patient") == "finished"


async def test_fail_fast_cancels_running_and_marks_the_rest_not_run() -> None:
    """With fail_fast, the first failure cancels running agents and nothing else starts."""
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def hangs(task: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails(task: Any) -> None:
        await started.wait()
        raise RuntimeError("first")

    g = WorkflowGraph("g").add_node("hangs", hangs).add_node("fails", fails)
    g.add_node("later", echo).add_edge("hangs", "later")
    g.add_node("queued", echo).add_node("queued2", echo)
    result = await WorkflowExecutor(max_concurrent=2, retry=NO_RETRY, fail_fast=True).execute(g)
    assert cancelled.is_set()
    assert result.status == "failed"
    assert result.results["fails"]["error"] == "RuntimeError: first"
    assert result.results["hangs"]["status"] == "skipped"
    assert result.results["hangs"]["error"] == "cancelled: fail_fast after node 'fails' failed"
    for name in ("later", "queued", "queued2"):
        assert result.results[name]["status"] == "skipped"
        assert result.results[name]["error"] == "not run: fail_fast after node 'fails' failed"


# --- retries -------------------------------------------------------------------------


def flaky(failures: int, exc: type[Exception] = ConnectionError) -> Any:
    calls = {"n": 0}

    async def agent(task: Any) -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise exc(f"attempt {calls['n']}")
        return f"ok after {calls['n']}"

    agent.calls = calls  # type: ignore[attr-defined]
    return agent


async def test_retry_until_success_counts_attempts() -> None:
    """A node that fails twice succeeds on the third attempt; counts are recorded."""
    g = WorkflowGraph("g").add_node("a", flaky(2))
    result = await WorkflowExecutor(retry=FAST_RETRY).execute(g)
    assert result.results["a"] == result.results["a"] | {
        "status": "succeeded",
        "content": "ok after 3",
        "attempts": 3,
    }
    assert result.context.retry_counts["a"] == 2
    assert result.context.failure_counts["a"] == 2


async def test_node_policy_overrides_executor_policy() -> None:
    """A node's own RetryPolicy wins over the executor's."""
    agent = flaky(5)
    g = WorkflowGraph("g").add_node("a", agent, retry=RetryPolicy(max_attempts=2, initial_delay=0))
    result = await WorkflowExecutor(retry=RetryPolicy(max_attempts=10, initial_delay=0)).execute(g)
    assert result.results["a"]["attempts"] == 2
    assert result.results["a"]["error"] == "ConnectionError: attempt 2"
    assert agent.calls["n"] == 2


async def test_exceptions_outside_retry_on_are_not_retried() -> None:
    """retry_on=(ConnectionError,) does not retry a ValueError."""
    agent = flaky(1, exc=ValueError)
    policy = RetryPolicy(max_attempts=5, initial_delay=0, retry_on=(ConnectionError,))
    result = await WorkflowExecutor(retry=policy).execute(WorkflowGraph("g").add_node("a", agent))
    assert result.results["a"]["attempts"] == 1
    assert agent.calls["n"] == 1


async def test_retry_waits_the_policy_delay_off_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backoff is scheduled with the policy's delay, and the slot is free meanwhile."""
    delays: list[float] = []
    loop = asyncio.get_running_loop()
    real_call_later = loop.call_later

    def spy(delay: float, cb: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        delays.append(delay)
        return real_call_later(0, cb, *args, **kw)

    monkeypatch.setattr(loop, "call_later", spy)
    other_ran_during_backoff = []
    agent = flaky(2)

    async def other(task: Any) -> None:
        other_ran_during_backoff.append(agent.calls["n"])

    policy = RetryPolicy(max_attempts=3, initial_delay=0.5, multiplier=3, jitter=False)
    g = WorkflowGraph("g").add_node("a", agent).add_node("b", other)
    result = await WorkflowExecutor(max_concurrent=1, retry=policy).execute(g)
    assert result.ok
    assert delays == [0.5, 1.5]
    assert other_ran_during_backoff == [1]  # b ran in the single slot while a waited


async def test_jitter_uses_the_executors_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    """With jitter, the delay is the capped backoff times the injected draw."""
    delays: list[float] = []
    loop = asyncio.get_running_loop()
    real_call_later = loop.call_later
    monkeypatch.setattr(
        loop, "call_later", lambda d, cb, *a: (delays.append(d), real_call_later(0, cb, *a))[1]
    )
    policy = RetryPolicy(max_attempts=2, initial_delay=2.0, jitter=True)
    g = WorkflowGraph("g").add_node("a", flaky(1))
    await WorkflowExecutor(retry=policy, rng=lambda: 0.25).execute(g)
    assert delays == [0.5]


# --- timeouts ------------------------------------------------------------------------


async def test_timeout_cancels_the_attempt_and_counts_as_failure() -> None:
    """An overrunning attempt is cancelled, reported as NodeTimeoutError, and retried."""
    cancelled = 0
    calls = 0

    async def slow_then_fast(task: Any) -> str:
        nonlocal cancelled, calls
        calls += 1
        if calls == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled += 1
                raise
        return "fast"

    g = WorkflowGraph("g").add_node("a", slow_then_fast, timeout=0.05)
    result = await WorkflowExecutor(retry=FAST_RETRY).execute(g)
    assert result.content("a") == "fast"
    assert cancelled == 1
    assert result.results["a"]["attempts"] == 2


async def test_timeout_error_names_node_and_limit() -> None:
    """When every attempt overruns, the error says which node and how long."""

    async def forever(task: Any) -> None:
        await asyncio.sleep(30)

    g = WorkflowGraph("g").add_node("slowpoke", forever, timeout=0.02)
    result = await WorkflowExecutor(retry=NO_RETRY).execute(g)
    assert result.results["slowpoke"]["error"] == (
        "NodeTimeoutError: node 'slowpoke' attempt 1 timed out after 0.02s"
    )


async def test_a_sync_agents_timeout_says_its_call_runs_on() -> None:
    """A timed-out sync agent's error says its thread goes on, and what a retry does."""
    release = threading.Event()

    def stuck(task: Any) -> None:
        release.wait(10)

    g = WorkflowGraph("g").add_node("stuck", stuck, timeout=0.05)
    try:
        result = await WorkflowExecutor(retry=NO_RETRY).execute(g)
    finally:
        release.set()
    error = result.results["stuck"]["error"] or ""
    assert error.startswith("NodeTimeoutError: node 'stuck' attempt 1 timed out after 0.05s; ")
    assert "cannot be interrupted, so the call runs on in its thread" in error
    assert "a retry waits for it" in error


async def test_agents_own_timeout_error_is_not_mistaken_for_the_node_timeout() -> None:
    """A TimeoutError raised by the agent itself keeps its own type and message."""

    async def raises_timeout(task: Any) -> None:
        raise TimeoutError("upstream API timed out")

    g = WorkflowGraph("g").add_node("a", raises_timeout, timeout=5)
    result = await WorkflowExecutor(retry=NO_RETRY).execute(g)
    assert result.results["a"]["error"] == "TimeoutError: upstream API timed out"


# --- circuit breakers ----------------------------------------------------------------


async def test_breaker_opens_after_threshold_and_rejects_without_calling() -> None:
    """After `threshold` failed calls the agent is not called; nodes get CircuitBreakerOpen."""
    calls = 0

    class Api:
        name = "api"

        async def arun(self, task: Any) -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("down")

    api = Api()
    ex = WorkflowExecutor(retry=NO_RETRY, circuit_breaker_threshold=3, max_concurrent=1)
    g = WorkflowGraph("g")
    for i in range(6):
        g.add_node(f"n{i}", api)
    result = await ex.execute(g)
    assert calls == 3
    errors = [result.results[f"n{i}"]["error"] for i in range(6)]
    assert all(
        e is not None and e.startswith("CircuitBreakerOpen: circuit breaker for agent 'api'")
        for e in errors[3:]
    )
    assert [result.results[f"n{i}"]["attempts"] for i in range(6)] == [1, 1, 1, 0, 0, 0]
    assert ex.circuit_breaker("api").state is CircuitState.OPEN


async def test_breaker_is_shared_across_executions_and_recovers() -> None:
    """A breaker opened in one run rejects the next, then lets a trial through after the timeout."""
    clock = FakeClock()
    healthy = False
    calls = 0

    class Api:
        name = "api"

        async def arun(self, task: Any) -> str:
            nonlocal calls
            calls += 1
            if not healthy:
                raise ConnectionError("down")
            return "up"

    ex = WorkflowExecutor(
        retry=NO_RETRY, circuit_breaker_threshold=2, circuit_breaker_timeout=10, clock=clock
    )
    g = WorkflowGraph("g").add_node("call", Api())
    for _ in range(2):
        await ex.execute(g)
    assert calls == 2 and ex.circuit_breakers["api"].state is CircuitState.OPEN
    rejected = await ex.execute(g)
    assert calls == 2
    assert rejected.results["call"]["error"].startswith("CircuitBreakerOpen")  # type: ignore[union-attr]
    clock.advance(10)
    healthy = True
    recovered = await ex.execute(g)
    assert recovered.content("call") == "up" and calls == 3
    assert ex.circuit_breaker("api").state is CircuitState.CLOSED


async def test_half_open_lets_one_of_ten_concurrent_callers_through() -> None:
    """After the timeout, ten concurrent nodes on one agent: exactly one reaches the agent."""
    clock = FakeClock()
    calls = 0
    gate = asyncio.Event()

    class Api:
        name = "api"

        async def arun(self, task: Any) -> str:
            nonlocal calls
            calls += 1
            await gate.wait()
            return "ok"

    ex = WorkflowExecutor(
        retry=NO_RETRY,
        circuit_breaker_threshold=1,
        circuit_breaker_timeout=5,
        clock=clock,
        max_concurrent=10,
    )
    breaker = ex.circuit_breaker("api")
    breaker.acquire()
    breaker.record_failure()
    clock.advance(5)
    g = WorkflowGraph("g")
    for i in range(10):
        g.add_node(f"n{i}", Api())
    run = asyncio.create_task(ex.execute(g))
    for _ in range(50):
        await asyncio.sleep(0)
    gate.set()
    result = await run
    assert calls == 1
    assert len(result.nodes_with_status("succeeded")) == 1
    assert len(result.nodes_with_status("failed")) == 9
    assert breaker.state is CircuitState.CLOSED


async def test_nodes_sharing_an_agent_share_its_breaker_by_name() -> None:
    """Two functions are two breakers; one function used by two nodes is one breaker."""
    g = WorkflowGraph("g").add_node("a", boom).add_node("b", boom).add_node("c", echo)
    ex = WorkflowExecutor(retry=NO_RETRY, circuit_breaker_threshold=2)
    await ex.execute(g)
    assert set(ex.circuit_breakers) == {"boom", "echo"}
    assert ex.circuit_breakers["boom"].state is CircuitState.OPEN
    assert ex.circuit_breakers["echo"].state is CircuitState.CLOSED


async def test_breaker_open_is_not_retried() -> None:
    """A node rejected by an open breaker fails at once instead of backing off."""
    ex = WorkflowExecutor(retry=RetryPolicy(max_attempts=5, initial_delay=100))
    ex.circuit_breaker("echo").acquire()
    for _ in range(5):
        ex.circuit_breaker("echo").record_failure()
    result = await asyncio.wait_for(ex.execute(chain("a")), timeout=5)
    assert isinstance(CircuitBreakerOpen("echo", 1), Exception)
    assert result.results["a"]["error"].startswith("CircuitBreakerOpen")  # type: ignore[union-attr]


# --- cancellation and loops ----------------------------------------------------------


async def test_cancelling_execute_cancels_agents_and_leaves_no_task() -> None:
    """Cancelling the awaiting task cancels running agents; no task of the run survives."""
    started = asyncio.Event()
    cancelled = 0

    async def hang(task: Any) -> None:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    g = WorkflowGraph("g")
    for i in range(5):
        g.add_node(f"n{i}", hang)
    g.add_node("retrying", flaky(10), retry=RetryPolicy(max_attempts=10, initial_delay=30))
    before = asyncio.all_tasks()
    run = asyncio.create_task(WorkflowExecutor(max_concurrent=10).execute(g))
    await started.wait()
    await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert cancelled == 5
    assert asyncio.all_tasks() - before == set()


def test_one_executor_works_across_event_loops() -> None:
    """The same executor (and its breakers) runs under several asyncio.run calls."""
    ex = WorkflowExecutor(max_concurrent=2, retry=NO_RETRY)
    g = chain("a", "b", "c")
    for i in range(3):
        assert asyncio.run(ex.execute(g, input=i)).content("c") == i
    assert ex.run(g, input="sync").content("c") == "sync"


async def test_run_inside_a_running_loop_names_execute() -> None:
    """The sync wrapper refuses a running loop and points at the async twin."""
    with pytest.raises(TypeError, match=r"await executor\.execute"):
        WorkflowExecutor().run(chain("a"))


# --- bad input -----------------------------------------------------------------------


def test_settings_after_max_concurrent_are_keyword_only() -> None:
    """WorkflowExecutor(10, RetryPolicy()) is refused: a positional setting is easy to misplace."""
    with pytest.raises(TypeError):
        WorkflowExecutor(10, RetryPolicy())  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 2.0}, "max_concurrent"),
        ({"retry": 3}, "retry"),
        ({"circuit_breaker_threshold": 0}, "threshold"),
        ({"circuit_breaker_timeout": -1}, "timeout"),
        ({"max_threads": 0}, "max_threads"),
        (
            {"circuit_breaker_threshold": 3, "circuit_breakers": LocalCircuitBreakers()},
            "circuit_breaker_threshold",
        ),
        (
            {"circuit_breaker_timeout": 5, "circuit_breakers": LocalCircuitBreakers()},
            "circuit_breaker_timeout",
        ),
        ({"max_threads": 4, "runner": LocalRunner()}, "max_threads"),
    ],
)
def test_bad_executor_settings_are_rejected(kwargs: dict[str, Any], parameter: str) -> None:
    """Bad limits fail at construction with a ConfigurationError naming the setting."""
    with pytest.raises(ConfigurationError) as info:
        WorkflowExecutor(**kwargs)
    assert info.value.parameter == parameter


async def test_concurrent_runs_of_one_executor_share_max_threads_threads() -> None:
    """Sync agents of many concurrent runs never hold more than max_threads threads."""
    lock = threading.Lock()
    running = peak = 0
    threads: set[threading.Thread] = set()

    def work(task: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.current_thread())
        try:
            threading.Event().wait(0.002)
        finally:
            with lock:
                running -= 1
        return task

    g = chain("a", "b", agent=work)
    async with WorkflowExecutor(max_concurrent=10, max_threads=3) as ex:
        results = await asyncio.gather(*(ex.execute(g, n) for n in range(100)))
    assert all(r.ok for r in results)
    assert peak <= 3 and len(threads) <= 3
    for thread in threads:  # aclose() shut the pool down: its idle threads exit
        await asyncio.to_thread(thread.join, 10)
    assert not any(t.is_alive() for t in threads)


async def test_invalid_graph_fails_before_any_agent_runs() -> None:
    """A cycle is reported by execute() and no agent was called."""
    called = []

    async def agent(task: Any) -> None:
        called.append(task)

    g = chain("a", "b", agent=agent).add_node("c", agent).add_edge("b", "c").add_edge("c", "b")
    with pytest.raises(GraphValidationError, match="cycle"):
        await WorkflowExecutor().execute(g)
    assert called == []


async def test_result_repr_is_a_summary_even_for_deeply_shared_contents() -> None:
    """repr(result) stays short when joins nest their inputs' contents (it would be exponential)."""
    g = WorkflowGraph("ladder").add_node("n0", echo).add_node("m0", echo)
    for i in range(1, 40):
        for name in (f"n{i}", f"m{i}"):
            g.add_node(name, echo).add_edge(f"n{i - 1}", name).add_edge(f"m{i - 1}", name)
    result = await WorkflowExecutor().execute(g, input="x")
    text = repr(result)
    assert len(text) < 200
    assert "status='succeeded'" in text
    assert "nodes=80" in text
