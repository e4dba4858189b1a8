"""Control flow, property-based: routing, skips, the concurrency bound and loops.

Random DAGs whose edges are plain, ``when`` conditions or branches, with
random agents failing, are run by the executor and compared with a reference
model written here: a walk in topological order over the rules of DESIGN.md
("Control flow semantics"). The model is deliberately naive; it shares no
code with ``_frontier.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.workflows import NodeStatus, RunStatus, WorkflowResult

NO_RETRY = RetryPolicy(max_attempts=1)
INPUT = {"workflow": "input"}
UPSTREAM_FAILED = re.compile(r"upstream node '(\w+)' failed")
#: Turns of the event loop after which a run counts as hung. Every agent here only
#: yields (``sleep(0)``) or waits on an event other agents set: a run still pending
#: after this many turns is stuck, not slow (a passing run needs far fewer).
HUNG_AFTER_TURNS = 10_000

ALWAYS, WHEN, BRANCH = "always", "when", "branch"

# --- random graphs and their model --------------------------------------------------------


@dataclass(frozen=True)
class Dag:
    """A random DAG: node ``i`` is ``names[i]``, every edge goes from a lower index to a higher.

    ``kinds[(s, t)]`` says how edge ``s -> t`` is added; ``flags`` holds the
    answer of each ``when`` edge, ``choices`` what each branching node's
    chooser returns; ``ops`` the order the edges are added in, ``("edge", s,
    t)`` or ``("branch", s, targets)``; ``failing`` the nodes whose agent raises.
    """

    names: tuple[str, ...]
    kinds: dict[tuple[int, int], str]
    flags: dict[tuple[int, int], bool]
    choices: dict[int, object]
    ops: tuple[tuple[Any, ...], ...]
    failing: frozenset[int]

    def content(self, i: int) -> dict[str, Any]:
        """What node ``i``'s agent returns: its edges' answers travel with it."""
        flags = {self.names[t]: ok for (s, t), ok in self.flags.items() if s == i}
        return {"node": self.names[i], "flags": flags, "choice": self.choices.get(i)}

    def edge_order(self) -> list[tuple[int, int]]:
        """Every edge, in the order it was added to the graph."""
        out: list[tuple[int, int]] = []
        for op in self.ops:
            if op[0] == "edge":
                out.append((op[1], op[2]))
            else:
                out.extend((op[1], t) for t in op[2])
        return out

    def condition(self, s: int, t: int) -> bool:
        """Whether edge ``s -> t`` is taken once ``s`` has succeeded."""
        kind = self.kinds[(s, t)]
        if kind == ALWAYS:
            return True
        if kind == WHEN:
            return self.flags[(s, t)]
        choice = self.choices[s]
        chosen = [] if choice is None else [choice] if isinstance(choice, str) else choice
        assert isinstance(chosen, list)
        return self.names[t] in chosen

    def build(self, agent_for: Callable[[int], Any]) -> WorkflowGraph:
        g = WorkflowGraph("random-dag")
        for i, name in enumerate(self.names):
            g.add_node(name, agent_for(i))
        for op in self.ops:
            if op[0] == "branch":
                g.add_branch(self.names[op[1]], choose, [self.names[t] for t in op[2]])
                continue
            s, t = op[1], op[2]
            when = flag(self.names[t]) if self.kinds[(s, t)] == WHEN else None
            g.add_edge(self.names[s], self.names[t], when=when)
        return g


def flag(target: str) -> Callable[[Any], bool]:
    """A ``when`` condition reading the source's answer for the edge to ``target``."""

    def when(content: Any) -> bool:
        return bool(content["flags"][target])

    return when


