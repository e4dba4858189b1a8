"""Routing and a bounded loop for the chaos trials, drawn from a seed, and the rules.

A :class:`Flow` says how each edge of a random DAG decides: plain, a ``when``
condition, or one of its source's branch targets; and a back edge closes one
bounded loop. Every decision is a pure function of the trial's salt, the edge,
and the source's content (its node name and iteration), so that an
uninterrupted run, a run resumed after a kill, and the checks of test_chaos.py
all agree on it. Content saying ``"misroute"`` makes every condition raise and
every chooser name a target that does not exist: the node fails with
RoutingError.

:func:`walk` is the reference model the trials check runs against: the
control-flow rules of docs/workflows.md, written naively, sharing no code with
the executor's frontier.

Used by test_chaos.py in process, and by chaos_workflow.py in the child
processes of the SIGKILL trials (the script's directory is on sys.path).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heddle import WorkflowGraph

ALWAYS, WHEN, BRANCH = "always", "when", "branch"
#: How the loop's back edge decides: its own ``when``, as a target of its source's
#: branch, or not at all (it goes round until its bound).
LOOP_STYLES = {"when": 3, "branch": 2, "always": 1}


class Misrouted(Exception):
    """A condition met content that asks for a misroute (the run turns it into RoutingError)."""


def describe(task: Any) -> Any:
    """What an agent reports about its task: the names of the nodes whose content it got.

    One input is that node's content (a dict with its ``"node"``), several a dict
    by node name; anything else (the workflow's input, a list) by its type name.
    """
    if isinstance(task, dict):
        return [task["node"]] if "node" in task else sorted(task)
    return type(task).__name__


def iteration_of(content: Any) -> int:
    if isinstance(content, dict):
        return int(content.get("iteration", 0))
    return 0


def _misrouted(content: Any) -> bool:
    return isinstance(content, dict) and bool(content.get("misroute"))


@dataclass(frozen=True, slots=True)
class Loop:
    """``source -> target`` closes the loop, at most ``bound`` runs of ``target`` in all.

    Its condition asks to go round while the source's iteration is below
    ``wanted - 1``: ``wanted`` rounds, or ``bound`` if that is fewer ("always": the bound).
    """

    source: str
    target: str
    bound: int
    wanted: int
    style: str

    def again(self, content: Any) -> bool:
        if self.style == "always":
            return True
        if _misrouted(content):
            raise Misrouted(f"{self.source} asked to misroute its loop")
        return iteration_of(content) < self.wanted - 1


@dataclass(frozen=True, slots=True)
class Flow:
    """How a trial's edges decide: ``kinds`` of the forward edges (in the order added), the loop."""

    salt: str
    kinds: Mapping[tuple[str, str], str]
    loop: Loop | None

    def __str__(self) -> str:
        kinds = {k: sum(1 for v in self.kinds.values() if v == k) for k in (WHEN, BRANCH)}
        loop = self.loop
        where = "no loop"
        if loop is not None:
            where = (
                f"loop {loop.source}->{loop.target} ({loop.style}, bound {loop.bound}, "
                f"wanted {loop.wanted})"
            )
        return f"{kinds[WHEN]} when, {kinds[BRANCH]} branch edges, {where}"

    def branch(self, node: str) -> tuple[str, ...]:
        """The targets of ``node``'s branch, the loop's target last if it is one."""
        targets = tuple(t for (s, t), kind in self.kinds.items() if s == node and kind == BRANCH)
        loop = self.loop
        if loop is not None and loop.style == "branch" and loop.source == node:
            targets += (loop.target,)
        return targets

    def routed(self, node: str) -> bool:
        """Whether ``node`` has conditional out-edges (its results then record "taken")."""
        if self.loop is not None and self.loop.source == node:
            return True
        return any(s == node and kind != ALWAYS for (s, _), kind in self.kinds.items())

    def flag(self, source: str, target: str, content: Any) -> bool:
        """A ``when`` edge's answer: 60% true, fixed per edge and iteration."""
        if _misrouted(content):
            raise Misrouted(f"{source} asked to misroute its edge to {target}")
        key = f"{self.salt}:{source}->{target}@{iteration_of(content)}"
        return random.Random(key).random() < 0.6

    def choose(self, node: str, content: Any) -> object:
        """A branch's answer: none, one or several of its forward targets (+ the loop's)."""
        if _misrouted(content):
            return "nowhere"
        loop = self.loop
        looping = loop is not None and loop.source == node and loop.style == "branch"
        branch = self.branch(node)
        forward = list(branch[:-1] if looping else branch)  # the loop's target comes last
        rng = random.Random(f"{self.salt}:{node}@{iteration_of(content)}")
        u = rng.random()
        picks = [] if u < 0.15 or not forward else [rng.choice(forward)]
        if u > 0.7 and len(forward) > 1:
            picks = rng.sample(forward, rng.randint(1, len(forward)))
        if looping and loop is not None and loop.again(content):
            picks.append(loop.target)
        if not picks:
            return None
        return picks[0] if len(picks) == 1 and rng.random() < 0.5 else picks

    def decide(self, node: str, content: Any) -> frozenset[str] | None:
        """The targets ``node``'s success with ``content`` takes, before any loop bound.

        None for a node without conditional out-edges; raises Misrouted where the
        run fails the node with RoutingError.
        """
        if not self.routed(node):
            return None
        taken: set[str] = set()
        for (s, t), kind in self.kinds.items():
            if s == node and (kind == ALWAYS or (kind == WHEN and self.flag(s, t, content))):
                taken.add(t)
        branch = self.branch(node)
        if branch:
            chosen = self.choose(node, content)
            picks = [] if chosen is None else [chosen] if isinstance(chosen, str) else chosen
            assert isinstance(picks, list)
            if any(p not in branch for p in picks):
                raise Misrouted(f"{node}'s branch chose {chosen!r}")
            taken.update(picks)
        loop = self.loop
        looping = loop is not None and loop.source == node and loop.style != "branch"
        if looping and loop is not None and loop.again(content):
            taken.add(loop.target)
        return frozenset(taken)

    def inside(self, edges: Sequence[tuple[str, str]]) -> frozenset[str]:
        """The nodes a new iteration of the loop runs again: its target and all downstream."""
        if self.loop is None:
            return frozenset()
        return frozenset(downstream(edges, self.loop.target))

    def add_edges(self, graph: WorkflowGraph) -> None:
        """Add the forward edges (as their kinds say) and the back edge to ``graph``."""
        branched: set[str] = set()
        for (source, target), kind in self.kinds.items():
            if kind == ALWAYS:
                graph.add_edge(source, target)
            elif kind == WHEN:
                graph.add_edge(source, target, when=self._when(source, target))
            elif source not in branched:
                branched.add(source)
                self._add_branch(graph, source)
        loop = self.loop
        if loop is None:
            return
        if loop.style == "branch":
            if loop.source not in branched:
                self._add_branch(graph, loop.source)
        elif loop.style == "when":
            graph.add_edge(loop.source, loop.target, when=loop.again, max_iterations=loop.bound)
        else:
            graph.add_edge(loop.source, loop.target, max_iterations=loop.bound)

    def _when(self, source: str, target: str) -> Any:
        def when(content: Any) -> bool:
            return self.flag(source, target, content)

        return when

    def _add_branch(self, graph: WorkflowGraph, source: str) -> None:
        def choose(content: Any) -> object:
            return self.choose(source, content)

        loop = self.loop
        bound = loop.bound if loop is not None and loop.source == source else None
        graph.add_branch(source, choose, list(self.branch(source)), max_iterations=bound)


def downstream(edges: Sequence[tuple[str, str]], start: str) -> set[str]:
    """``start`` and every node a path of ``edges`` leads to from it."""
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        for s, t in edges:
            if s == node and t not in seen:
                seen.add(t)
                stack.append(t)
    return seen


def draw_flow(
    rng: random.Random, names: Sequence[str], edges: Sequence[tuple[str, str]]
) -> tuple[tuple[tuple[str, str], ...], Flow]:
    """Routing and one loop for a DAG whose topological order is ``names``.

    Returns the edges (one more when the loop's target did not lead to its
    source) and the Flow. The loop's condition asks for 1 to ``bound + 1``
    rounds (at least 2 in four loops in five): some loops end by their
    condition, some meet their bound, failures and edges not taken end others.
    """
    # A short loop early in the order: the more nodes upstream of its source, the
    # likelier one of them fails and the loop never goes round.
    i = rng.randrange(max(1, (len(names) - 1) // 3))
    target, source = names[i], names[min(i + rng.randint(1, 4), len(names) - 1)]
    share = rng.choice([0.2, 0.5, 0.8])  # of the edges that are conditional
    kinds = {
        edge: rng.choices([ALWAYS, WHEN, BRANCH], [1 - share, share / 2, share / 2])[0]
        for edge in edges
    }
    if source not in downstream(edges, target):
        kinds[(target, source)] = ALWAYS
    bound = rng.choice([1, 2, 3, 3, 4, 4])  # 1: the loop never goes round
    loop = Loop(
        source=source,
        target=target,
        bound=bound,
        wanted=rng.randint(2, bound + 1) if rng.random() < 0.8 else 1,
        style=rng.choices(list(LOOP_STYLES), list(LOOP_STYLES.values()))[0],
    )
    return tuple(kinds), Flow(salt=f"{rng.random():.12f}", kinds=kinds, loop=loop)


# --- the reference model: the control-flow rules, replayed over a run's activations ------

NOT_TAKEN = "not taken: "
UPSTREAM_FAILED = re.compile(r"upstream node '(\w+)' failed")


class Unmodelled(Exception):
    """The run met a known engine bug whose outcome depends on timing (see test_chaos.py)."""


def walk(
    graph: WorkflowGraph, flow: Flow | None, history: Mapping[str, Sequence[Any]], given: str
) -> list[tuple[str, str, int]]:
    """Replay a run's activations over the rules of docs/workflows.md ("Control flow").

    Which activation a node has next, and how it ends (run, skipped after a
    failure, or not taken), follows from its predecessors' ends and their
    "taken" lists; only whether a run succeeded or failed is the agent's. The
    loop goes round in waves: wave ``w`` runs its target and every node
    downstream again, once the wave before has ended. Within a wave a node
    not taken records nothing if the loop goes round (it may run next time),
    and a "not taken" skip at the end only if it never ran. Checks every
    activation's task (``given``: how the workflow's input reads) and "taken"
    list, that no activation is left over, and returns the ``edge.exhausted``
    events the run must have sent: ``(source, target, iteration)``.
    """
    order = graph.topological_order()
    preds = {node: graph.predecessors(node) for node in order}
    loop = flow.loop if flow is not None else None
    forward = [(p, node) for node in order for p in preds[node]]
    inside = downstream(forward, loop.target) if loop is not None else set()
    used: Counter[str] = Counter()
    ends: dict[str, tuple[str, Any]] = {}  # node -> how its latest window ended, its result
    failed: set[str] = set()
    exhausted: list[tuple[str, str, int]] = []

    def next_activation(node: str, what: str) -> Any:
        runs, k = history[node], used[node]
        assert k < len(runs), f"{node!r} should have had {what}, it has {k} activation(s)"
        used[node] += 1
        return runs[k]

    def delivered(source: str, target: str) -> bool:
        how, r = ends[source]
        return how == "succeeded" and ("taken" not in r or target in r["taken"])

    wave = 0
    while True:
        unreached = []
        for node in order if wave == 0 else [n for n in order if n in inside]:
            culprits = [p for p in preds[node] if ends[p][0] in ("failed", "upstream")]
            arrived = [p for p in preds[node] if delivered(p, node)]
            if wave and loop is not None and node == loop.target:
                arrived.append(loop.source)
            where = f"{node!r} in wave {wave}"
            if culprits:
                r = next_activation(node, f"a skip in wave {wave}: {culprits} did not succeed")
                named = UPSTREAM_FAILED.fullmatch(r["error"] or "")
                assert r["status"] == "skipped" and named, f"{where}: {r['error']!r}, {culprits}"
                culprit = named[1] in failed
                assert culprit, f"{where}: skipped naming {named[1]!r}, which never failed"
                ends[node] = ("upstream", r)
            elif arrived or not preds[node]:
                r = next_activation(node, f"a run in wave {wave}: {arrived} delivered")
                assert r["status"] != "skipped", f"{where}: skipped ({r['error']!r}), {arrived}"
                check_task(node, r, {p: ends[p][1] for p in arrived}, given, where)
                if r["status"] == "failed":
                    failed.add(node)
                    routing = r.get("error_type") == "heddle.core.errors.RoutingError"
                    assert not routing or misrouted(flow, node, r), f"{where}: {r['error']}"
                else:
                    spent = loop is not None and used[loop.target] >= loop.bound
                    if check_taken(flow, node, r, spent, where):
                        assert loop is not None
                        exhausted.append((node, loop.target, used[loop.target]))
                ends[node] = (r["status"], r)
            else:
                ends[node] = ("not taken", None)
                unreached.append(node)
        going = loop is not None and delivered(loop.source, loop.target)
        for node in unreached:
            if not (going and node in inside) and used[node] == 0:
                r = next_activation(node, f"a 'not taken' skip in wave {wave}")
                reason = r["error"] or ""
                assert r["status"] == "skipped" and reason.startswith(NOT_TAKEN), (
                    f"{node!r} in wave {wave}: ended {r['status']} ({reason!r}), nothing arrived"
                )
        if not going:
            break
        wave += 1
    left = {
        node: len(history[node]) - used[node] for node in order if used[node] < len(history[node])
    }
    assert not left, f"activations no rule explains, per node: {left}"
    return exhausted


def check_taken(flow: Flow | None, node: str, r: Any, spent: bool, where: str) -> bool:
    """A success took the edges its content decides; True if the loop's bound stopped it.

    ``spent``: the loop's target has run as often as its bound allows.
    """
    assert not misrouted(flow, node, r), f"{where}: succeeded, yet its routing had to fail"
    taken = flow.decide(node, r["content"]) if flow is not None else None
    if taken is None:
        assert "taken" not in r, f"{where}: plain edges only, yet {r['taken']} taken"
        return False
    assert flow is not None
    loop = flow.loop
    stopped = loop is not None and node == loop.source and spent and loop.target in taken
    if stopped:
        assert loop is not None
        taken -= {loop.target}  # at the bound the back edge is not taken: edge.exhausted
    got = r.get("taken")
    assert got is not None and len(set(got)) == len(got), f"{where}: taken {got}"
    assert set(got) == taken, f"{where}: took {got}, not {sorted(taken)}"
    return stopped


def misrouted(flow: Flow | None, node: str, r: Any) -> bool:
    if flow is None:
        return False
    try:
        flow.decide(node, r["content"])
    except Misrouted:
        return True
    return False


def check_task(node: str, r: Any, inputs: Mapping[str, Any], given: str, where: str) -> None:
    """The content of a node that ran says it got what arrived over the edges taken.

    ``inputs``: the results of the nodes whose edges delivered, by name.
    """
    content = r["content"]
    if not isinstance(content, dict) or "got" not in content:
        return  # failed, or a kind that does not report
    assert content["node"] == node and content["iteration"] == r["iteration"], where
    if not inputs:
        want: Any = given
    elif len(inputs) == 1:
        (only,) = inputs.values()
        want = describe(only["content"])
    else:
        want = sorted(inputs)
    assert content["got"] == want, f"{where}: its task held {content['got']}, not {want}"
