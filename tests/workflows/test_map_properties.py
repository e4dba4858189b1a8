"""Map nodes, property-based: random routed DAGs with maps, the shared bound, maps in loops.

Random DAGs (drawn by ``test_control_flow_properties.dags``) in which some
nodes are maps, whose list comes from a predecessor, the workflow input or a
task callable, run with conditional edges, branches, failing nodes and flaky
or failing items, and are compared with a reference model written here. The
model is deliberately naive; it shares no code with ``_map.py`` or
``_frontier.py``. Every run goes through the hang watchdog of
``test_control_flow_properties``: agents only yield or wait on events.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_control_flow_properties import ALWAYS, UPSTREAM_FAILED, Dag, dags, watched

import heddle
from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.messaging.events import Event, EventType
from heddle.workflows import NodeStatus, RunObserver, RunStatus, WorkflowResult

NO_RETRY = RetryPolicy(max_attempts=1)
TWO_TRIES = RetryPolicy(max_attempts=2, initial_delay=0.0)
#: Items of one map share one agent: a breaker opening after a few failed items would
#: fail the next ones without a call, which is not what these tests are about.
NEVER_OPENS = 10**9
MAP_ERROR = "heddle.core.errors.MapError"
TASK_BUILD_ERROR = "heddle.core.errors.TaskBuildError"
NOT_A_LIST = "MapError: map node {!r}: its task must be a list (one activation per item), got {}"

SUCCEEDED, FAILED, SKIPPED = NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED

#: Where a map node's task comes from: its inputs (a predecessor's content, several
#: predecessors' dict, or the workflow input), a task callable, or a task callable that raises.
INPUTS, CALLABLE, RAISES = "inputs", "callable", "raises"
NOT_LISTS: tuple[object, ...] = (None, "text", {"a": 1}, ("t",), 3)


def execute(
    graph: WorkflowGraph,
    max_concurrent: int,
    workflow_input: Any = None,
    observers: Sequence[RunObserver] = (),
) -> WorkflowResult:
    """Run ``graph`` on a fresh loop under the hang watchdog; no retries but a node's own."""

    async def main() -> WorkflowResult:
        async with WorkflowExecutor(
            max_concurrent,
            retry=NO_RETRY,
            circuit_breaker_threshold=NEVER_OPENS,
            observers=observers,
        ) as executor:
            return await watched(executor.execute(graph, input=workflow_input))

    return asyncio.run(main())