def choose(content: Any) -> object:
    return content["choice"]


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 12) -> Dag:
    n = draw(st.integers(1, max_nodes))
    names = tuple(f"n{i}" for i in range(n))
    kinds: dict[tuple[int, int], str] = {}
    for t in range(1, n):
        for s in sorted(draw(st.sets(st.integers(0, t - 1), max_size=3))):
            kinds[(s, t)] = draw(st.sampled_from([ALWAYS, WHEN, BRANCH]))
    flags = {edge: draw(st.booleans()) for edge, kind in kinds.items() if kind == WHEN}
    ops: list[tuple[Any, ...]] = [("edge", s, t) for (s, t), k in kinds.items() if k != BRANCH]
    choices: dict[int, object] = {}
    for s in range(n):
        targets = [t for (s2, t), k in kinds.items() if s2 == s and k == BRANCH]
        if not targets:
            continue
        targets = draw(st.permutations(targets))
        labels = [names[t] for t in targets]
        choices[s] = draw(
            st.one_of(
                st.none(),
                st.sampled_from(labels),
                st.lists(st.sampled_from(labels), unique=True),
            )
        )
        ops.append(("branch", s, tuple(targets)))
    order = draw(st.permutations(ops))
    failing = draw(st.frozensets(st.integers(0, n - 1)))
    return Dag(names, kinds, flags, choices, tuple(order), failing)


@dataclass(frozen=True)
class Expected:
    """The model's verdict for every node of a :class:`Dag`."""

    status: dict[str, NodeStatus]
    not_taken: frozenset[str]  # skipped because no incoming edge was taken
    culprits: dict[str, frozenset[str]]  # per upstream-failed skip: the failed nodes above it
    task: dict[str, Any]  # per node that ran
    taken: dict[str, list[str]]  # per succeeded node with conditional out-edges


def expect(dag: Dag, workflow_input: Any) -> Expected:
    """The reference model: walk the nodes in index order (a topological order)."""
    names = dag.names
    edges = dag.edge_order()
    status: dict[int, NodeStatus] = {}
    failed_above: dict[int, frozenset[int]] = {}
    not_taken: set[str] = set()
    culprits: dict[str, frozenset[str]] = {}
    task: dict[str, Any] = {}
    taken: dict[str, list[str]] = {}

    def delivered(s: int, t: int) -> bool:
        return status[s] == NodeStatus.SUCCEEDED and dag.condition(s, t)

    for i, name in enumerate(names):
        preds = [s for s, t in edges if t == i]
        above: set[int] = set()
        for p in preds:
            above |= failed_above[p]
            if status[p] == NodeStatus.FAILED:
                above.add(p)
        failed_above[i] = frozenset(above)
        arrived = [p for p in preds if delivered(p, i)]
        if above:
            status[i] = NodeStatus.SKIPPED
            culprits[name] = frozenset(names[p] for p in above)
            continue
        if preds and not arrived:
            status[i] = NodeStatus.SKIPPED
            not_taken.add(name)
            continue
        if not preds:
            task[name] = workflow_input
        elif len(arrived) == 1:
            task[name] = dag.content(arrived[0])
        else:
            task[name] = {names[p]: dag.content(p) for p in arrived}
        if i in dag.failing:
            status[i] = NodeStatus.FAILED
            continue
        status[i] = NodeStatus.SUCCEEDED
        out = [t for s, t in edges if s == i]
        if any(dag.kinds[(i, t)] != ALWAYS for t in out):
            taken[name] = [names[t] for t in out if dag.condition(i, t)]
    return Expected(
        status={names[i]: s for i, s in status.items()},
        not_taken=frozenset(not_taken),
        culprits=culprits,
        task=task,
        taken=taken,
    )


# --- running ---------------------------------------------------------------------------------


def execute(
    graph: WorkflowGraph, max_concurrent: int, workflow_input: Any = INPUT
) -> WorkflowResult:
    """Run ``graph`` on a fresh loop; fail (rather than hang) if the run stops moving."""

    async def main() -> WorkflowResult:
        async with WorkflowExecutor(max_concurrent, retry=NO_RETRY) as executor:
            return await watched(executor.execute(graph, input=workflow_input))

    return asyncio.run(main())


class RunHung(AssertionError):
    """A run that stopped making progress without ending."""


