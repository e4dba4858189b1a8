"""Core pieces every other subpackage may use: errors (and, later, the DI container)."""

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
    "GraphValidationError",
    "HeddleError",
    "InvalidAgentError",
    "NodeTimeoutError",
]
