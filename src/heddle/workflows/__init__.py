"""Workflow graphs and their executor."""

from heddle.workflows.checkpoint import Checkpointer, RunRecord, RunStatus, SQLiteCheckpointer
from heddle.workflows.context import ExecutionContext, Message, NodeResult, NodeStatus
from heddle.workflows.executor import WorkflowExecutor, WorkflowResult, WorkflowStatus
from heddle.workflows.graph import Node, WorkflowGraph
from heddle.workflows.resilience import CircuitBreaker, CircuitState, RetryPolicy

__all__ = [
    "Checkpointer",
    "CircuitBreaker",
    "CircuitState",
    "ExecutionContext",
    "Message",
    "Node",
    "NodeResult",
    "NodeStatus",
    "RetryPolicy",
    "RunRecord",
    "RunStatus",
    "SQLiteCheckpointer",
    "WorkflowExecutor",
    "WorkflowGraph",
    "WorkflowResult",
    "WorkflowStatus",
]
