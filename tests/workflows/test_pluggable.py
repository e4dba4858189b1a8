"""The executor's pluggable parts: where attempts run and where breaker state lives."""

from __future__ import annotations

from typing import Any

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.agents import AgentSpec
from heddle.core.errors import ConfigurationError
from heddle.workflows import CircuitState, LocalCircuitBreakers, LocalRunner


async def echo(task: Any) -> Any:
    return task


async def down(task: Any) -> None:
    raise ConnectionError("down")


class CountingRunner:
    """Wraps LocalRunner and counts sessions and calls."""

    def __init__(self) -> None:
        self.sessions = 0
        self.started = 0
        self.calls: list[str] = []
        self.closed = 0

    def open(self, max_concurrent: int) -> Any:
        self.sessions += 1
        inner = LocalRunner().open(max_concurrent)
        outer = self

        class Session:
            async def start(self) -> None:
                outer.started += 1

            async def call(self, spec: AgentSpec, task: Any) -> Any:
                assert outer.started == outer.sessions, "call before the session started"
                outer.calls.append(spec.name)
                return await inner.call(spec, task)

            async def aclose(self) -> None:
                outer.closed += 1
                await inner.aclose()

        return Session()


async def test_a_custom_runner_performs_every_attempt_in_one_session_per_run() -> None:
    """Each execution opens and starts one session, routes each attempt through it, closes it."""
    runner = CountingRunner()
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    ex = WorkflowExecutor(runner=runner)
    await ex.execute(g, input=1)
    await ex.execute(g, input=2)
    assert runner.sessions == runner.started == runner.closed == 2
    assert runner.calls == ["echo"] * 4


async def test_a_run_with_nothing_left_to_do_opens_no_session(tmp_path: Any) -> None:
    """Resuming a succeeded run replays it without asking the runner for anything."""
    runner = CountingRunner()
    g = WorkflowGraph("g").add_node("a", echo)
    async with WorkflowExecutor(runner=runner, checkpointer=tmp_path / "r.db") as ex:
        first = await ex.execute(g, input=1)
        await ex.resume(first.workflow_id, g)
    assert runner.sessions == 1


async def test_an_injected_breaker_registry_is_shared_by_executors() -> None:
    """Two executors given one registry open and close one breaker together."""

    shared = LocalCircuitBreakers(threshold=2, timeout=60)
    g = WorkflowGraph("g").add_node("call", down)
    one = WorkflowExecutor(circuit_breakers=shared, retry=RetryPolicy(max_attempts=1))
    two = WorkflowExecutor(circuit_breakers=shared, retry=RetryPolicy(max_attempts=1))
    await one.execute(g)
    await two.execute(g)
    assert shared["down"].state is CircuitState.OPEN
    assert len(shared) == 1
    assert list(shared) == ["down"]
    assert "down" in repr(shared)
    rejected = await one.execute(g)
    assert rejected.results["call"]["error"].startswith("CircuitBreakerOpen")  # type: ignore[union-attr]
    assert two.circuit_breaker("down") is shared["down"]


async def test_executor_breaker_inspection_needs_the_local_registry() -> None:
    """circuit_breaker() explains that a non-local registry is to be asked directly."""

    class Remote(LocalCircuitBreakers):
        pass

    class NotLocal:
        async def acquire(self, agent: str) -> None: ...
        async def record_success(self, agent: str) -> None: ...
        async def record_failure(self, agent: str) -> None: ...
        async def release(self, agent: str) -> None: ...
        async def failures(self, agent: str) -> int:
            return 0

    assert WorkflowExecutor(circuit_breakers=Remote()).circuit_breakers == {}
    ex = WorkflowExecutor(circuit_breakers=NotLocal())
    with pytest.raises(TypeError, match="ask it, not the executor"):
        ex.circuit_breaker("a")
    result = await ex.execute(WorkflowGraph("g").add_node("a", echo), input=3)
    assert result.content("a") == 3


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [({"runner": object()}, "runner"), ({"circuit_breakers": 5}, "circuit_breakers")],
)
def test_objects_without_the_protocol_are_rejected(kwargs: dict[str, Any], parameter: str) -> None:
    """A runner or registry of the wrong shape fails at construction, naming the parameter."""
    with pytest.raises(ConfigurationError) as info:
        WorkflowExecutor(**kwargs)
    assert info.value.parameter == parameter
