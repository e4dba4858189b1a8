"""Workflow graphs and their executor."""

from heddle.workflows.activation import Activation
from heddle.workflows.breakers import CircuitBreakers, LocalCircuitBreakers
from heddle.workflows.checkpoint import Checkpointer, RunRecord, SQLiteCheckpointer
from heddle.workflows.context import ExecutionContext, Message, NodeResult
from heddle.workflows.current import AttemptContext
from heddle.workflows.executor import WorkflowExecutor, WorkflowResult
from heddle.workflows.graph import Branch, Edge, Node, WorkflowGraph
from heddle.workflows.observers import RunObserver
from heddle.workflows.resilience import CircuitBreaker, CircuitState, RetryPolicy
from heddle.workflows.runner import LocalRunner, Runner, RunnerSession
from heddle.workflows.status import NodeStatus, RunStatus

__all__ = [
    "Activation",
    "AttemptContext",
    "Branch",
    "Checkpointer",
    "CircuitBreaker",
    "CircuitBreakers",
    "CircuitState",
    "Edge",
    "ExecutionContext",
    "LocalCircuitBreakers",
    "LocalRunner",
    "Message",
    "Node",
    "NodeResult",
    "NodeStatus",
    "RetryPolicy",
    "RunObserver",
    "RunRecord",
    "RunStatus",
    "Runner",
    "RunnerSession",
    "SQLiteCheckpointer",
    "WorkflowExecutor",
    "WorkflowGraph",
    "WorkflowResult",
]
