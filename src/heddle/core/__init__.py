"""Core pieces every other subpackage may use: the error tree and the DI container."""

from heddle.core.container import Container, get_container, reset_container
from heddle.core.errors import (
    CircuitBreakerOpen,
    ConfigurationError,
    GraphValidationError,
    HeddleError,
    InvalidAgentError,
    NodeTimeoutError,
)

__all__ = [
    "CircuitBreakerOpen",
    "ConfigurationError",
    "Container",
    "GraphValidationError",
    "HeddleError",
    "InvalidAgentError",
    "NodeTimeoutError",
    "get_container",
    "reset_container",
]
