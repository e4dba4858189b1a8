"""heddle.current(): the attempt an agent runs in, on the loop, in its tasks and in threads."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import threading

import pytest

import heddle
from heddle.agents import describe_agent
from heddle.core.errors import HeddleError, NoAttemptContext
from heddle.workflows import LocalRunner
from heddle.workflows.current import AttemptContext, attempt_scope, current

FIRST = AttemptContext("run-1", "research", node="search", agent="search", attempt=1)
SECOND = AttemptContext(
    "run-2", "research", node="write", agent="writer", attempt=3, iteration=2, item=4
)


def test_outside_an_attempt_current_raises_no_attempt_context() -> None:
    """Outside any attempt, current() raises NoAttemptContext saying where it works."""
    with pytest.raises(NoAttemptContext, match=r"only available inside an agent's attempt") as info:
        current()
    assert "called outside one" in str(info.value)
    assert isinstance(info.value, HeddleError)
    assert isinstance(info.value, RuntimeError)


def test_heddle_current_is_the_same_function() -> None:
    """heddle.current is workflows.current.current, for `import heddle` users."""
    assert heddle.current is current


async def test_an_async_function_in_a_scope_sees_its_attempt() -> None:
    """An async function awaited inside attempt_scope reads that attempt."""

    async def agent(task: str) -> AttemptContext:
        await asyncio.sleep(0)
        return current()

    with attempt_scope(SECOND):
        assert await agent("t") == SECOND


async def test_a_sync_agent_on_the_local_runner_sees_its_attempt_in_its_thread() -> None:
    """A sync agent run by LocalRunner in a pool thread reads the caller's attempt."""

    def agent(task: str) -> tuple[AttemptContext, threading.Thread]:
        return current(), threading.current_thread()

    runner = LocalRunner()
    try:
        session = runner.open(2)
        with attempt_scope(FIRST):
            seen, thread = await session.call(describe_agent(agent, node="search"), "t")
    finally:
        await runner.aclose()
    assert seen == FIRST
    assert thread is not threading.current_thread()


async def test_a_sync_agent_outside_a_scope_gets_no_attempt_context() -> None:
    """A sync agent called outside any scope raises NoAttemptContext from its thread."""
    runner = LocalRunner()
    try:
        session = runner.open(1)
        with pytest.raises(NoAttemptContext):
            await session.call(describe_agent(lambda task: current(), node="n"), "t")
    finally:
        await runner.aclose()


async def test_concurrent_scopes_on_one_loop_see_only_their_own_attempt() -> None:
    """Two tasks inside their own scopes at the same time each read their own attempt."""
    both_inside = asyncio.Barrier(2)

    async def attempt(ctx: AttemptContext) -> AttemptContext:
        with attempt_scope(ctx):
            await both_inside.wait()  # the other task has entered its scope by now
            return current()

    assert await asyncio.gather(attempt(FIRST), attempt(SECOND)) == [FIRST, SECOND]


async def test_tasks_an_agent_starts_inherit_its_attempt() -> None:
    """A task created inside the scope reads the attempt, even after the scope ended."""
    with attempt_scope(FIRST):
        reader = asyncio.create_task(_read_current())
    assert await reader == FIRST


async def _read_current() -> AttemptContext:
    await asyncio.sleep(0)
    return current()


def test_the_scope_restores_what_was_current_on_exit() -> None:
    """Leaving a scope restores the outer attempt, and leaving the last one restores none."""
    with attempt_scope(FIRST):
        with attempt_scope(SECOND):
            assert current() == SECOND
        assert current() == FIRST
    with pytest.raises(NoAttemptContext):
        current()


def test_the_scope_restores_what_was_current_on_exception() -> None:
    """An exception leaving the scope passes through and leaves no attempt behind."""
    with pytest.raises(ValueError, match="agent failed"), attempt_scope(FIRST):
        raise ValueError("agent failed")
    with pytest.raises(NoAttemptContext):
        current()


def test_attempt_context_is_a_frozen_picklable_value() -> None:
    """An AttemptContext cannot change, compares by value and survives pickling."""
    assert pickle.loads(pickle.dumps(SECOND)) == SECOND
    assert (SECOND.iteration, SECOND.item, FIRST.iteration, FIRST.item) == (2, 4, 0, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FIRST.attempt = 2  # type: ignore[misc]
    assert dataclasses.replace(FIRST, attempt=2) != FIRST
