"""Load a WorkflowGraph from ``FILE.py[:VAR]``, with one clear error for each way it can fail.

Only a ``.py`` file is loaded, and loading it runs it: it is executed as a
module named ``_heddle_workflow_<stem>`` (so an ``if __name__ == "__main__":``
block does not run), registered in ``sys.modules``, with its directory first
on ``sys.path`` as ``python FILE.py`` would have it, so it can import its
neighbours.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from heddle.cli._errors import CLIError, usage_error
from heddle.core.errors import GraphValidationError, HeddleError
from heddle.workflows.graph import WorkflowGraph

__all__ = ["GraphSource", "load_graph", "parse_source"]


@dataclass(frozen=True, slots=True)
class GraphSource:
    """Where a graph comes from: ``text`` as typed, split into ``path`` and ``var``."""

    text: str
    path: Path
    var: str | None


def parse_source(text: str) -> GraphSource:
    """Split ``FILE.py[:VAR]``; a path that exists as typed is taken whole, colons and all."""
    if not text:
        raise usage_error("FILE must not be empty")
    path = Path(text)
    if ":" in text and not path.exists():
        head, _, var = text.rpartition(":")
        if not var:
            raise usage_error(f"{text!r}: nothing after ':' (write FILE.py or FILE.py:VAR)")
        if var.isidentifier():
            return GraphSource(text, Path(head), var)
    return GraphSource(text, path, None)


def _module_name(path: Path) -> str:
    return "_heddle_workflow_" + re.sub(r"\W", "_", path.stem)


def _line_in(exc: BaseException, filename: str) -> int | None:
    """The last line of ``filename`` in ``exc``'s traceback: where the file's own code failed."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _execute(source: GraphSource) -> types.ModuleType:
    path, shown = source.path, str(source.path)
    if path.is_dir():
        raise usage_error(f"{shown} is a directory, not a Python file")
    if path.suffix.lower() != ".py":
        # Refused before anything runs: a YAML or JSON file would otherwise be run as Python.
        raise usage_error(
            f"{shown} is not a Python file: heddle runs workflows written in Python, "
            "FILE.py[:VAR] (the file is executed)"
        )
    if not path.exists():
        raise usage_error(f"no such file: {shown}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise usage_error(f"cannot read {shown}: {exc.strerror or exc}") from exc
    filename = str(path.resolve())
    try:
        code = compile(data, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes
        line = exc.lineno if isinstance(exc, SyntaxError) else None
        detail = (exc.msg if isinstance(exc, SyntaxError) else str(exc)) + (
            f" at line {line}" if line else ""
        )
        raise usage_error(f"{shown} is not valid Python: {detail}") from exc
    name = _module_name(path)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        line = _line_in(exc, filename)
        where = f" (line {line})" if line else ""
        if isinstance(exc, HeddleError):
            raise CLIError(f"{shown}{where}: {exc}") from exc
        if isinstance(exc, SystemExit):
            raise CLIError(f"{shown} called sys.exit({exc.code!r}) while loading{where}") from exc
        raise CLIError(f"{shown} raised {type(exc).__name__} while loading{where}: {exc}") from exc
    return module


def _graphs_in(module: types.ModuleType) -> dict[str, WorkflowGraph]:
    """The module-level graphs by variable name, one name per graph object."""
    found: dict[int, tuple[str, WorkflowGraph]] = {}
    for name, value in vars(module).items():
        if isinstance(value, WorkflowGraph) and not name.startswith("__"):
            found.setdefault(id(value), (name, value))
    return dict(found.values())


def _from_variable(source: GraphSource, module: types.ModuleType, var: str) -> WorkflowGraph:
    shown = str(source.path)
    if not hasattr(module, var):
        graphs = sorted(_graphs_in(module))
        known = f" (graphs in it: {', '.join(graphs)})" if graphs else ""
        raise usage_error(f"{shown} has no variable {var!r}{known}")
    value = getattr(module, var)
    if isinstance(value, WorkflowGraph):
        return value
    if not callable(value):
        raise usage_error(
            f"{shown}:{var} is not a WorkflowGraph (or a function returning one) "
            f"but a value of type {type(value).__name__}"
        )
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # a builtin without a signature: just try it
        signature = None
    if signature is not None:
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise usage_error(
                f"{shown}:{var} needs arguments ({', '.join(required)}); "
                "heddle calls a graph function with none"
            )
    try:
        graph = value()
    except Exception as exc:
        line = _line_in(exc, str(source.path.resolve()))
        where = f" (line {line})" if line else ""
        if isinstance(exc, HeddleError):
            raise CLIError(f"{shown}:{var}(){where}: {exc}") from exc
        raise CLIError(f"{shown}:{var}() raised {type(exc).__name__}{where}: {exc}") from exc
    if not isinstance(graph, WorkflowGraph):
        raise usage_error(
            f"{shown}:{var}() returned a value of type {type(graph).__name__}, not a WorkflowGraph"
        )
    return graph


def load_graph(text: str) -> tuple[WorkflowGraph, GraphSource]:
    """Execute the file named by ``text`` and return its graph, validated."""
    source = parse_source(text)
    module = _execute(source)
    if source.var is not None:
        graph = _from_variable(source, module, source.var)
    else:
        graphs = _graphs_in(module)
        if not graphs:
            raise usage_error(
                f"{source.path} defines no WorkflowGraph at module level; name a graph or a "
                f"function returning one: {source.path}:VAR"
            )
        if len(graphs) > 1:
            names = sorted(graphs)
            raise usage_error(
                f"{source.path} defines several graphs ({', '.join(names)}); "
                f"choose one: {source.path}:{names[0]}"
            )
        ((var, graph),) = graphs.items()
        source = GraphSource(source.text, source.path, var)
    try:
        graph.validate()
    except GraphValidationError as exc:
        raise CLIError(f"invalid graph in {source.path}: {exc}") from exc
    return graph, source