async def watched(run: Coroutine[Any, Any, WorkflowResult]) -> WorkflowResult:
    task = asyncio.ensure_future(run)
    for _ in range(HUNG_AFTER_TURNS):
        if task.done():
            return task.result()
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise RunHung(f"the run hung: still pending after {HUNG_AFTER_TURNS} loop turns")


@dataclass
class Probe:
    """What the agents saw: their tasks, and how many of them ran at once at most."""

    calls: dict[str, list[Any]]
    in_flight: int = 0
    peak: int = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1


def run_dag(
    dag: Dag, max_concurrent: int = 4, pauses: dict[int, int] | None = None
) -> tuple[WorkflowResult, Probe]:
    """Execute ``dag``; each agent yields to the loop ``pauses[i]`` times while counted."""
    probe = Probe({name: [] for name in dag.names})

    def agent_for(i: int) -> Any:
        name = dag.names[i]
        turns = (pauses or {}).get(i, 0)

        async def agent(task: Any) -> Any:
            probe.calls[name].append(task)
            probe.enter()
            try:
                for _ in range(turns):
                    await asyncio.sleep(0)
            finally:
                probe.leave()
            if i in dag.failing:
                raise ValueError(f"{name} was drawn to fail")
            return dag.content(i)

        # One agent per node, as in a real graph: its breaker counts only its own failures.
        agent.__qualname__ = f"agent_{name}"
        return agent

    return execute(dag.build(agent_for), max_concurrent), probe


def assert_matches_model(dag: Dag, result: WorkflowResult, probe: Probe) -> None:
    """Every node ended as the model says, ran iff not skipped, on exactly the taken inputs."""
    model = expect(dag, INPUT)
    assert list(result.results) == list(dag.names)
    for name in dag.names:
        got = result.results[name]
        assert len(result.iterations(name)) == 1, name
        assert got["iteration"] == 0, name
        assert got["status"] in set(NodeStatus), name
        assert got["status"] == model.status[name], (name, got["error"])
        if got["status"] == NodeStatus.SKIPPED:
            assert probe.calls[name] == [], name
            assert got["attempts"] == 0 and got["content"] is None, name
            error = got["error"]
            assert isinstance(error, str)
            if name in model.not_taken:
                assert error.startswith("not taken:"), (name, error)
            else:
                match = UPSTREAM_FAILED.fullmatch(error)
                assert match is not None, (name, error)
                assert match[1] in model.culprits[name], (name, error)
            continue
        assert probe.calls[name] == [model.task[name]], name
        if isinstance(model.task[name], dict) and model.task[name] is not INPUT:
            assert list(probe.calls[name][0]) == list(model.task[name]), "edge order"
        assert got["attempts"] == 1, name
        if got["status"] == NodeStatus.FAILED:
            assert got["error"] == f"ValueError: {name} was drawn to fail"
            assert "taken" not in got, name
            continue
        assert got["content"] == dag.content(dag.names.index(name))
        assert got.get("taken") == model.taken.get(name), name
    failed = any(s == NodeStatus.FAILED for s in model.status.values())
    assert result.status == (RunStatus.FAILED if failed else RunStatus.SUCCEEDED)
    assert result.ok is not failed


# --- 1. routing and skips -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(dags())
def test_random_dags_route_and_skip_as_the_model_says(dag: Dag) -> None:
    """Statuses, skip reasons, tasks, routes and the run status agree with the reference model."""
    result, probe = run_dag(dag)
    assert_matches_model(dag, result, probe)


