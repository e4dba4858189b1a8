"""WorkflowExecutor when what it relies on fails: breakers, the checkpoint database, agents."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.core.errors import BackendError, BackendTimeout, CheckpointError
from heddle.workflows import CircuitState, LocalCircuitBreakers, SQLiteCheckpointer
from heddle.workflows.context import NodeResult

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=False)


async def echo(task: Any) -> Any:
    return task


class FlakyBreakers(LocalCircuitBreakers):
    """Local breakers whose chosen methods raise a BackendError the first ``times`` calls."""

    def __init__(self, failing: str, times: int, error: Exception) -> None:
        super().__init__()
        self.failing, self.times, self.error = failing, times, error

    def _maybe_fail(self, method: str) -> None:
        if method == self.failing and self.times > 0:
            self.times -= 1
            raise self.error

    async def acquire(self, agent: str) -> CircuitState | None:
        self._maybe_fail("acquire")
        return await super().acquire(agent)

    async def record_success(self, agent: str) -> CircuitState | None:
        self._maybe_fail("record_success")
        return await super().record_success(agent)

    async def record_failure(self, agent: str) -> CircuitState | None:
        self._maybe_fail("record_failure")
        return await super().record_failure(agent)


@pytest.mark.parametrize(
    "error",
    [
        BackendError("Redis at redis://x: connection refused", backend="Redis at redis://x"),
        BackendTimeout("Redis at redis://x: no answer in 5s", backend="Redis", timeout=5.0),
    ],
)
async def test_a_failing_breaker_backend_fails_the_attempt_and_it_is_retried(
    error: Exception,
) -> None:
    """A breaker registry that raises on acquire fails that attempt; the retry succeeds."""
    calls = 0

    async def agent(task: Any) -> str:
        nonlocal calls
        calls += 1
        return "done"

    breakers = FlakyBreakers("acquire", 1, error)
    ex = WorkflowExecutor(retry=RETRY, circuit_breakers=breakers)
    result = await ex.execute(WorkflowGraph("g").add_node("a", agent))
    assert result.ok
    assert result.results["a"]["attempts"] == 2
    assert calls == 1  # the failed attempt never reached the agent
    assert result.context.failure_counts["a"] == 1


async def test_a_breaker_backend_down_for_good_fails_only_that_node() -> None:
    """When the breakers stay unreachable, the node fails after its retries with their error."""
    breakers = FlakyBreakers("acquire", 100, BackendError("down", backend="Redis"))
    ex = WorkflowExecutor(retry=RETRY, circuit_breakers=breakers)
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    result = await ex.execute(g)
    assert result.status == "failed"
    assert result.results["a"]["error"] == "BackendError: down"
    assert result.results["a"]["error_type"] == "heddle.core.errors.BackendError"
    assert result.results["a"]["attempts"] == 3
    assert result.results["b"]["status"] == "skipped"


@pytest.mark.parametrize("method", ["record_success", "record_failure"])
async def test_a_breaker_that_cannot_record_the_verdict_does_not_change_the_outcome(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's outcome stands when the breakers fail to record it; a warning says so."""

    async def agent(task: Any) -> str:
        if method == "record_failure":
            raise ValueError("bad")
        return "ok"

    breakers = FlakyBreakers(method, 1, BackendError("down", backend="Redis"))
    ex = WorkflowExecutor(retry=RetryPolicy(max_attempts=1), circuit_breakers=breakers)
    with caplog.at_level(logging.WARNING, logger="heddle.executor"):
        result = await ex.execute(WorkflowGraph("g").add_node("a", agent))
    expected = "succeeded" if method == "record_success" else "failed"
    assert result.results["a"]["status"] == expected
    assert any("could not update the circuit breaker" in r.getMessage() for r in caplog.records)


# --- the checkpoint database fails mid-run ------------------------------------------------