def words(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.{k}" for k in range(count)]


@dataclass
class Probe:
    """What the agents and conditions saw, and how many agent calls ran at once at most."""

    calls: dict[str, list[Any]] = field(default_factory=dict)  # plain node -> (task, item)
    items: dict[tuple[str, int], list[Any]] = field(default_factory=dict)  # (attempt, it, x)
    routed: dict[str, list[Any]] = field(default_factory=dict)  # the contents conditions saw
    events: list[tuple[str, str, int | None, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0

    async def on_event(self, event: Event) -> None:
        """Keep each node event as ``(type, node, item, items)``: a RunObserver."""
        payload = event.payload
        if "node" in payload:
            kind, node = str(event.event_type), payload["node"]
            self.events.append((kind, node, payload.get("item"), payload.get("items")))

    def ends(self, node: str) -> Counter[tuple[str, int | None]]:
        """The end events of ``node`` and of its items, ``(type, item)``, counted."""
        kinds = {EventType.NODE_SUCCEEDED, EventType.NODE_FAILED, EventType.NODE_SKIPPED}
        found = [(kind, item) for kind, name, item, _ in self.events if name == node]
        return Counter((kind, item) for kind, item in found if kind in kinds)

    def count(self, kind: str, node: str, item: int | None) -> int:
        return sum(e[:3] == (kind, node, item) for e in self.events)

    def enter(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    async def busy(self, turns: int) -> None:
        """Count this call as in flight while yielding to the loop ``turns`` times."""
        self.enter()
        try:
            for _ in range(turns):
                await asyncio.sleep(0)
        finally:
            self.leave()

    def item_calls(self, node: str) -> dict[int, list[Any]]:
        return {k: calls for (name, k), calls in self.items.items() if name == node}


# --- random graphs with maps, and their model ----------------------------------------------


@dataclass(frozen=True)
class MapDag:
    """A random routed :class:`Dag` some of whose nodes are maps.

    A plain node ``i`` returns ``words(name, lengths[i])`` (or raises if it is
    in ``dag.failing``); map node ``i`` gets its list as ``sources[i]`` says
    (``made[i]`` is what its task callable returns), its item ``k`` fails its
    first ``flaky[i][k]`` attempts, of ``tries[i]`` allowed, and returns
    ``f"{x}>{name}"`` for its value ``x``.
    """

    dag: Dag
    maps: frozenset[int]
    lengths: dict[int, int]
    sources: dict[int, str]
    made: dict[int, object]
    flaky: dict[int, dict[int, int]]
    tries: dict[int, int]
    workflow_input: list[str]

    @property
    def names(self) -> tuple[str, ...]:
        return self.dag.names

    def fails(self, i: int) -> bool:
        """Whether plain node ``i``'s agent raises."""
        return i in self.dag.failing and i not in self.maps

    def item_end(self, i: int, k: int) -> tuple[NodeStatus, int]:
        """How item ``k`` of map node ``i`` ends, and after how many attempts."""
        failures, tries = self.flaky[i].get(k, 0), self.tries[i]
        return (SUCCEEDED if failures < tries else FAILED), min(failures + 1, tries)

    def routes(self, i: int) -> bool:
        """Whether node ``i`` has conditional out-edges (its conditions see its content)."""
        return any(s == i and kind != ALWAYS for (s, _), kind in self.dag.kinds.items())

    def build(self, probe: Probe, pauses: dict[int, int]) -> WorkflowGraph:
        g = WorkflowGraph("random-maps")
        for i, name in enumerate(self.names):
            if i in self.maps:
                retry = RetryPolicy(max_attempts=self.tries[i], initial_delay=0.0)
                g.add_map(
                    name, self.item_agent(i, probe, pauses), task=self.task_of(i), retry=retry
                )
            else:
                g.add_node(name, self.plain_agent(i, probe, pauses))
        for op in self.dag.ops:
            source = self.names[op[1]]
            if op[0] == "branch":
                choice = self.dag.choices[op[1]]
                chooser = recording(probe, source, choice)
                g.add_branch(source, chooser, [self.names[t] for t in op[2]])
                continue
            s, t = op[1], op[2]
            kind = self.dag.kinds[(s, t)]
            answer = self.dag.flags.get((s, t), True)
            when = None if kind == ALWAYS else recording(probe, source, answer)
            g.add_edge(source, self.names[t], when=when)
        return g

    def task_of(self, i: int) -> object:
        source = self.sources[i]
        if source == INPUTS:
            return None
        if source == RAISES:

            def broken(ctx: Any) -> Any:
                raise LookupError(f"{self.names[i]}'s task was drawn to fail")

            return broken
        made = self.made[i]
        return lambda ctx: list(made) if isinstance(made, list) else made

    def plain_agent(self, i: int, probe: Probe, pauses: dict[int, int]) -> Any:
        name, turns = self.names[i], pauses.get(i, 0)
        probe.calls[name] = []

        async def agent(task: Any) -> Any:
            probe.calls[name].append((task, heddle.current().item))
            await probe.busy(turns)
            if self.fails(i):
                raise ValueError(f"{name} was drawn to fail")
            return words(name, self.lengths[i])

        agent.__qualname__ = f"agent_{name}"  # one agent per node, as in a real graph
        return agent

    def item_agent(self, i: int, probe: Probe, pauses: dict[int, int]) -> Any:
        name, turns, flaky = self.names[i], pauses.get(i, 0), self.flaky[i]

        async def each(x: Any) -> str:
            ctx = heddle.current()
            k = ctx.item
            assert k is not None and ctx.node == name
            calls = probe.items.setdefault((name, k), [])
            calls.append((ctx.attempt, ctx.iteration, x))
            await probe.busy(turns)
            if len(calls) <= flaky.get(k, 0):
                raise ValueError(f"{name}[{k}] attempt {len(calls)} was drawn to fail")
            return f"{x}>{name}"

        each.__qualname__ = f"each_{name}"
        return each


def recording(probe: Probe, source: str, answer: object) -> Callable[[Any], object]:
    """A condition (``when`` or a chooser) that notes the content it saw and gives ``answer``."""

    def condition(content: Any) -> object:
        probe.routed.setdefault(source, []).append(content)
        return answer

    return condition


@st.composite
def map_dags(draw: st.DrawFn) -> MapDag:
    dag = draw(dags(max_nodes=10))
    n = len(dag.names)
    maps = draw(st.frozensets(st.integers(0, n - 1)))
    lengths = {i: draw(st.integers(0, 6)) for i in range(n) if i not in maps}
    sources = {i: draw(st.sampled_from([INPUTS, INPUTS, CALLABLE, CALLABLE, RAISES])) for i in maps}
    made = {
        i: draw(
            st.one_of(
                st.integers(0, 6).map(functools.partial(words, f"c{i}")), st.sampled_from(NOT_LISTS)
            )
        )
        for i in maps
        if sources[i] == CALLABLE
    }
    flaky = {
        i: draw(st.dictionaries(st.integers(0, 5), st.integers(1, 3), max_size=3)) for i in maps
    }
    tries = {i: draw(st.integers(1, 3)) for i in maps}
    workflow_input = words("in", draw(st.integers(0, 6)))
    return MapDag(dag, maps, lengths, sources, made, flaky, tries, workflow_input)


@dataclass(frozen=True)
class Verdict:
    """The model's verdict for every node of a :class:`MapDag`."""

    status: dict[str, NodeStatus]
    not_taken: frozenset[str]  # skipped because no incoming edge was taken
    culprits: dict[str, frozenset[str]]  # per upstream-failed skip: the failed nodes above it
    task: dict[str, Any]  # per node that started: its task (a map's list, or what it got)
    content: dict[str, Any]  # per plain success and per map that got a list
    items: dict[str, list[tuple[NodeStatus, int]]]  # per map that got a list: its items' ends
    taken: dict[str, list[str]]  # per succeeded node with conditional out-edges


def expect(mdag: MapDag) -> Verdict:
    """The reference model: walk the nodes in index order (a topological order)."""
    dag, names = mdag.dag, mdag.names
    edges = dag.edge_order()
    status: dict[int, NodeStatus] = {}
    failed_above: dict[int, frozenset[int]] = {}
    not_taken: set[str] = set()
    culprits: dict[str, frozenset[str]] = {}
    task: dict[str, Any] = {}
    content: dict[str, Any] = {}
    items: dict[str, list[tuple[NodeStatus, int]]] = {}
    taken: dict[str, list[str]] = {}

    for i, name in enumerate(names):
        preds = [s for s, t in edges if t == i]
        above: set[int] = set()
        for p in preds:
            above |= failed_above[p]
            if status[p] == FAILED:
                above.add(p)
        failed_above[i] = frozenset(above)
        arrived = [p for p in preds if status[p] == SUCCEEDED and dag.condition(p, i)]
        if above:
            status[i] = SKIPPED
            culprits[name] = frozenset(names[p] for p in above)
            continue
        if preds and not arrived:
            status[i] = SKIPPED
            not_taken.add(name)
            continue
        if not preds:
            got: Any = mdag.workflow_input
        elif len(arrived) == 1:
            got = content[names[arrived[0]]]
        else:
            got = {names[p]: content[names[p]] for p in arrived}
        status[i] = FAILED  # until it is shown to succeed
        if i in mdag.maps:
            if mdag.sources[i] == RAISES:
                continue
            if mdag.sources[i] == CALLABLE:
                got = mdag.made[i]
            task[name] = got
            if not isinstance(got, list):
                continue
            ends = items[name] = [mdag.item_end(i, k) for k in range(len(got))]
            content[name] = [
                f"{x}>{name}" if end == SUCCEEDED else None
                for x, (end, _) in zip(got, ends, strict=True)
            ]
            if any(end == FAILED for end, _ in ends):
                continue
        else:
            task[name] = got
            if mdag.fails(i):
                continue
            content[name] = words(name, mdag.lengths[i])
        status[i] = SUCCEEDED
        if mdag.routes(i):
            taken[name] = [names[t] for s, t in edges if s == i and dag.condition(i, t)]
    return Verdict(
        status={names[i]: s for i, s in status.items()},
        not_taken=frozenset(not_taken),
        culprits=culprits,
        task=task,
        content=content,
        items=items,
        taken=taken,
    )


def assert_matches_model(mdag: MapDag, result: WorkflowResult, probe: Probe) -> None:
    """Every node ended once, as the model says; every item ran once per attempt, if at all."""
    model = expect(mdag)
    assert list(result.results) == list(mdag.names)
    for i, name in enumerate(mdag.names):
        got = result.results[name]
        assert len(result.iterations(name)) == 1 and got["iteration"] == 0, name
        assert got["status"] == model.status[name], (name, got["error"])
        items = probe.item_calls(name)
        ends = [(f"node.{end}", k) for k, (end, _) in enumerate(model.items.get(name, []))]
        assert probe.ends(name) == Counter([(f"node.{got['status']}", None), *ends]), name
        if got["status"] == SKIPPED:
            assert probe.calls.get(name, []) == [] and items == {}, name
            assert got["attempts"] == 0 and got["content"] is None, name
            error = str(got["error"])
            if name in model.not_taken:
                assert error.startswith("not taken:"), (name, error)
            else:
                match = UPSTREAM_FAILED.fullmatch(error)
                assert match is not None and match[1] in model.culprits[name], (name, error)
            continue
        if i in mdag.maps:
            assert_map_matches(name, got, probe, model)
        else:
            task = model.task[name]
            assert probe.calls[name] == [(task, None)], name
            if isinstance(task, dict):
                assert list(probe.calls[name][0][0]) == list(task), "edge order"
            assert got["attempts"] == 1, name
            if mdag.fails(i):
                assert got["error"] == f"ValueError: {name} was drawn to fail"
            else:
                assert got["content"] == model.content[name], name
        if got["status"] == FAILED:
            assert "taken" not in got and name not in probe.routed, name
            continue
        assert got.get("taken") == model.taken.get(name), name
        seen = probe.routed.get(name, [])
        assert bool(seen) == mdag.routes(i), name
        assert all(content == model.content[name] for content in seen), name
    failed = FAILED in model.status.values()
    assert result.status == (RunStatus.FAILED if failed else RunStatus.SUCCEEDED)
    assert result.ok is not failed


def assert_map_matches(name: str, got: Any, probe: Probe, model: Verdict) -> None:
    """A map node that started: its items, content, attempts and error agree with the model."""
    items = probe.item_calls(name)
    if name not in model.items:  # its task could not be built, or was not a list
        assert items == {}, name
        assert got["content"] is None and got["attempts"] == 0 and "items" not in got, name
        if name in model.task:
            assert got["error_type"] == MAP_ERROR, (name, got["error"])
            assert got["error"] == NOT_A_LIST.format(name, type(model.task[name]).__name__)
        else:
            assert got["error_type"] == TASK_BUILD_ERROR, (name, got["error"])
        return
    task, ends = model.task[name], model.items[name]
    assert sorted(items) == list(range(len(ends))), name
    for k, (_, attempts) in enumerate(ends):
        assert items[k] == [(a, 0, task[k]) for a in range(1, attempts + 1)], (name, k)
        assert probe.count(EventType.NODE_STARTED, name, k) == attempts, (name, k)
        assert probe.count(EventType.NODE_RETRYING, name, k) == attempts - 1, (name, k)
    started = [e for e in probe.events if e[:3] == (EventType.NODE_STARTED, name, None)]
    assert started == [(EventType.NODE_STARTED, name, None, len(ends))], name
    summary = got["items"]
    assert [(e["status"], e["attempts"]) for e in summary] == ends, name
    assert got["content"] == model.content[name], name
    assert got["attempts"] == sum(attempts for _, attempts in ends), name
    failed = [k for k, (end, _) in enumerate(ends) if end == FAILED]
    for k in failed:
        attempts = ends[k][1]
        assert (
            summary[k]["error"] == f"ValueError: {name}[{k}] attempt {attempts} was drawn to fail"
        )
    if failed:
        assert got["error_type"] == MAP_ERROR, name
        assert f"{len(failed)} of {len(ends)} items failed" in str(got["error"]), got["error"]
    else:
        assert got["error"] is None, name


# --- 1. random DAGs with maps -------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    mdag=map_dags(),
    max_concurrent=st.integers(1, 4),
    pauses=st.dictionaries(st.integers(0, 9), st.integers(0, 3)),
)
def test_random_dags_with_maps_end_as_the_model_says(
    mdag: MapDag, max_concurrent: int, pauses: dict[int, int]
) -> None:
    """Statuses, items, contents, routes and the run status agree with the model, in the bound."""
    probe = Probe()
    result = execute(mdag.build(probe, pauses), max_concurrent, mdag.workflow_input, [probe])
    assert probe.peak <= max_concurrent and probe.in_flight == 0
    assert_matches_model(mdag, result, probe)


def test_the_model_agrees_on_a_hand_made_graph_with_maps() -> None:
    """The model itself: a map fed by a node, one given two inputs, a flaky and a failing item."""
    # n0 -> n1 (a map of n0's 3 words; item 1 fails once, item 2 for good) -> n3;
    # n0 -> n2 (a map of its callable's list); n0, n2 -> n4 (a map given two inputs).
    dag = Dag(
        names=("n0", "n1", "n2", "n3", "n4"),
        kinds={(0, 1): ALWAYS, (0, 2): ALWAYS, (1, 3): ALWAYS, (0, 4): ALWAYS, (2, 4): ALWAYS},
        flags={},
        choices={},
        ops=(("edge", 0, 1), ("edge", 0, 2), ("edge", 1, 3), ("edge", 0, 4), ("edge", 2, 4)),
        failing=frozenset(),
    )
    mdag = MapDag(
        dag,
        maps=frozenset({1, 2, 4}),
        lengths={0: 3, 3: 1},
        sources={1: INPUTS, 2: CALLABLE, 4: INPUTS},
        made={2: ["x"]},
        flaky={1: {1: 1, 2: 5}, 2: {}, 4: {}},
        tries={1: 2, 2: 1, 4: 1},
        workflow_input=[],
    )
    model = expect(mdag)
    assert model.status == {
        "n0": SUCCEEDED,
        "n1": FAILED,
        "n2": SUCCEEDED,
        "n3": SKIPPED,
        "n4": FAILED,  # two inputs: its task is a dict, not a list
    }
    assert model.items["n1"] == [(SUCCEEDED, 1), (SUCCEEDED, 2), (FAILED, 2)]
    assert model.content["n1"] == ["n0.0>n1", "n0.1>n1", None]
    assert model.content["n2"] == ["x>n2"]
    assert model.task["n4"] == {"n0": ["n0.0", "n0.1", "n0.2"], "n2": ["x>n2"]}
    assert model.culprits == {"n3": frozenset({"n1"})}
    probe = Probe()
    result = execute(mdag.build(probe, {}), 2, mdag.workflow_input, [probe])
    assert_matches_model(mdag, result, probe)


# --- 2. the concurrency bound --------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    widths=st.lists(st.integers(0, 8), min_size=1, max_size=3),
    from_root=st.lists(st.booleans(), min_size=3, max_size=3),
    sides=st.integers(0, 3),
    routed=st.booleans(),
    max_concurrent=st.integers(1, 5),
)
def test_items_and_nodes_share_one_bound_and_reach_it(
    widths: list[int], from_root: list[bool], sides: int, routed: bool, max_concurrent: int
) -> None:
    """Maps beside other branches run at most max_concurrent calls at once, and reach that."""
    target = min(sum(widths) + sides, max_concurrent)
    gate = asyncio.Event()
    probe = Probe()

    async def leaf(task: Any) -> Any:
        probe.enter()
        try:
            if probe.in_flight == target:
                gate.set()
            await gate.wait()  # opens only once `target` calls are in flight together
            for _ in range(3):  # and stay a while: a call too many would overlap them
                await asyncio.sleep(0)
        finally:
            probe.leave()
        return task

    async def root(task: Any) -> list[int]:
        return list(range(8))

    async def total(task: Any) -> int:  # one map's list, or several maps' by name
        return sum(map(len, task.values() if isinstance(task, dict) else [task]))

    def when(content: Any) -> bool:
        return True

    g = WorkflowGraph("bound").add_node("root", root).add_node("total", total)
    feeds: list[str] = []
    for j, width in enumerate(widths):
        name = f"map{j}"
        if from_root[j]:
            g.add_map(name, leaf, task=lambda ctx, w=width: ctx.content("root")[:w])
            feeds.append(name)
        else:
            g.add_map(name, leaf, task=lambda ctx, w=width: list(range(w)))
        g.add_edge(name, "total")
    for j in range(sides):
        g.add_node(f"side{j}", leaf)
        feeds.append(f"side{j}")
    for name in feeds:
        g.add_edge("root", name, when=when if routed else None)

    result = execute(g, max_concurrent)
    assert result.ok, {n: r["error"] for n, r in result.results.items()}
    assert probe.peak == target and probe.in_flight == 0
    for j, width in enumerate(widths):
        assert result.content(f"map{j}") == list(range(width))
    assert result.content("total") == sum(widths)


# --- 3. maps inside bounded loops ----------------------------------------------------------


@dataclass(frozen=True)
class MapLoop:
    """``start? -> plan? -> each (a map) -> check? -(again, max bound)-> head``, then ``after``.

    ``head`` is ``plan`` (a plain node making round r's list, which ``each``
    gets) or ``each`` itself (its task callable makes the list of the round it
    reads from ``heddle.current().iteration``). The loop is closed by
    ``check`` (a plain node saying "again" on its first ``wanted - 1`` calls)
    or by ``each`` itself, whose conditions count their calls. Round r maps
    ``lengths[r]`` items, each allowed two attempts; in the rounds of ``flaky``
    item 0 fails its first attempt, and in round ``fail_at`` the last item
    fails both.
    """

    head: str
    closer: str
    with_start: bool
    bound: int
    wanted: int
    lengths: tuple[int, ...]
    fail_at: int | None
    flaky: frozenset[int]
    as_branch: bool

    @property
    def chain(self) -> list[str]:
        return [
            *(["start"] if self.with_start else []),
            *(["plan"] if self.head == "plan" else []),
            "each",
            *(["check"] if self.closer == "check" else []),
            "after",
        ]

    def fails(self, r: int, k: int, attempt: int = 2) -> bool:
        """Whether attempt ``attempt`` of item ``k`` in round ``r`` fails."""
        if r == self.fail_at and k == self.lengths[r] - 1:
            return True
        return r in self.flaky and k == 0 and attempt == 1

    def attempts(self, r: int, k: int) -> int:
        return 1 if not self.fails(r, k, 1) else 2

    def build(self, calls: dict[str, list[Any]], probe: Probe) -> WorkflowGraph:
        for name in [*self.chain, "again", "done"]:
            calls[name] = []

        def round_list() -> list[str]:
            r = heddle.current().iteration
            return words(f"r{r}", self.lengths[r])

        async def start(task: Any) -> str:
            calls["start"].append(task)
            return "start"

        async def plan(task: Any) -> list[str]:
            calls["plan"].append(task)
            await asyncio.sleep(0)
            return round_list()

        async def each(x: str) -> str:
            ctx = heddle.current()
            assert ctx.item is not None
            calls["each"].append((ctx.iteration, ctx.item, ctx.attempt, x))
            await probe.busy(2)
            if self.fails(ctx.iteration, ctx.item, ctx.attempt):
                raise ValueError(f"item {ctx.item} of round {ctx.iteration} was drawn to fail")
            return f"{x}!"

        async def check(task: Any) -> dict[str, Any]:
            calls["check"].append(task)
            return {"again": len(calls["check"]) < self.wanted}

        async def after(task: Any) -> str:
            calls["after"].append(task)
            return "after"

        agents = {"start": start, "plan": plan, "check": check, "after": after}
        g = WorkflowGraph("map-loop")
        for name in self.chain:
            if name == "each":
                task = (lambda ctx: round_list()) if self.head == "each" else None
                g.add_map("each", each, task=task, retry=TWO_TRIES)
            else:
                g.add_node(name, agents[name])
        closer, head = self.closer, self.head
        for a, b in itertools.pairwise(self.chain):
            if (a, b) != (closer, "after"):
                g.add_edge(a, b)

        def again(content: Any) -> bool:
            calls["again"].append(content)
            if closer == "check":
                return bool(content["again"])
            return len(calls["again"]) < self.wanted

        def done(content: Any) -> bool:
            calls["done"].append(content)
            if closer == "check":
                return not content["again"]
            return len(calls["done"]) >= self.wanted

        if self.as_branch:

            def route(content: Any) -> str:
                return head if again(content) else "after"

            g.add_branch(closer, route, [head, "after"], max_iterations=self.bound)
        else:
            g.add_edge(closer, head, when=again, max_iterations=self.bound)
            g.add_edge(closer, "after", when=done)
        return g


@st.composite
def map_loops(draw: st.DrawFn) -> MapLoop:
    head = draw(st.sampled_from(["plan", "each"]))
    closer = draw(st.sampled_from(["check", "each"])) if head == "plan" else "check"
    return MapLoop(
        head=head,
        closer=closer,
        with_start=draw(st.booleans()),
        bound=draw(st.integers(1, 4)),
        wanted=draw(st.integers(1, 5)),
        lengths=tuple(draw(st.lists(st.integers(0, 4), min_size=4, max_size=4))),
        fail_at=draw(st.none() | st.integers(0, 3)),
        flaky=draw(st.frozensets(st.integers(0, 3))),
        as_branch=draw(st.booleans()),
    )


@settings(max_examples=100, deadline=None)
@given(spec=map_loops(), max_concurrent=st.integers(1, 3))
def test_a_map_in_a_loop_runs_its_items_once_per_iteration(
    spec: MapLoop, max_concurrent: int
) -> None:
    """Each round maps its own list once per item; iterations() has one result per round."""
    calls: dict[str, list[Any]] = {}
    probe = Probe()
    result = execute(spec.build(calls, probe), max_concurrent)
    assert probe.peak <= max_concurrent and probe.in_flight == 0
    planned = min(spec.wanted, spec.bound)
    failing = spec.fail_at is not None and spec.fail_at < planned and spec.lengths[spec.fail_at] > 0
    rounds = spec.fail_at + 1 if failing and spec.fail_at is not None else planned
    lists = [words(f"r{r}", spec.lengths[r]) for r in range(rounds)]

    expected_calls = [
        (r, k, attempt, x)
        for r in range(rounds)
        for k, x in enumerate(lists[r])
        for attempt in range(1, spec.attempts(r, k) + 1)
    ]
    assert sorted(calls["each"]) == expected_calls  # each item of each round, once per attempt
    runs = result.iterations("each")
    assert [run["iteration"] for run in runs] == list(range(rounds))
    for r, run in enumerate(runs):
        content = [None if spec.fails(r, k) else f"{x}!" for k, x in enumerate(lists[r])]
        assert run["content"] == content, r
        assert [e["attempts"] for e in run["items"]] == [
            spec.attempts(r, k) for k in range(len(lists[r]))
        ], r
        assert run["status"] == (FAILED if None in content else SUCCEEDED), r
    assert result.results["each"] == runs[-1]
    if spec.head == "plan":
        assert len(calls["plan"]) == rounds
        assert [run["iteration"] for run in result.iterations("plan")] == list(range(rounds))
    closing = rounds - 1 if failing else rounds  # the rounds whose closer ran
    if spec.closer == "check":
        checks = result.iterations("check")
        assert len(calls["check"]) == closing
        assert [run["iteration"] for run in checks] == list(range(rounds))
        assert [run["status"] for run in checks] == [SUCCEEDED] * closing + [SKIPPED] * (
            rounds - closing
        )
    else:
        assert calls["again"] == [run["content"] for run in runs[:closing]]
    assert len(calls["again"]) == closing
    after = result.iterations("after")
    assert len(after) == 1 and after[0]["iteration"] == 0
    if failing:
        assert result.status == RunStatus.FAILED
        assert after[0]["error"] == "upstream node 'each' failed"
        assert calls["after"] == []
    elif spec.wanted <= spec.bound:
        assert result.status == RunStatus.SUCCEEDED
        assert after[0]["status"] == SUCCEEDED and len(calls["after"]) == 1
    else:
        assert result.status == RunStatus.SUCCEEDED
        assert str(after[0]["error"]).startswith("not taken:") and calls["after"] == []
