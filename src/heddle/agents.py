"""What heddle accepts as an agent, and how it calls one.

An agent is any of:

* an object with ``async arun(task, **kwargs)`` (:class:`AgentProtocol`);
* an object with a synchronous ``run(task, **kwargs)``: run in a worker
  thread, never on the event loop;
* a coroutine function ``async def f(task)``, or a callable object whose
  ``__call__`` is one;
* a plain function ``def f(task)``: run in a worker thread.

Anything else is rejected by :meth:`WorkflowGraph.add_node` with an
:class:`~heddle.core.errors.InvalidAgentError` that names the node, instead of
failing half-way through a run.

An agent's *name* keys its circuit breaker: the ``name`` attribute when it is a
non-empty string, else a function's qualified name, else the class's qualified
name. Nodes that share an agent therefore share its breaker.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from heddle.core.errors import InvalidAgentError

__all__ = ["AgentProtocol", "AgentSpec", "SyncAgentProtocol", "describe_agent"]


@runtime_checkable
class AgentProtocol(Protocol):
    """An asynchronous agent: the shape heddle calls natively."""

    @property
    def name(self) -> str: ...

    async def arun(self, task: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class SyncAgentProtocol(Protocol):
    """A synchronous agent; heddle runs ``run`` in a worker thread."""

    def run(self, task: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """How to call one agent: the callable, whether it is a coroutine function, its name."""

    agent: object
    call: Callable[..., Any]
    is_async: bool
    name: str


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _agent_name(agent: object, call: Callable[..., Any]) -> str:
    name = getattr(agent, "name", None)
    if isinstance(name, str) and name:
        return name
    if inspect.isfunction(agent) or inspect.ismethod(agent) or inspect.isbuiltin(agent):
        return str(getattr(agent, "__qualname__", None) or getattr(call, "__name__", "agent"))
    return type(agent).__qualname__


def describe_agent(agent: object, *, node: str) -> AgentSpec:
    """Work out how to call ``agent``; raise :class:`InvalidAgentError` naming ``node``."""
    if isinstance(agent, type):
        raise InvalidAgentError(
            f"node {node!r}: got the class {agent.__qualname__}, not an instance; "
            f"pass {agent.__qualname__}(...) instead",
            node=node,
        )
    arun = getattr(agent, "arun", None)
    if arun is not None and callable(arun):
        # arun is async by contract: call it on the loop and await what it returns.
        return AgentSpec(agent, arun, True, _agent_name(agent, arun))
    run = getattr(agent, "run", None)
    if run is not None and callable(run):
        return AgentSpec(agent, run, _is_async_callable(run), _agent_name(agent, run))
    if callable(agent):
        return AgentSpec(agent, agent, _is_async_callable(agent), _agent_name(agent, agent))
    raise InvalidAgentError(
        f"node {node!r}: {type(agent).__qualname__} object is not an agent; expected an object "
        "with async arun(task) or run(task), or a function taking the task",
        node=node,
    )


async def await_if_needed(value: Awaitable[Any] | Any) -> Any:
    """Await ``value`` when a sync-looking callable returned an awaitable anyway."""
    if inspect.isawaitable(value):
        return await value
    return value
