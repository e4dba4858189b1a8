"""The workflow graph: which agents run, which must finish before which, and where results go.

A :class:`WorkflowGraph` is a graph of named nodes; each node holds an agent
and, optionally, how to build the agent's task, a retry policy and a
per-attempt timeout. Edges say "target needs source's result". An edge may
be conditional (``when=``, or :meth:`WorkflowGraph.add_branch`): it is taken
only if its condition holds for the source's content. The only cycles
allowed are loops closed by an edge with ``max_iterations``: every loop
carries its own bound.

Mistakes are reported as early as they can be: ``add_node`` rejects a
duplicate name or something that is not an agent, ``add_edge`` a self-loop, a
duplicate edge or a condition that is not callable, and
:meth:`WorkflowGraph.validate` (called by the executor before any agent runs)
unknown endpoints, bad task templates and unbounded cycles, naming the nodes
of the cycle.
"""

from __future__ import annotations

import _string  # type: ignore[import-not-found]  # the parser str.format itself uses
import difflib
import hashlib
import inspect
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from heddle.agents import AgentSpec, describe_agent
from heddle.core._checks import check_int, check_seconds
from heddle.core.errors import ConfigurationError, GraphValidationError
from heddle.workflows.resilience import RetryPolicy

__all__ = ["Branch", "Edge", "Node", "WorkflowGraph"]

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
    map: bool = False  # one activation per item of its task (a list)


@dataclass(frozen=True, slots=True, eq=False)
class Branch:
    """One ``add_branch`` call: ``choose(content)`` names the targets to take."""

    source: str
    choose: Callable[[Any], object]
    targets: tuple[str, ...]

    @property
    def label(self) -> str:
        return _callable_name(self.choose, "branch")


@dataclass(frozen=True, slots=True)
class Edge:
    """One edge ``source -> target`` (built by ``add_edge`` or ``add_branch``).

    Unconditional when ``when``, ``branch`` and ``max_iterations`` are all
    None. An edge with ``max_iterations`` closes a loop: it is a *back edge*.
    """

    source: str
    target: str
    when: Callable[[Any], object] | None = None
    max_iterations: int | None = None
    branch: Branch | None = None

    @property
    def conditional(self) -> bool:
        return self.when is not None or self.branch is not None or self.max_iterations is not None

    @property
    def label(self) -> str:
        """The condition's name (a branch's chooser, or ``when``'s), with the loop bound."""
        if self.branch is not None:
            text = self.branch.label
        elif self.when is not None:
            text = _callable_name(self.when, "when")
        else:
            text = ""
        if self.max_iterations is not None:
            bound = f"max {self.max_iterations}"
            text = f"{text}, {bound}" if text else bound
        return text


def _check_condition(fn: object, parameter: str, where: str, shape: str) -> None:
    """Routing runs between attempts, on the loop: a condition is a plain, quick function."""
    if not callable(fn):
        raise ConfigurationError(
            f"{where}: {parameter} must be callable ({shape}), got {type(fn).__name__}",
            parameter=parameter,
        )
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # an object with an async __call__
    ):
        raise ConfigurationError(
            f"{where}: {parameter} must be a plain function ({shape}), not a coroutine "
            "function: do the async work in the source node's agent and route on its result",
            parameter=parameter,
        )


def _callable_name(fn: object, default: str) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return default if name == "<lambda>" else str(name)


@dataclass(frozen=True, slots=True)
class Route:
    """How node ``i``'s out-edges are decided once it succeeds (indices into the plan).

    ``always``: edges taken whenever the node succeeds; ``whens``: ``(target,
    condition)`` pairs; ``branches``: ``(branch, target indices)``.
    """

    always: tuple[int, ...]
    whens: tuple[tuple[int, Callable[[Any], object]], ...]
    branches: tuple[tuple[Branch, tuple[int, ...]], ...]
    targets: tuple[int, ...]  # every target, forward and back, in edge order


