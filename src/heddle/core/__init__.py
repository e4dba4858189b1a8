"""Core pieces every other subpackage may use: the error tree, the DI container, paths."""

from heddle.core.container import Container, get_container, reset_container
from heddle.core.errors import (
    AgentNotSerializable,
    CheckpointError,
    CircuitBreakerOpen,
    ConfigurationError,
    CorruptStoreError,
    GraphMismatchError,
    GraphValidationError,
    HeddleError,
    InvalidAgentError,
    InvalidAgentId,
    LeaseLostError,
    MemoryStoreError,
    NodeTimeoutError,
    ResultNotSerializable,
    RunInProgressError,
    RunNotFoundError,
    StoreClosedError,
)
from heddle.core.paths import heddle_home

__all__ = [
    "AgentNotSerializable",
    "CheckpointError",
    "CircuitBreakerOpen",
    "ConfigurationError",
    "Container",
    "CorruptStoreError",
    "GraphMismatchError",
    "GraphValidationError",
    "HeddleError",
    "InvalidAgentError",
    "InvalidAgentId",
    "LeaseLostError",
    "MemoryStoreError",
    "NodeTimeoutError",
    "ResultNotSerializable",
    "RunInProgressError",
    "RunNotFoundError",
    "StoreClosedError",
    "get_container",
    "heddle_home",
    "reset_container",
]
