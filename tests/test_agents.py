"""What counts as an agent, how it is called, and what its breaker is named."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from heddle import AgentProtocol
from heddle.agents import describe_agent
from heddle.core.errors import InvalidAgentError


class Arun:
    name = "researcher"

    async def arun(self, task: Any, **kwargs: Any) -> Any:
        return task


class Run:
    def run(self, task: Any, **kwargs: Any) -> Any:
        return task


class AsyncCallable:
    async def __call__(self, task: Any) -> Any:
        return task


class SyncCallable:
    def __call__(self, task: Any) -> Any:
        return task


async def coro_fn(task: Any) -> Any:
    return task


def plain_fn(task: Any) -> Any:
    return task


@pytest.mark.parametrize(
    ("agent", "is_async", "name"),
    [
        (Arun(), True, "researcher"),
        (Run(), False, "Run"),
        (AsyncCallable(), True, "AsyncCallable"),
        (SyncCallable(), False, "SyncCallable"),
        (coro_fn, True, "coro_fn"),
        (plain_fn, False, "plain_fn"),
        (functools.partial(coro_fn), True, "partial"),
    ],
)
def test_agent_kinds_are_recognised(agent: object, is_async: bool, name: str) -> None:
    """Each accepted shape is called the right way and named for its breaker."""
    spec = describe_agent(agent, node="n")
    assert spec.is_async is is_async
    assert spec.name == name


def test_nested_function_uses_its_qualified_name() -> None:
    """Functions are keyed by __qualname__, so same-named local functions differ."""

    def local(task: Any) -> Any:
        return task

    assert describe_agent(local, node="n").name.endswith("<locals>.local")


def test_empty_name_attribute_falls_back_to_the_class_name() -> None:
    """A blank ``name`` is ignored rather than keying every such agent together."""
    agent = Arun()
    agent.name = ""
    assert describe_agent(agent, node="n").name == "Arun"


@pytest.mark.parametrize("bad", [object(), 42, "a string", None])
def test_non_agents_are_rejected_naming_the_node(bad: object) -> None:
    """Objects that cannot be called are an InvalidAgentError (a TypeError) naming the node."""
    with pytest.raises(InvalidAgentError, match="node 'writer'") as info:
        describe_agent(bad, node="writer")
    assert isinstance(info.value, TypeError)


def test_a_class_instead_of_an_instance_is_explained() -> None:
    """Passing the class is a common slip; the error says to instantiate it."""
    with pytest.raises(InvalidAgentError, match=r"pass Arun\(\.\.\.\) instead"):
        describe_agent(Arun, node="n")


def test_agent_protocol_is_runtime_checkable() -> None:
    """AgentProtocol matches objects with a name and arun."""
    assert isinstance(Arun(), AgentProtocol)
    assert not isinstance(Run(), AgentProtocol)