@dataclass(frozen=True, slots=True)
class BackEdge:
    """A loop's closing edge ``source -> target``, taken at most until ``target``'s bound."""

    source: int
    target: int
    max_iterations: int


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated graph flattened to integer indices, as the executor walks it.

    ``predecessors``/``successors``/``order`` describe the forward graph (every
    edge but the back edges), which is acyclic. ``routes[i]`` is None for a
    node whose out-edges are all unconditional forward edges; ``static`` is
    True when every node's is (a plain DAG: nothing to decide at run time).
    """

    names: tuple[str, ...]
    nodes: tuple[Node, ...]
    index: Mapping[str, int]
    predecessors: tuple[tuple[int, ...], ...]
    successors: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]  # a topological order of the forward graph
    routes: tuple[Route | None, ...] = ()
    back_edges: tuple[BackEdge, ...] = ()
    back_sources: tuple[tuple[int, ...], ...] = ()  # per target: sources of its back edges
    static: bool = True


class WorkflowGraph:
    """A graph of agents: a DAG, plus conditional edges and bounded loops.

    >>> async def draft(task): return f"draft of {task}"
    >>> async def review(task): return f"review of {task}"
    >>> g = WorkflowGraph("essay")
    >>> g.add_node("draft", draft).add_node("review", review).add_edge("draft", "review")
    WorkflowGraph('essay', nodes=2, edges=1)

    A node's task is built when the node starts:

    * ``task=None`` (default): a root node gets the workflow input; a node
      that received one content over its taken edges gets that content; a
      node that received several gets a dict ``{source name: content}`` in
      the order the edges were added. Only taken edges deliver: a join after
      a branch gets just the chosen branch's content. A loop's next
      iteration receives the back edge's content and the latest contents of
      its other inputs.
    * a string: a template formatted with ``{input}`` and the sources' names
      as fields, e.g. ``"Summarise {fetch} for {input}"`` (double a brace to
      write it literally); a source whose edge delivered nothing formats as
      an empty string.
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
        # In the order they were added; None for a plain edge (a graph of 100,000
        # nodes keeps no 300,000 objects the garbage collector would walk).
        self._edges: dict[tuple[str, str], Edge | None] = {}
        self._specs: dict[int, AgentSpec] = {}  # one per agent, shared by its nodes
        self._adding_map = False
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
        spec = self._specs.get(id(agent))
        if spec is None or spec.agent is not agent:
            spec = self._specs[id(agent)] = describe_agent(agent, node=name)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"node {name!r}: retry must be a RetryPolicy or None, got {type(retry).__name__}",
                parameter="retry",
            )
        seconds = check_seconds(
            timeout, "timeout", exclusive=True, none_ok=True, where=f"node {name!r}"
        )
        self._nodes[name] = Node(name, agent, spec, task, retry, seconds, self._adding_map)
        self._version += 1
        return self

    def add_map(
        self,
        name: str,
        agent: object,
        *,
        task: object = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Self:
        """Add a node that runs ``agent`` once per item of its task, which must be a list.

        The task is built as for :meth:`add_node` (a predecessor's content, a
        template, a callable). Each item is its own activation (``item`` =
        its index): its own attempts, ``retry``, ``timeout`` and breaker call,
        all within the run's one ``max_concurrent`` bound. The node's content
        is the list of the items' contents, in item order (``[]`` for an
        empty list); if an item fails after its retries the node fails, and
        its result's ``"items"`` says how each item ended.

        >>> async def urls(topic): return ["a.example", "b.example"]
        >>> async def summarise(url): return f"summary of {url}"
        >>> g = WorkflowGraph("digest").add_node("find", urls).add_map("summarise", summarise)
        >>> g.add_edge("find", "summarise")
        WorkflowGraph('digest', nodes=2, edges=1)
        """
        self._adding_map = True
        try:
            return self.add_node(name, agent, task=task, retry=retry, timeout=timeout)
        finally:
            self._adding_map = False

    def add_edge(
        self,
        source: str,
        target: str,
        *,
        when: Callable[[Any], object] | None = None,
        max_iterations: int | None = None,
    ) -> Self:
        """Make ``target`` wait for ``source`` and receive its result.

        ``when``: a condition called with ``source``'s content once ``source``
        succeeds; the edge is taken only if it returns true. A node none of
        whose incoming edges was taken is skipped ("not taken"), and so is
        whatever can then receive nothing.

        ``max_iterations``: this edge closes a loop (``target`` comes before
        ``source``); taking it runs ``target`` again, at most
        ``max_iterations`` times each time the loop is entered (a loop inside
        another starts its count again with each outer round). At the bound
        the edge is simply not taken (an ``edge.exhausted`` event says so) and
        the run goes on.

        >>> g = WorkflowGraph("essay")
        >>> async def write(task): return "draft"
        >>> async def review(task): return {"approved": True}
        >>> g.add_node("write", write).add_node("review", review).add_edge("write", "review")
        WorkflowGraph('essay', nodes=2, edges=1)
        >>> def needs_changes(verdict): return not verdict["approved"]
        >>> g.add_edge("review", "write", when=needs_changes, max_iterations=3)
        WorkflowGraph('essay', nodes=2, edges=2)
        """
        self._check_endpoints(source, target)
        if when is not None:
            _check_condition(when, "when", f"edge {source!r} -> {target!r}", "content -> bool")
        if max_iterations is not None:
            check_int(max_iterations, "max_iterations", minimum=1)
        conditional = when is not None or max_iterations is not None
        self._edges[(source, target)] = (
            Edge(source, target, when, max_iterations) if conditional else None
        )
        self._version += 1
        return self

    def add_branch(
        self,
        source: str,
        choose: Callable[[Any], object],
        targets: Sequence[str],
        *,
        max_iterations: int | None = None,
    ) -> Self:
        """Route ``source``'s result to the targets ``choose(content)`` names.

        ``choose`` returns one of ``targets``, a list of them, or None (take
        none). Anything else, or a ``choose`` that raises, fails ``source``
        with :class:`~heddle.core.errors.RoutingError`. The targets not chosen
        are skipped ("not taken") unless another edge reaches them.

        ``max_iterations`` bounds the targets that lie upstream of ``source``
        (going back to them closes a loop), as for :meth:`add_edge`.
        """
        _check_condition(choose, "choose", f"branch from {source!r}", "content -> target name(s)")
        if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
            raise ConfigurationError(
                f"branch from {source!r}: targets must be a non-empty list of node names, "
                f"got {targets!r}",
                parameter="targets",
            )
        names = tuple(targets)
        if len(set(names)) != len(names):
            raise GraphValidationError(
                f"graph {self.name!r}: branch from {source!r} names a target twice: {list(names)}",
                graph=self.name,
                nodes=[source],
            )
        for target in names:
            self._check_endpoints(source, target)
        if max_iterations is not None:
            check_int(max_iterations, "max_iterations", minimum=1)
        branch = Branch(source, choose, names)
        for target in names:
            self._edges[(source, target)] = Edge(source, target, None, max_iterations, branch)
        self._version += 1
        return self

    def _check_endpoints(self, source: str, target: str) -> None:
        for endpoint in (source, target):
            if not isinstance(endpoint, str):
                raise ConfigurationError(
                    f"edge endpoints are node names (str), got {endpoint!r}", parameter="source"
                )
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

    def edge(self, source: str, target: str) -> Edge:
        """The edge ``source -> target`` with its condition and bound."""
        try:
            edge = self._edges[(source, target)]
        except KeyError:
            raise GraphValidationError(
                f"graph {self.name!r} has no edge {source!r} -> {target!r}",
                graph=self.name,
                nodes=[source, target],
            ) from None
        return edge if edge is not None else Edge(source, target)

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
        for source, target in self._edges:
            for endpoint in (source, target):
                if endpoint not in index:
                    raise self._unknown(endpoint, source, target)
        back = self._back_edges(index)
        preds: list[list[int]] = [[] for _ in names]
        succs: list[list[int]] = [[] for _ in names]
        back_sources: list[list[int]] = [[] for _ in names]
        for (source, target), edge in self._edges.items():
            s, t = index[source], index[target]
            if edge is not None and edge in back:
                back_sources[t].append(s)
            else:
                preds[t].append(s)
                succs[s].append(t)
        order = _kahn(preds, succs)
        if len(order) < len(names):
            cycle = [names[i] for i in _find_cycle(succs, set(range(len(names))) - set(order))]
            raise GraphValidationError(
                f"graph {self.name!r} has a cycle: {' -> '.join([*cycle, cycle[0]])}; a loop "
                "must be bounded: close it with a conditional edge that has max_iterations, "
                f"e.g. add_edge({cycle[-1]!r}, {cycle[0]!r}, when=..., max_iterations=3)",
                graph=self.name,
                nodes=cycle,
            )
        nodes = tuple(self._nodes.values())
        for i, node in enumerate(nodes):
            if isinstance(node.task, str):
                fields = [names[p] for p in (*preds[i], *back_sources[i])]
                self._check_template(node, fields)
        routes = self._routes(names, index, back)
        back_edges = tuple(
            BackEdge(index[e.source], index[e.target], e.max_iterations or 0)
            for e in self._edges.values()
            if e is not None and e in back
        )
        return Plan(
            names=names,
            nodes=nodes,
            index=index,
            predecessors=tuple(tuple(p) for p in preds),
            successors=tuple(tuple(s) for s in succs),
            order=tuple(order),
            routes=routes,
            back_edges=back_edges,
            back_sources=tuple(tuple(b) for b in back_sources),
            static=not back_edges and all(r is None for r in routes),
        )

    def _back_edges(self, index: Mapping[str, int]) -> set[Edge]:
        """The edges that close loops: those with ``max_iterations`` whose target reaches
        their source without them. An ``add_edge`` with a bound that closes no loop is
        an error; a branch's bound applies to those of its targets that close one."""
        bounded = [
            e for e in self._edges.values() if e is not None and e.max_iterations is not None
        ]
        if not bounded:
            return set()
        succs: dict[int, list[int]] = {}
        for (source, target), e in self._edges.items():
            if e is None or e.max_iterations is None or e.branch is not None:
                succs.setdefault(index[source], []).append(index[target])
        back: set[Edge] = set()
        for e in bounded:
            s, t = index[e.source], index[e.target]
            if _reaches(succs, t, s):
                back.add(e)
            elif e.branch is None:
                raise GraphValidationError(
                    f"graph {self.name!r}: edge {e.source!r} -> {e.target!r} has "
                    f"max_iterations but closes no loop ({e.target!r} does not lead back to "
                    f"{e.source!r}); drop max_iterations",
                    graph=self.name,
                    nodes=[e.source, e.target],
                )
        return back

    def _routes(
        self, names: tuple[str, ...], index: Mapping[str, int], back: set[Edge]
    ) -> tuple[Route | None, ...]:
        routing = {index[s] for (s, _), edge in self._edges.items() if edge is not None}
        out: dict[int, list[Edge]] = {i: [] for i in routing}
        for (source, target), edge in self._edges.items():
            i = index[source]
            if i in routing:
                out[i].append(edge if edge is not None else Edge(source, target))
        routes: list[Route | None] = []
        for i in range(len(names)):
            edges = out.get(i)
            if edges is None or not any(e.conditional for e in edges):
                routes.append(None)
                continue
            always = tuple(
                index[e.target]
                for e in edges
                if not e.conditional or (e.when is None and e.branch is None)
            )
            whens = tuple((index[e.target], e.when) for e in edges if e.when is not None)
            branches: dict[Branch, tuple[int, ...]] = {}
            for e in edges:
                if e.branch is not None:
                    branches[e.branch] = (*branches.get(e.branch, ()), index[e.target])
            routes.append(
                Route(
                    always=always,
                    whens=whens,
                    branches=tuple(branches.items()),
                    targets=tuple(index[e.target] for e in edges),
                )
            )
        return tuple(routes)

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
            if node.map:
                h.update(f"m\0{node.name}\n".encode())
        for (source, target), edge in self._edges.items():
            h.update(f"e\0{source}\0{target}\n".encode())
            if edge is not None:  # a plain DAG's fingerprint is as it always was
                h.update(f"c\0{edge.label}\0{edge.branch is not None}\n".encode())
        return h.hexdigest()[:16]

    def to_mermaid(self, direction: str = "TD") -> str:
        """The graph as a Mermaid ``flowchart`` (for any Markdown that renders Mermaid)."""
        if direction not in {"TD", "TB", "BT", "LR", "RL"}:
            raise ConfigurationError(
                f"unknown Mermaid direction {direction!r}", parameter="direction"
            )
        ids = {name: f"n{i}" for i, name in enumerate(self._nodes)}
        lines = [f"flowchart {direction}"]
        for name, node in self._nodes.items():  # a map node is drawn as a subroutine: [[...]]
            label = _mermaid_label(name)
            shape = f'[["{label}"]]' if node.map else f'["{label}"]'
            lines.append(f"    {ids[name]}{shape}")
        for (s, t), edge in self._edges.items():
            if s not in ids or t not in ids:
                continue
            if edge is not None:  # dashed, labelled with the condition's name
                lines.append(f'    {ids[s]} -. "{_mermaid_label(edge.label)}" .-> {ids[t]}')
            else:
                lines.append(f"    {ids[s]} --> {ids[t]}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """The graph in Graphviz DOT."""
        lines = [f"digraph {_dot_id(self.name)} {{", "    rankdir=TB;"]
        lines += [
            f"    {_dot_id(n)}{' [peripheries=2]' if node.map else ''};"
            for n, node in self._nodes.items()
        ]
        for (s, t), edge in self._edges.items():
            style = "" if edge is None else f" [style=dashed, label={_dot_id(edge.label)}]"
            lines.append(f"    {_dot_id(s)} -> {_dot_id(t)}{style};")
        return "\n".join([*lines, "}"]) + "\n"


def _mermaid_label(text: str) -> str:
    return "".join({'"': "#quot;", "<": "#lt;", ">": "#gt;"}.get(ch, ch) for ch in text)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reaches(succs: Mapping[int, Sequence[int]], start: int, goal: int) -> bool:
    seen, stack = {start}, [start]
    while stack:
        i = stack.pop()
        if i == goal:
            return True
        for j in succs.get(i, ()):
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return False


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
