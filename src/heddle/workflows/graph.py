"""The workflow graph: which agents run, and which must finish before which.

A :class:`WorkflowGraph` is a directed acyclic graph of named nodes; each node
holds an agent and, optionally, how to build the agent's task, a retry policy
and a per-attempt timeout. Edges say "target needs source's result".

Mistakes are reported as early as they can be: ``add_node`` rejects a
duplicate name or something that is not an agent, ``add_edge`` a self-loop or
a duplicate edge, and :meth:`WorkflowGraph.validate` (called by the executor
before any agent runs) unknown endpoints, bad task templates and cycles,
naming the nodes of the cycle.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # the parser str.format itself uses
import difflib
import hashlib
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

from heddle.agents import AgentSpec, describe_agent
from heddle.core._checks import check_seconds
from heddle.core.errors import ConfigurationError, GraphValidationError
from heddle.workflows.resilience import RetryPolicy

__all__ = ["Node", "WorkflowGraph"]

#: Field name that a task template uses for the workflow's input.
INPUT_FIELD = "input"


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a :class:`WorkflowGraph` (built by ``add_node``)."""

    name: str
    agent: object
    spec: AgentSpec
    task: object = None
    retry: RetryPolicy | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated graph flattened to integer indices, as the executor walks it."""

    names: tuple[str, ...]
    nodes: tuple[Node, ...]
    index: Mapping[str, int]
    predecessors: tuple[tuple[int, ...], ...]
    successors: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]  # a topological order


class WorkflowGraph:
    """A directed acyclic graph of agents.

    >>> async def draft(task): return f"draft of {task}"
    >>> async def review(task): return f"review of {task}"
    >>> g = WorkflowGraph("essay")
    >>> g.add_node("draft", draft).add_node("review", review).add_edge("draft", "review")
    WorkflowGraph('essay', nodes=2, edges=1)

    A node's task is built when the node starts:

    * ``task=None`` (default): a root node gets the workflow input; a node with
      one predecessor gets that predecessor's content; a node with several
      gets a dict ``{predecessor name: content}`` in the order the edges were
      added.
    * a string: a template formatted with ``{input}`` and the predecessors'
      names as fields, e.g. ``"Summarise {fetch} for {input}"`` (double a
      brace to write it literally).
    * a callable: called with the :class:`ExecutionContext`; it may be async.
    * anything else: passed to the agent as it is.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"graph name must be a non-empty str, got {name!r}", parameter="name"
            )
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._edges: dict[tuple[str, str], None] = {}  # insertion-ordered set
        self._version = 0
        self._plan: Plan | None = None
        self._plan_version = -1

    def __repr__(self) -> str:
        return f"WorkflowGraph({self.name!r}, nodes={len(self._nodes)}, edges={len(self._edges)})"

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes by name, in the order they were added (read-only)."""
        return dict(self._nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """The edges ``(source, target)`` in the order they were added."""
        return list(self._edges)

    def add_node(
        self,
        name: str,
        agent: object,
        *,
        task: object = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Self:
        """Add a node running ``agent``; see the class docstring for ``task``.

        ``retry`` overrides the executor's policy for this node; ``timeout``
        (seconds) bounds each attempt, an overrun counting as a failure.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"node name must be a non-empty str, got {name!r}", parameter="name"
            )
        if name == INPUT_FIELD:
            raise GraphValidationError(
                f"graph {self.name!r}: node name {INPUT_FIELD!r} is reserved for the workflow "
                "input in task templates; choose another name",
                graph=self.name,
                nodes=[name],
            )
        if name in self._nodes:
            raise GraphValidationError(
                f"graph {self.name!r}: node {name!r} already exists", graph=self.name, nodes=[name]
            )
        spec = describe_agent(agent, node=name)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"node {name!r}: retry must be a RetryPolicy or None, got {type(retry).__name__}",
                parameter="retry",
            )
        seconds = check_seconds(
            timeout, "timeout", exclusive=True, none_ok=True, where=f"node {name!r}"
        )
        self._nodes[name] = Node(name, agent, spec, task, retry, seconds)
        self._version += 1
        return self

    def add_edge(self, source: str, target: str) -> Self:
        """Make ``target`` wait for ``source`` (and receive its result)."""
        if source == target:
            raise GraphValidationError(
                f"graph {self.name!r}: self-loop on node {source!r} is not allowed",
                graph=self.name,
                nodes=[source],
            )
        if (source, target) in self._edges:
            raise GraphValidationError(
                f"graph {self.name!r}: duplicate edge {source!r} -> {target!r}",
                graph=self.name,
                nodes=[source, target],
            )
        self._edges[(source, target)] = None
        self._version += 1
        return self

    def predecessors(self, name: str) -> list[str]:
        """The nodes ``name`` waits for, in the order their edges were added."""
        plan = self.plan()
        return [plan.names[i] for i in plan.predecessors[plan.index[name]]]

    def successors(self, name: str) -> list[str]:
        """The nodes that wait for ``name``."""
        plan = self.plan()
        return [plan.names[i] for i in plan.successors[plan.index[name]]]

    def topological_order(self) -> list[str]:
        """The node names in an order where every node follows all its predecessors."""
        plan = self.plan()
        return [plan.names[i] for i in plan.order]

    def validate(self) -> None:
        """Raise :class:`GraphValidationError` if the graph cannot run; else return None."""
        self.plan()

    def plan(self) -> Plan:
        """Validate and flatten the graph (cached until the graph changes)."""
        if self._plan is not None and self._plan_version == self._version:
            return self._plan
        plan = self._build_plan()
        self._plan, self._plan_version = plan, self._version
        return plan

    def _build_plan(self) -> Plan:
        if not self._nodes:
            raise GraphValidationError(f"graph {self.name!r} has no nodes", graph=self.name)
        names = tuple(self._nodes)
        index = {n: i for i, n in enumerate(names)}
        preds: list[list[int]] = [[] for _ in names]
        succs: list[list[int]] = [[] for _ in names]
        for source, target in self._edges:
            for endpoint in (source, target):
                if endpoint not in index:
                    raise self._unknown(endpoint, source, target)
            s, t = index[source], index[target]
            preds[t].append(s)
            succs[s].append(t)
        order = _kahn(preds, succs)
        if len(order) < len(names):
            cycle = [names[i] for i in _find_cycle(succs, set(range(len(names))) - set(order))]
            raise GraphValidationError(
                f"graph {self.name!r} has a cycle: {' -> '.join([*cycle, cycle[0]])}",
                graph=self.name,
                nodes=cycle,
            )
        nodes = tuple(self._nodes.values())
        for node, node_preds in zip(nodes, preds, strict=True):
            if isinstance(node.task, str):
                self._check_template(node, [names[i] for i in node_preds])
        return Plan(
            names=names,
            nodes=nodes,
            index=index,
            predecessors=tuple(tuple(p) for p in preds),
            successors=tuple(tuple(s) for s in succs),
            order=tuple(order),
        )

    def _unknown(self, endpoint: str, source: str, target: str) -> GraphValidationError:
        hint = difflib.get_close_matches(str(endpoint), list(self._nodes), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return GraphValidationError(
            f"graph {self.name!r}: edge {source!r} -> {target!r} names unknown node "
            f"{endpoint!r}{suggestion}",
            graph=self.name,
            nodes=[endpoint],
        )

    def _check_template(self, node: Node, predecessors: Sequence[str]) -> None:
        assert isinstance(node.task, str)
        allowed = {INPUT_FIELD, *predecessors}
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(node.task) if f is not None]
            for field in fields:
                first, _rest = _string.formatter_field_name_split(field)
                if first not in allowed:
                    options = ", ".join(repr(a) for a in sorted(allowed))
                    raise GraphValidationError(
                        f"graph {self.name!r}: task template of node {node.name!r} uses "
                        f"{{{field}}}, but only {options} are available (the input and the "
                        "node's predecessors); write {{ and }} for literal braces",
                        graph=self.name,
                        nodes=[node.name],
                    )
        except ValueError as exc:
            if isinstance(exc, GraphValidationError):
                raise
            raise GraphValidationError(
                f"graph {self.name!r}: task template of node {node.name!r} is malformed ({exc}); "
                "write {{ and }} for literal braces",
                graph=self.name,
                nodes=[node.name],
            ) from exc

    def fingerprint(self) -> str:
        """A hash of the graph's structure: node names, their agents' names, and edges."""
        plan = self.plan()
        h = hashlib.sha256()
        for node in plan.nodes:
            h.update(f"n\0{node.name}\0{node.spec.name}\n".encode())
        for source, target in self._edges:
            h.update(f"e\0{source}\0{target}\n".encode())
        return h.hexdigest()[:16]

    def to_mermaid(self, direction: str = "TD") -> str:
        """The graph as a Mermaid ``flowchart`` (for any Markdown that renders Mermaid)."""
        if direction not in {"TD", "TB", "BT", "LR", "RL"}:
            raise ConfigurationError(
                f"unknown Mermaid direction {direction!r}", parameter="direction"
            )
        ids = {name: f"n{i}" for i, name in enumerate(self._nodes)}
        lines = [f"flowchart {direction}"]
        lines += [f'    {ids[n]}["{_mermaid_label(n)}"]' for n in self._nodes]
        lines += [f"    {ids[s]} --> {ids[t]}" for s, t in self._edges if s in ids and t in ids]
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """The graph in Graphviz DOT."""
        lines = [f"digraph {_dot_id(self.name)} {{", "    rankdir=TB;"]
        lines += [f"    {_dot_id(n)};" for n in self._nodes]
        lines += [f"    {_dot_id(s)} -> {_dot_id(t)};" for s, t in self._edges]
        return "\n".join([*lines, "}"]) + "\n"


