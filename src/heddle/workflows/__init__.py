"""Workflow graphs and their executor."""

from heddle.workflows.breakers import CircuitBreakers, LocalCircuitBreakers
from heddle.workflows.checkpoint import Checkpointer, RunRecord, RunStatus, SQLiteCheckpointer
from heddle.workflows.context import ExecutionContext, Message, NodeResult, NodeStatus
from heddle.workflows.executor import WorkflowExecutor, WorkflowResult, WorkflowStatus
from heddle.workflows.graph import Node, WorkflowGraph
from heddle.workflows.resilience import CircuitBreaker, CircuitState, RetryPolicy
from heddle.workflows.runner import LocalRunner, Runner, RunnerSession

__all__ = [
    "Checkpointer",
    "CircuitBreaker",
    "CircuitBreakers",
    "CircuitState",
    "ExecutionContext",
    "LocalCircuitBreakers",
    "LocalRunner",
    "Message",
    "Node",
    "NodeResult",
    "NodeStatus",
    "RetryPolicy",
    "RunRecord",
    "RunStatus",
    "Runner",
    "RunnerSession",
    "SQLiteCheckpointer",
    "WorkflowExecutor",
    "WorkflowGraph",
    "WorkflowResult",
    "WorkflowStatus",
]
