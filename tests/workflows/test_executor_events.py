"""Lifecycle events the executor publishes on its bus."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.core.errors import ConfigurationError
from heddle.messaging import Event, EventType, MessageBus
from heddle.testing import FakeClock, RecordingBus
from heddle.workflows import _run as run_module

NO_RETRY = RetryPolicy(max_attempts=1)


async def echo(task: Any) -> Any:
    return task


async def boom(task: Any) -> Any:
    raise ValueError("boom")


async def test_a_run_starts_and_ends_with_workflow_events() -> None:
    """workflow.started is first and workflow.finished last, both with the run's id."""
    bus = RecordingBus()
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    result = await WorkflowExecutor(bus=bus).execute(g, workflow_id="w-1")
    assert bus.types() == [
        "workflow.started",
        "node.started",
        "node.succeeded",
        "node.started",
        "node.succeeded",
        "workflow.finished",
    ]
    assert {e.workflow_id for e in bus.events} == {"w-1"}
    assert bus.events[0].payload == {"graph": "g", "nodes": 2}
    finished = bus.events[-1].payload
    assert finished["status"] == "succeeded" == result.status
    assert (finished["succeeded"], finished["failed"], finished["skipped"]) == (2, 0, 0)
    assert finished["duration"] >= 0


async def test_node_payloads_carry_node_agent_attempt_error_duration() -> None:
    """Node events name the node and agent; retries carry the error, its type and the delay;
    a failure carries the traceback too."""
    calls = 0

    async def flaky(task: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("reset")
        return "ok"

    bus = RecordingBus()
    g = WorkflowGraph("g").add_node("f", flaky).add_node("x", boom).add_node("after", echo)
    g.add_edge("x", "after")
    policy = RetryPolicy(max_attempts=2, initial_delay=0, jitter=False)
    await WorkflowExecutor(bus=bus, retry=policy).execute(g)
    retrying, _ = bus.of_type("node.retrying")  # f's, then x's
    assert retrying.payload == {
        "node": "f",
        "agent": flaky.__qualname__,
        "attempt": 1,
        "iteration": 0,
        "error": "ConnectionError: reset",
        "error_type": "ConnectionError",
        "delay": 0.0,
    }
    started_f = [
        e.payload["attempt"] for e in bus.of_type("node.started") if e.payload["node"] == "f"
    ]
    assert started_f == [1, 2]
    (succeeded,) = [e for e in bus.of_type("node.succeeded") if e.payload["node"] == "f"]
    assert succeeded.payload["attempts"] == 2
    assert succeeded.payload["duration"] >= 0
    (failed,) = bus.of_type("node.failed")
    assert failed.payload["node"] == "x"
    assert failed.payload["error"] == "ValueError: boom"
    assert failed.payload["error_type"] == "ValueError"
    assert failed.payload["traceback"].startswith("Traceback (most recent call last):")
    assert "in boom" in failed.payload["traceback"]
    assert failed.payload["attempts"] == 2
    (skipped,) = bus.of_type("node.skipped")
    assert skipped.payload == {
        "node": "after",
        "reason": "upstream node 'x' failed",
        "iteration": 0,
    }
    assert bus.events[-1].payload["status"] == "failed"


async def test_circuit_transitions_are_published() -> None:
    """Opening, the half-open trial and closing each publish one circuit event."""
    clock = FakeClock()
    healthy = False

    class Api:
        name = "api"

        async def arun(self, task: Any) -> str:
            if not healthy:
                raise ConnectionError("down")
            return "up"

    bus = RecordingBus()
    ex = WorkflowExecutor(
        bus=bus, retry=NO_RETRY, circuit_breaker_threshold=2, circuit_breaker_timeout=5, clock=clock
    )
    g = WorkflowGraph("g").add_node("call", Api())
    await ex.execute(g)
    await ex.execute(g)
    assert bus.types("circuit.*") == ["circuit.opened"]
    assert bus.of_type("circuit.opened")[0].payload == {
        "agent": "api",
        "node": "call",
        "failures": 2,
    }
    clock.advance(5)
    healthy = True
    await ex.execute(g)
    assert bus.types("circuit.*") == ["circuit.opened", "circuit.half_open", "circuit.closed"]
    assert bus.of_type("circuit.closed")[0].payload["failures"] == 0


async def test_cancelled_run_still_publishes_workflow_finished() -> None:
    """Cancelling execute() ends the event stream with status 'cancelled'."""
    started = asyncio.Event()

    async def hang(task: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    bus = RecordingBus()
    run = asyncio.create_task(
        WorkflowExecutor(bus=bus).execute(WorkflowGraph("g").add_node("h", hang))
    )
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert bus.types()[-1] == "workflow.finished"
    assert bus.events[-1].payload["status"] == "cancelled"


async def test_payloads_are_json_serialisable() -> None:
    """Every lifecycle event survives to_dict -> JSON -> from_dict."""
    bus = RecordingBus()
    g = WorkflowGraph("g").add_node("x", boom).add_node("y", echo).add_edge("x", "y")
    await WorkflowExecutor(bus=bus, retry=RetryPolicy(max_attempts=2, initial_delay=0)).execute(g)
    assert set(bus.types()) >= {"node.failed", "node.retrying", "node.skipped"}
    for event in bus.events:
        assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


async def test_subscribers_see_events_while_the_run_goes_on() -> None:
    """A prefix subscriber on a plain MessageBus receives node events live, in order."""
    bus = MessageBus()
    seen: list[str] = []
    bus.subscribe("node.*", lambda e: seen.append(f"{e.event_type}:{e.payload['node']}"))
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    await WorkflowExecutor(bus=bus).execute(g)
    assert seen == ["node.started:a", "node.succeeded:a", "node.started:b", "node.succeeded:b"]


async def test_a_raising_subscriber_does_not_break_the_run() -> None:
    """The bus isolates subscriber errors from the executor."""
    bus = MessageBus()

    def bad(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("*", bad)
    result = await WorkflowExecutor(bus=bus).execute(WorkflowGraph("g").add_node("a", echo))
    assert result.ok
    assert bus.statistics().failed == 4


async def test_without_a_bus_no_event_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bus, no cost: the executor never constructs an Event."""

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an Event was built without a bus")

    monkeypatch.setattr(run_module, "Event", forbidden)
    g = WorkflowGraph("g").add_node("x", boom).add_node("y", echo).add_edge("x", "y")
    result = await WorkflowExecutor(retry=RetryPolicy(max_attempts=2, initial_delay=0)).execute(g)
    assert result.results["y"]["status"] == "skipped"


def test_bus_must_be_a_bus() -> None:
    """A value without publish() is refused when the executor is built."""
    with pytest.raises(ConfigurationError, match="bus must be a MessageBus"):
        WorkflowExecutor(bus="events")  # type: ignore[arg-type]


def test_event_types_are_the_documented_lifecycle() -> None:
    """The executor's vocabulary matches the issue's list."""
    assert [t.value for t in EventType] == [
        "workflow.started",
        "node.started",
        "node.succeeded",
        "node.retrying",
        "node.failed",
        "node.skipped",
        "edge.exhausted",
        "circuit.opened",
        "circuit.half_open",
        "circuit.closed",
        "workflow.finished",
    ]


async def test_a_bus_that_raises_does_not_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    """A bus outage is logged once per run; the work it observes carries on."""

    class DownBus(MessageBus):
        async def publish(self, event: Event) -> None:
            raise ConnectionError("redis is down")

    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    result = await WorkflowExecutor(bus=DownBus()).execute(g, input=1, workflow_id="w-down")
    assert result.ok
    warnings = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert len(warnings) == 1
    assert "w-down" in warnings[0].getMessage()
    assert "ConnectionError: redis is down" in warnings[0].getMessage()