def test_the_model_agrees_on_a_hand_made_graph() -> None:
    """The model itself: a branch, a false condition and a failure give the expected verdicts."""
    # n0 branches to n1 (chosen) or n2; n3 hears from n1 (a false condition) and from
    # n2 (not taken); n4 fails, so n5 below it is skipped as upstream-failed.
    dag = Dag(
        names=("n0", "n1", "n2", "n3", "n4", "n5"),
        kinds={
            (0, 1): BRANCH,
            (0, 2): BRANCH,
            (1, 3): WHEN,
            (2, 3): ALWAYS,
            (1, 4): ALWAYS,
            (4, 5): ALWAYS,
        },
        flags={(1, 3): False},
        choices={0: "n1"},
        ops=(
            ("branch", 0, (1, 2)),
            ("edge", 1, 3),
            ("edge", 2, 3),
            ("edge", 1, 4),
            ("edge", 4, 5),
        ),
        failing=frozenset({4}),
    )
    model = expect(dag, INPUT)
    assert model.status == {
        "n0": "succeeded",
        "n1": "succeeded",
        "n2": "skipped",
        "n3": "skipped",
        "n4": "failed",
        "n5": "skipped",
    }
    assert model.not_taken == {"n2", "n3"}
    assert model.culprits == {"n5": {"n4"}}
    assert model.taken == {"n0": ["n1"], "n1": ["n4"]}
    assert model.task["n1"] == dag.content(0)
    result, probe = run_dag(dag)
    assert_matches_model(dag, result, probe)


# --- 2. the concurrency bound ---------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    dag=dags(),
    max_concurrent=st.integers(1, 6),
    pauses=st.dictionaries(st.integers(0, 11), st.integers(0, 4)),
)
def test_max_concurrent_bounds_random_dags_with_routing(
    dag: Dag, max_concurrent: int, pauses: dict[int, int]
) -> None:
    """However routed and however long agents take, no more than max_concurrent run at once."""
    result, probe = run_dag(dag, max_concurrent, pauses)
    assert probe.peak <= max_concurrent
    assert probe.in_flight == 0
    assert_matches_model(dag, result, probe)


@settings(max_examples=100, deadline=None)
@given(
    width=st.integers(1, 11),
    max_concurrent=st.integers(1, 6),
    shape=st.sampled_from(["roots", "edges", "whens", "branch"]),
)
def test_a_fan_out_reaches_the_bound_exactly(width: int, max_concurrent: int, shape: str) -> None:
    """A fan-out of width w runs min(w, max_concurrent) agents at once: the bound, when w >= it."""
    target = min(width, max_concurrent)
    gate = asyncio.Event()
    probe = Probe({})

    async def leaf(task: Any) -> str:
        probe.enter()
        try:
            if probe.in_flight == target:
                gate.set()
            await gate.wait()  # only opens once `target` leaves are in flight together
        finally:
            probe.leave()
        return "leaf"

    async def root(task: Any) -> dict[str, bool]:
        return {"go": True}

    leaves = [f"leaf{k}" for k in range(width)]
    g = WorkflowGraph("fan-out")
    for name in leaves:
        g.add_node(name, leaf)
    if shape != "roots":
        g.add_node("root", root)
        if shape == "branch":
            g.add_branch("root", lambda content: list(leaves), leaves)
        for name in leaves if shape in ("edges", "whens") else ():
            g.add_edge("root", name, when=(lambda c: c["go"]) if shape == "whens" else None)

    result = execute(g, max_concurrent)
    assert result.ok
    assert result.nodes_with_status(NodeStatus.SUCCEEDED) == list(g)
    assert probe.peak == target