class BreakingCheckpointer(SQLiteCheckpointer):
    """An SQLite checkpointer whose ``save_node`` fails from the ``after``-th call on."""

    def __init__(self, path: Path, after: int, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.after = after
        self.saves = 0

    async def save_node(
        self,
        workflow_id: str,
        node: str,
        result: NodeResult,
        *,
        iteration: int = 0,
        item: int | None = None,
        wait: bool = True,
        owner: str | None = None,
    ) -> None:
        self.saves += 1
        if self.saves >= self.after:
            raise CheckpointError(
                f"checkpoint database {self.path}: disk I/O error", path=self.path
            )
        await super().save_node(
            workflow_id, node, result, iteration=iteration, item=item, wait=wait, owner=owner
        )


def _fan_out(n: int) -> WorkflowGraph:
    g = WorkflowGraph("fan").add_node("root", echo)
    for i in range(n):
        g.add_node(f"n{i}", echo).add_edge("root", f"n{i}")
    return g


@pytest.mark.parametrize("max_concurrent", [1, 4])
async def test_a_checkpoint_failure_ends_the_run_with_that_one_error(
    tmp_path: Path, max_concurrent: int
) -> None:
    """No ExceptionGroup: execute() raises the CheckpointError itself, naming the database."""
    db = tmp_path / "runs.db"
    async with BreakingCheckpointer(db, after=3, lease=0.5) as checkpointer:
        ex = WorkflowExecutor(max_concurrent, checkpointer=checkpointer)
        with pytest.raises(CheckpointError) as caught:
            await ex.execute(_fan_out(10), "x", workflow_id="w")
        assert not isinstance(caught.value, BaseExceptionGroup)
        assert str(db) in str(caught.value)
        record = await checkpointer.get_run("w")
    assert record is not None
    assert record.status == "running"  # not a false "cancelled"
    assert record.state == "interrupted"  # its lease was given up: resumable at once


async def test_a_run_stopped_by_a_checkpoint_failure_resumes(tmp_path: Path) -> None:
    """After the database recovers, resume() finishes the interrupted run."""
    db = tmp_path / "runs.db"
    async with BreakingCheckpointer(db, after=4) as checkpointer:
        with pytest.raises(CheckpointError):
            await WorkflowExecutor(2, checkpointer=checkpointer).execute(
                _fan_out(6), "x", workflow_id="w"
            )
    async with SQLiteCheckpointer(db) as checkpointer:
        result = await WorkflowExecutor(2, checkpointer=checkpointer).resume("w", _fan_out(6))
    assert result.ok
    assert sum(bool(r.get("resumed")) for r in result.results.values()) >= 1


async def test_a_database_locked_mid_run_ends_it_interrupted_not_cancelled(
    tmp_path: Path,
) -> None:
    """A database another process holds locked past the timeout: one CheckpointError."""
    db = tmp_path / "runs.db"
    started = asyncio.Event()
    release = asyncio.Event()

    async def first(task: Any) -> str:
        started.set()
        await release.wait()
        return "first"

    g = WorkflowGraph("g").add_node("a", first).add_node("b", echo).add_edge("a", "b")
    async with SQLiteCheckpointer(db, timeout=0.2, lease=0.5) as checkpointer:
        run = asyncio.create_task(
            WorkflowExecutor(checkpointer=checkpointer).execute(g, "x", workflow_id="w")
        )
        await started.wait()
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        release.set()
        with pytest.raises(CheckpointError, match="locked"):
            await run
        holder.execute("ROLLBACK")
        holder.close()
        record = await checkpointer.get_run("w")
    assert record is not None and record.status == "running"


# --- what a failed node keeps -------------------------------------------------------------


async def test_a_failed_node_keeps_the_type_and_traceback_of_its_error() -> None:
    """The result has error_type and the formatted traceback through the agent's frames."""

    def inner(task: Any) -> None:
        raise KeyError(task)

    async def agent(task: Any) -> None:
        inner(task)

    result = await WorkflowExecutor(retry=RetryPolicy(max_attempts=1)).execute(
        WorkflowGraph("g").add_node("a", agent), "missing"
    )
    failed = result.results["a"]
    assert failed["error"] == "KeyError: 'missing'"
    assert failed["error_type"] == "KeyError"
    trace = failed["traceback"]
    assert trace is not None
    assert "in agent" in trace and "in inner" in trace
    assert trace.rstrip().endswith("KeyError: 'missing'")


async def test_a_huge_traceback_is_cut_in_the_middle() -> None:
    """A traceback longer than the cap keeps its head and its tail."""

    async def agent(task: Any) -> None:
        raise RuntimeError("start " + "x" * 50_000 + " end")

    result = await WorkflowExecutor(retry=RetryPolicy(max_attempts=1)).execute(
        WorkflowGraph("g").add_node("a", agent)
    )
    trace = result.results["a"]["traceback"]
    assert trace is not None
    assert 15_000 < len(trace) < 17_000
    assert trace.startswith("Traceback") and "characters cut" in trace
    assert trace.rstrip().endswith("x end")


async def test_a_traceback_starts_in_the_agents_code() -> None:
    """heddle's own frames between the run loop and the agent are left out."""

    async def agent(task: Any) -> None:
        raise ValueError("bad")

    result = await WorkflowExecutor(retry=RetryPolicy(max_attempts=1)).execute(
        WorkflowGraph("g").add_node("a", agent)
    )
    trace = result.results["a"]["traceback"]
    assert trace is not None
    first_frame = trace.splitlines()[1]
    assert "test_executor_backends.py" in first_frame and "in agent" in first_frame


async def test_a_successful_node_carries_no_error_fields() -> None:
    """Only failures carry error_type and traceback."""
    result = await WorkflowExecutor().execute(WorkflowGraph("g").add_node("a", echo), 1)
    assert "traceback" not in result.results["a"]
    assert "error_type" not in result.results["a"]


async def test_log_records_carry_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    """Start, success and failure records have workflow_id, node, agent, attempt, error_type."""

    async def bad(task: Any) -> None:
        raise ValueError("no")

    g = WorkflowGraph("g").add_node("ok", echo).add_node("bad", bad)
    with caplog.at_level(logging.DEBUG, logger="heddle.executor"):
        await WorkflowExecutor(retry=RetryPolicy(max_attempts=1)).execute(g, workflow_id="w-logs")
    by_node: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        by_node.setdefault(getattr(record, "node", ""), []).append(record)
    ok_levels = [r.levelno for r in by_node["ok"]]
    assert ok_levels == [logging.DEBUG, logging.DEBUG]  # started, succeeded
    (failure,) = [r for r in by_node["bad"] if r.levelno == logging.WARNING]
    assert failure.workflow_id == "w-logs"  # type: ignore[attr-defined]
    assert failure.agent == "test_log_records_carry_structured_fields.<locals>.bad"  # type: ignore[attr-defined]
    assert failure.attempt == 1  # type: ignore[attr-defined]
    assert failure.error_type == "ValueError"  # type: ignore[attr-defined]


# --- Redis backends that hang or are down, under a real executor -------------------------


@pytest.mark.parametrize("backend", ["black_hole", "dead_redis"])
async def test_a_run_over_redis_breakers_that_hang_or_are_down_ends_with_failed_nodes(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Every attempt fails with the backend's error and is retried; execute() returns."""
    pytest.importorskip("redis")
    from heddle.distributed import RedisCircuitBreakers

    url = request.getfixturevalue(backend)
    calls = 0

    async def agent(task: Any) -> str:
        nonlocal calls
        calls += 1
        return "never"

    breakers = RedisCircuitBreakers(url, operation_timeout=0.2)
    g = WorkflowGraph("g").add_node("a", agent).add_node("b", echo).add_edge("a", "b")
    ex = WorkflowExecutor(
        retry=RetryPolicy(max_attempts=2, initial_delay=0), circuit_breakers=breakers
    )
    async with asyncio.timeout(20):  # a hung backend must not hang the run
        result = await ex.execute(g)
    failed = result.results["a"]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    expected = BackendTimeout if backend == "black_hole" else BackendError
    assert failed["error_type"] == f"heddle.core.errors.{expected.__name__}"
    assert result.results["b"]["status"] == "skipped"
    assert calls == 0


async def test_a_run_publishing_on_a_hung_redis_bus_finishes_and_counts_lost_events(
    black_hole: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bus whose publish hangs delays nothing past its deadline; the run succeeds."""
    pytest.importorskip("redis")
    from heddle.messaging import RedisMessageBus

    bus = RedisMessageBus(black_hole, operation_timeout=0.1)
    g = WorkflowGraph("g").add_node("a", echo)
    with caplog.at_level(logging.WARNING, logger="heddle.executor"):
        async with asyncio.timeout(20):
            result = await WorkflowExecutor(bus=bus).execute(g, "x")
    assert result.ok
    (warning,) = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert "BackendTimeout" in warning.getMessage()


class CancelsAfterFinish(SQLiteCheckpointer):
    """Records the run's end, then has the task driving the run cancelled a moment later."""

    async def finish_run(self, *args: Any, **kwargs: Any) -> None:
        await super().finish_run(*args, **kwargs)
        driver = asyncio.current_task()
        assert driver is not None
        asyncio.get_running_loop().call_soon(driver.cancel)  # lands as the lease keeper stops


async def test_a_cancel_landing_as_the_run_lets_go_of_its_lease_reaches_the_caller(
    tmp_path: Path,
) -> None:
    """execute() raises the caller's CancelledError instead of returning as if not cancelled."""
    async with CancelsAfterFinish(tmp_path / "runs.db") as checkpointer:
        with pytest.raises(asyncio.CancelledError):
            await WorkflowExecutor(checkpointer=checkpointer).execute(
                WorkflowGraph("g").add_node("a", echo), "x"
            )
