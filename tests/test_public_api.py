"""Every package exports exactly its public names, sorted."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import types

import pytest

import heddle

_ALL = list(pkgutil.walk_packages(heddle.__path__, "heddle."))
PACKAGES = ["heddle", *sorted(m.name for m in _ALL if m.ispkg or m.name.endswith("testing"))]
MODULES = ["heddle", *sorted(m.name for m in _ALL)]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_matches_public_names(name: str) -> None:
    """__all__ is sorted, every entry exists, and every public non-module attribute is listed."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ lists missing {attr}"
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and attr not in {"annotations"}
    }
    assert public == set(exported)


def test_quick_start_names_are_importable_from_heddle() -> None:
    """The names the issue promises are available from the top-level package."""
    for name in (
        "AgentProtocol",
        "CircuitBreaker",
        "CircuitBreakerOpen",
        "ExecutionContext",
        "GraphValidationError",
        "HeddleError",
        "RetryPolicy",
        "WorkflowExecutor",
        "WorkflowGraph",
        "WorkflowResult",
    ):
        assert name in heddle.__all__
    assert issubclass(heddle.GraphValidationError, ValueError)
    assert issubclass(heddle.CircuitBreakerOpen, heddle.HeddleError)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    """The examples in docstrings are doctests and pass."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
