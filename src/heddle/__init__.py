"""heddle: run multi-agent workflows in production.

A graph of agents, executed concurrently on asyncio with bounded concurrency,
retries with backoff and circuit breakers::

    from heddle import WorkflowExecutor, WorkflowGraph

    graph = WorkflowGraph("research").add_node("search", search).add_node("write", write)
    graph.add_edge("search", "write")
    result = WorkflowExecutor(max_concurrent=10).run(graph, input="solid-state batteries")

Inside an agent, ``heddle.current()`` tells which run, node and attempt it is.
"""

from heddle.agents import AgentProtocol
from heddle.core.container import Container, get_container
from heddle.core.errors import (
    CircuitBreakerOpen,
    GraphValidationError,
    HeddleError,
    InvalidAgentId,
)
from heddle.memory.agent_memory import AgentMemory
from heddle.messaging.events import Event, EventType
from heddle.messaging.message_bus import MessageBus
from heddle.workflows.context import ExecutionContext
from heddle.workflows.current import current
from heddle.workflows.executor import WorkflowExecutor, WorkflowResult
from heddle.workflows.graph import WorkflowGraph
from heddle.workflows.resilience import CircuitBreaker, RetryPolicy

__version__ = "0.1.0.dev0"

__all__ = [
    "AgentMemory",
    "AgentProtocol",
    "CircuitBreaker",
    "CircuitBreakerOpen",
    "Container",
    "Event",
    "EventType",
    "ExecutionContext",
    "GraphValidationError",
    "HeddleError",
    "InvalidAgentId",
    "MessageBus",
    "RetryPolicy",
    "WorkflowExecutor",
    "WorkflowGraph",
    "WorkflowResult",
    "current",
    "get_container",
]