# --- 3. loops --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    """``start? -> b0 -> ... -> check -(again, max bound)-> b0``, ``check -(done)-> after0 -> ...``.

    ``check`` says "again" on its first ``wanted - 1`` calls, then "done".
    """

    body: int
    bound: int
    wanted: int
    with_start: bool
    tail: int
    as_branch: bool

    @property
    def loop(self) -> list[str]:
        return [f"b{k}" for k in range(self.body)]

    @property
    def after(self) -> list[str]:
        return [f"after{k}" for k in range(self.tail)]

    def build(self, calls: dict[str, list[Any]]) -> WorkflowGraph:
        wanted, head, exit_ = self.wanted, self.loop[0], self.after[0]

        def agent_for(name: str) -> Any:
            calls[name] = []

            async def agent(task: Any) -> Any:
                calls[name].append(task)
                await asyncio.sleep(0)
                if name == "check":
                    return {"again": len(calls[name]) < wanted, "round": len(calls[name])}
                return f"{name}#{len(calls[name])}"

            agent.__qualname__ = f"agent_{name}"
            return agent

        g = WorkflowGraph("loop")
        chain = (["start"] if self.with_start else []) + self.loop + ["check"] + self.after
        for name in chain:
            g.add_node(name, agent_for(name))
        for a, b in itertools.pairwise(chain):
            if (a, b) != ("check", exit_):
                g.add_edge(a, b)
        if self.as_branch:

            def route(verdict: Any) -> str:
                return head if verdict["again"] else exit_

            g.add_branch("check", route, [head, exit_], max_iterations=self.bound)
        else:
            g.add_edge("check", head, when=lambda v: v["again"], max_iterations=self.bound)
            g.add_edge("check", exit_, when=lambda v: not v["again"])
        return g


def loops(tails: st.SearchStrategy[int]) -> st.SearchStrategy[Loop]:
    return st.builds(
        Loop,
        body=st.integers(1, 3),
        bound=st.integers(1, 5),
        wanted=st.integers(1, 7),
        with_start=st.booleans(),
        tail=tails,
        as_branch=st.booleans(),
    )


def check_loop(spec: Loop) -> None:
    """Run ``spec`` and check every iteration, the head's tasks and what follows the loop."""
    calls: dict[str, list[Any]] = {}
    result = execute(spec.build(calls), 2)
    rounds = min(spec.wanted, spec.bound)
    assert result.status == RunStatus.SUCCEEDED and result.ok
    for name in [*spec.loop, "check"]:
        runs = result.iterations(name)
        assert [r["iteration"] for r in runs] == list(range(rounds)), name
        assert all(r["status"] == NodeStatus.SUCCEEDED for r in runs), name
        assert len(calls[name]) == rounds, name
        assert result.results[name] == runs[-1], name
    # The head's next iterations get the back edge's content and the latest of the others.
    first = "start#1" if spec.with_start else INPUT
    assert calls[spec.loop[0]][0] == first
    for k, task in enumerate(calls[spec.loop[0]][1:], start=1):
        verdict = {"again": True, "round": k}
        assert task == ({"start": first, "check": verdict} if spec.with_start else verdict)
    if spec.with_start:
        assert len(calls["start"]) == 1 and len(result.iterations("start")) == 1
    ended_by_condition = spec.wanted <= spec.bound
    for name in spec.after:
        runs = result.iterations(name)
        assert len(runs) == 1, name
        assert runs[0]["iteration"] == 0, name
        if ended_by_condition:
            assert runs[0]["status"] == NodeStatus.SUCCEEDED, name
            assert len(calls[name]) == 1, name
        else:
            assert runs[0]["status"] == NodeStatus.SKIPPED, name
            assert str(runs[0]["error"]).startswith("not taken:"), runs[0]["error"]
            assert calls[name] == [], name
    done = [{"again": False, "round": rounds}]
    assert calls[spec.after[0]] == (done if ended_by_condition else [])


@settings(max_examples=150, deadline=None)
@given(loops(tails=st.just(1)))
def test_a_loop_runs_until_its_condition_or_its_bound(spec: Loop) -> None:
    """A loop runs min(wanted, bound) times; its exit node runs once iff the condition ends it."""
    check_loop(spec)


@settings(max_examples=150, deadline=None)
@given(loops(tails=st.integers(2, 3)))
def test_a_loop_that_exits_into_a_chain_runs_until_its_condition_or_its_bound(
    spec: Loop,
) -> None:
    """With a chain after the exit, the loop still runs min(wanted, bound) times, the chain once."""
    check_loop(spec)


def test_a_loop_that_goes_round_once_then_exits_into_a_chain_finishes() -> None:
    """b0 -> check -(again, max 2)-> b0, check -(done)-> after0 -> after1 ends after two rounds."""
    check_loop(Loop(body=1, bound=2, wanted=2, with_start=False, tail=2, as_branch=False))