def _mermaid_label(text: str) -> str:
    return "".join({'"': "#quot;", "<": "#lt;", ">": "#gt;"}.get(ch, ch) for ch in text)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kahn(preds: Sequence[Sequence[int]], succs: Sequence[Sequence[int]]) -> list[int]:
    indegree = [len(p) for p in preds]
    order = [i for i, d in enumerate(indegree) if d == 0]
    for i in order:  # the list grows while we walk it: a queue without a deque
        for j in succs[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                order.append(j)
    return order


def _find_cycle(succs: Sequence[Sequence[int]], candidates: set[int]) -> list[int]:
    """One cycle among ``candidates`` (nodes Kahn's algorithm could not order), in edge order."""
    # Every candidate lies on a cycle or downstream of one, and has a candidate
    # predecessor; walking successors inside the candidate set from any of them
    # must revisit a node. Iterative DFS keeps deep graphs off the recursion limit.
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(candidates, white)
    for start in sorted(candidates):
        if colour[start] != white:
            continue
        path: list[int] = [start]
        iters: list[Iterator[int]] = [iter(succs[start])]
        colour[start] = grey
        while path:
            nxt = next((j for j in iters[-1] if j in colour), None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
            elif colour[nxt] == grey:
                return path[path.index(nxt) :]
            elif colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(succs[nxt]))
    raise AssertionError("Kahn left nodes unordered yet no cycle")  # pragma: no cover
