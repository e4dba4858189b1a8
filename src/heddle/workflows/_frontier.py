"""Readiness and routing of one run, in one place: the frontier.

The frontier knows, for every node, the window of its next activation: how
many of its incoming (forward) edges are still undecided, and which of them
delivered. When an activation ends, :meth:`Frontier.settle` decides its
outgoing edges, marks what can no longer run ``skipped`` (with the reason),
starts the next iteration of a loop when its back edge is taken, and returns
the nodes that became ready. It never awaits and never calls user code: the
run evaluates conditions (:func:`decide`) before it settles a node.

How a node's window closes: every forward predecessor has *resolved* (ended,
its edge taken or not). With at least one edge taken it is ready; with none
it is skipped "not taken", unless a loop that is still running could reach it
again, in which case it is *parked* until that is known.

How a loop goes round: a back edge ``s -> t`` that is taken starts the next
iteration of ``t`` and of everything downstream of ``t``, once the current
wave through those nodes has drained (each of them has ended this
iteration). Nodes outside the loop run when their edges are taken; a node
whose edge from inside the loop was not taken waits (parked) until the loop
ends, so "publish when approved" fires in the iteration that approves.

A plain DAG (``plan.static``) pays for none of this: a counter per node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from heddle.core.errors import RoutingError
from heddle.workflows.graph import BackEdge, Plan, Route
from heddle.workflows.status import NodeStatus

__all__ = ["DONE", "PARKED", "READY", "WAITING", "Frontier", "decide", "route_names"]

WAITING, READY, DONE, PARKED = 0, 1, 2, 3  # a node is active (will end again) iff <= READY
_SUCCEEDED = NodeStatus.SUCCEEDED
_ACTIVE = (WAITING, READY)


def decide(plan: Plan, i: int, content: Any) -> frozenset[int]:
    """The targets of node ``i``'s out-edges taken for ``content``; RoutingError if undecidable.

    Unconditional edges are always taken; a ``when`` edge if its condition
    is true; a branch's edges as its chooser says. Loop bounds are the
    frontier's business, not this function's.
    """
    route = plan.routes[i]
    assert route is not None
    names = plan.names
    taken = set(route.always)
    for target, when in route.whens:
        try:
            ok = bool(when(content))
        except Exception as exc:
            raise RoutingError(
                names[i],
                f"the condition of edge {names[i]!r} -> {names[target]!r} raised "
                f"{type(exc).__name__}: {_safe_str(exc)}",
                targets=[names[target]],
            ) from exc
        if ok:
            taken.add(target)
    for branch, targets in route.branches:
        try:
            chosen = branch.choose(content)
        except Exception as exc:
            raise RoutingError(
                names[i],
                f"{_branch_name(branch.label)} raised {type(exc).__name__}: {_safe_str(exc)}; "
                f"it chooses among {list(branch.targets)}",
                targets=branch.targets,
            ) from exc
        taken.update(_chosen(plan, i, branch.label, branch.targets, targets, chosen))
    return frozenset(taken)


def _chosen(
    plan: Plan,
    i: int,
    label: str,
    allowed: tuple[str, ...],
    indices: tuple[int, ...],
    chosen: object,
) -> Iterable[int]:
    if chosen is None:
        return ()
    picks = [chosen] if isinstance(chosen, str) else chosen
    if not isinstance(picks, list | tuple | set | frozenset):
        picks = [chosen]  # reported below as not a name
    by_name = dict(zip(allowed, indices, strict=True))
    out = []
    for pick in picks:
        if not isinstance(pick, str) or pick not in by_name:
            raise RoutingError(
                plan.names[i],
                f"{_branch_name(label)} returned {_safe_repr(chosen)}, which is not one of its "
                f"targets {list(allowed)} (nor a list of them, nor None)",
                value=chosen,
                targets=allowed,
            )
        out.append(by_name[pick])
    return out


def _branch_name(label: str) -> str:
    return "its branch" if label == "branch" else f"its branch {label!r}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<its message could not be produced>"


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<a {type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


class Frontier:
    """Which activations of a run are ready, waiting, parked or done.

    ``state[i]`` is the state of node ``i``'s current window, ``iteration[i]``
    its iteration. ``open`` counts the nodes not done: the run is over when it
    reaches 0. After each call, ``skipped`` holds the nodes that became
    skipped (``(node, reason)``) and ``exhausted`` the back edges not taken
    because of their bound (``(edge, iteration)``), for the run to record.
    """

    __slots__ = (
        "arrived",
        "back_arrived",
        "back_from",
        "bumped",
        "down",
        "down_order",
        "entered",
        "exhausted",
        "iteration",
        "not_taken",
        "open",
        "parked",
        "pending",
        "plan",
        "poisoned",
        "position",
        "rearms",
        "recorded",
        "scheduled",
        "skipped",
        "state",
    )

    def __init__(self, plan: Plan) -> None:
        n = len(plan.names)
        self.plan = plan
        self.pending = [len(p) for p in plan.predecessors]
        self.state = [WAITING] * n
        self.iteration = [0] * n
        self.open = n
        self.skipped: list[tuple[int, str, int]] = []  # (node, reason, its iteration)
        self.exhausted: list[tuple[BackEdge, int]] = []
        self.not_taken: set[int] = set()  # nodes whose latest end is a "not taken" skip
        # The failed node behind a node's latest end: itself when it failed, the node
        # upstream whose failure skipped it; None when it did not end by a failure.
        self.poisoned: list[str | None] = [None] * n
        if plan.static:
            return
        self.arrived: list[set[int]] = [set() for _ in range(n)]
        self.back_arrived: list[list[int]] = [[] for _ in range(n)]
        self.back_from: list[list[BackEdge]] = [[] for _ in range(n)]
        for edge in plan.back_edges:
            self.back_from[edge.source].append(edge)
        self.scheduled: list[BackEdge] = []
        self.parked: set[int] = set()
        self.recorded = [False] * n  # the node has a recorded activation in this run
        # The iteration in which each node was last entered from outside its loops (not
        # by a back edge): a loop's bound counts its target's runs since then, so a loop
        # inside another starts its count again with each round of the outer one.
        self.entered = [0] * n
        self.bumped: set[int] = set()  # windows a loop opened for a node's next iteration
        self.position = {node: k for k, node in enumerate(plan.order)}
        self.down = {edge: _downstream(plan, edge.target) for edge in plan.back_edges}
        self.down_order = {
            edge: tuple(sorted(down, key=self.position.__getitem__))
            for edge, down in self.down.items()
        }
        self.rearms = {
            edge: [other for other in plan.back_edges if other.source in self.down[edge]]
            for edge in plan.back_edges
        }

    # -- starting ---------------------------------------------------------------------

    def start(self) -> list[int]:
        """The nodes ready at the start: those without (forward) predecessors."""
        ready = [i for i, count in enumerate(self.pending) if count == 0]
        for i in ready:
            self.state[i] = READY
        return ready

    def inputs(self, i: int) -> list[int]:
        """The nodes whose content node ``i``'s activation receives, in edge order."""
        preds = self.plan.predecessors[i]
        if self.plan.static:
            return list(preds)
        arrived = self.arrived[i]
        return [p for p in preds if p in arrived] + self.back_arrived[i]

    # -- an activation ended ------------------------------------------------------------

    def settle(self, i: int, status: NodeStatus, taken: frozenset[int] | None) -> list[int]:
        """Node ``i``'s activation ended with ``status``; return the nodes now ready.

        ``taken``: for a succeeded node with conditional out-edges, the targets
        :func:`decide` chose (None: every edge is taken).
        """
        state = self.state
        state[i] = DONE
        self.open -= 1
        plan = self.plan
        ready: list[int] = []
        if plan.static:
            if status == _SUCCEEDED:
                pending = self.pending
                for j in plan.successors[i]:
                    pending[j] -= 1
                    if pending[j] == 0 and state[j] == WAITING:
                        state[j] = READY
                        ready.append(j)
            else:
                self.poisoned[i] = plan.names[i]
                self._doom(i, plan.names[i])
            return ready
        self.back_arrived[i] = []
        self.not_taken.discard(i)
        self.recorded[i] = True
        self.bumped.discard(i)
        if status == NodeStatus.SUCCEEDED:
            self.poisoned[i] = None
            # Back edges first: a loop that goes round keeps what it may reach parked.
            for edge in self.back_from[i]:
                if taken is None or edge.target in taken:
                    self._take_back_edge(edge)
            for j in plan.successors[i]:
                self._resolve(j, i, taken is None or j in taken, ready)
        else:
            self.poisoned[i] = plan.names[i]
            self._doom(i, plan.names[i])
        self._loops(ready)
        return ready

    def skip_unfinished(self, reason_for: Any) -> None:
        """Mark every node not done skipped (fail_fast); ``reason_for(i)`` says why."""
        if not self.plan.static:
            self.parked.clear()
            self.scheduled.clear()
        for i, state in enumerate(self.state):
            if state != DONE:
                self.state[i] = DONE
                self.open -= 1
                self.skipped.append((i, reason_for(i), self.iteration[i]))

    def next_iteration(self, i: int) -> int:
        """The iteration a new activation of node ``i`` would have."""
        return self.iteration[i] + (self.state[i] == DONE)

    def bound(self, i: int, taken: frozenset[int]) -> frozenset[int]:
        """``taken`` without the back edges of node ``i`` that reached their bound.

        Those are added to ``exhausted``: the run records the event, and the
        node's result names only the edges really taken.
        """
        spent = [e for e in self.back_from[i] if e.target in taken and self._spent(e)]
        if not spent:
            return taken
        for edge in spent:
            self.exhausted.append((edge, self.next_iteration(edge.target)))
        return taken - {edge.target for edge in spent}

    def _take_back_edge(self, edge: BackEdge) -> None:
        if self._spent(edge):
            self.exhausted.append((edge, self.next_iteration(edge.target)))
        else:
            self.scheduled.append(edge)

    def _resolve(self, j: int, source: int, taken: bool, ready: list[int]) -> None:
        if self.state[j] != WAITING:
            # No window of ``j`` waits for this edge (``j`` ended meanwhile, doomed by a
            # failure), but a loop may open one later: it gets the latest contents of
            # its inputs, so remember whether this one delivered.
            if taken:
                self.arrived[j].add(source)
            else:
                self.arrived[j].discard(source)
            return
        self.pending[j] -= 1
        if taken:
            self.arrived[j].add(source)
        if self.pending[j] == 0:
            self._close_window(j, ready)

    def _close_window(self, j: int, ready: list[int]) -> None:
        if self.arrived[j] or self.back_arrived[j] or not self.plan.predecessors[j]:
            self.state[j] = READY
            self.bumped.discard(j)
            if not self.back_arrived[j]:  # entered from outside its loops: bounds count anew
                self.entered[j] = self.iteration[j]
            ready.append(j)
            return
        if self._may_reopen(j):
            # Nothing came, but a loop still running may reach it: decide later. Its
            # successors hear "not taken" now, so that no window waits on a parked one.
            self.state[j] = PARKED
            self.parked.add(j)
        else:
            self._end_not_taken(j)
        for k in self.plan.successors[j]:
            self._resolve(k, j, False, ready)

    def _end_not_taken(self, j: int) -> None:
        """Node ``j``'s window closed with nothing taken, for good (successors told apart)."""
        plan = self.plan
        self.state[j] = DONE
        self.open -= 1
        if self.recorded[j]:
            # A loop opened another window for a node that already ran (or was
            # skipped) in this run, and nothing came: its latest result stands.
            if j in self.bumped:
                self.bumped.discard(j)
                self.iteration[j] -= 1
        else:
            sources = ", ".join(repr(plan.names[p]) for p in plan.predecessors[j])
            self.recorded[j] = True
            self.not_taken.add(j)
            self.poisoned[j] = None
            reason = f"not taken: no edge from {sources} was taken"
            self.skipped.append((j, reason, self.iteration[j]))

    def _doom(self, i: int, failed: str) -> None:
        """Skip everything downstream of ``i`` that has not started: it can never run.

        ``failed`` names the node whose failure this is (``i`` itself, or a node
        upstream of it).
        """
        plan, state = self.plan, self.state
        reason = f"upstream node {failed!r} failed"
        stack = list(plan.successors[i])
        while stack:
            j = stack.pop()
            if state[j] == DONE or state[j] == READY:
                continue
            if state[j] == PARKED:
                self.parked.discard(j)
            state[j] = DONE
            self.open -= 1
            self.poisoned[j] = failed
            if not plan.static:
                self.not_taken.discard(j)
                self.recorded[j] = True
                self.bumped.discard(j)
            self.skipped.append((j, reason, self.iteration[j]))
            stack.extend(plan.successors[j])

    # -- loops ------------------------------------------------------------------------------

    def _loops(self, ready: list[int]) -> None:
        """Start the loop iterations whose wave has drained; settle what is parked."""
        changed = True
        while changed:
            changed = False
            if self.scheduled:
                drained = [e for e in self.scheduled if not self._busy(e)]
                if drained:
                    if len(drained) == len(self.scheduled):
                        self.scheduled = []
                    else:
                        self.scheduled = [e for e in self.scheduled if e not in drained]
                    self._reopen(drained, ready)
                    changed = True
            if self.parked:
                for j in sorted(self.parked, key=self.position.__getitem__):
                    if j in self.parked and not self._may_reopen(j):
                        self.parked.discard(j)
                        self._end_not_taken(j)  # its successors heard when it parked
                        changed = True

    def _busy(self, edge: BackEdge) -> bool:
        state = self.state
        return any(state[y] <= READY for y in self.down_order[edge])  # WAITING or READY

    def _reopen(self, edges: list[BackEdge], ready: list[int]) -> None:
        """Open the next iteration of the loops of ``edges``: their targets and downstream."""
        plan, state, iteration, pending = self.plan, self.state, self.iteration, self.pending
        targets: dict[int, list[int]] = {}
        going: list[BackEdge] = []
        for edge in edges:
            if self._spent(edge):  # another loop ran the target meanwhile
                self.exhausted.append((edge, self.next_iteration(edge.target)))
            else:
                targets.setdefault(edge.target, []).append(edge.source)
                going.append(edge)
        if not going:
            return
        if len(going) == 1:
            reopened = self.down_order[going[0]]
        else:
            members = set().union(*(self.down[edge] for edge in going))
            reopened = tuple(sorted(members, key=self.position.__getitem__))
        for y in reopened:
            if state[y] == DONE:
                iteration[y] += 1
                self.bumped.add(y)
                self.open += 1
            elif state[y] == PARKED:
                self.parked.discard(y)
            state[y] = WAITING
        for target, sources in targets.items():
            self.back_arrived[target] = sources
        poisoned, predecessors = self.poisoned, plan.predecessors
        for y in reopened:
            if state[y] != WAITING:
                continue  # ended meanwhile: doomed by a failed predecessor below
            arrived = self.arrived[y]
            count = 0
            failed = None
            for p in predecessors[y]:
                if state[p] <= READY:  # WAITING or READY: it will resolve again
                    count += 1
                    arrived.discard(p)
                elif failed is None:
                    failed = poisoned[p]
            pending[y] = count
            if failed is not None:
                state[y] = DONE
                self.open -= 1
                poisoned[y] = failed
                self.recorded[y] = True
                self.bumped.discard(y)
                self.skipped.append((y, f"upstream node {failed!r} failed", iteration[y]))
                self._doom(y, failed)
            elif count == 0:
                self._close_window(y, ready)

    def _may_reopen(self, j: int) -> bool:
        """Could a loop still running start node ``j`` again (or for the first time)?"""
        if not self.plan.back_edges:
            return False
        state = self.state
        live = list(self.scheduled)
        for edge in self.plan.back_edges:
            if state[edge.source] in _ACTIVE and edge not in live and not self._spent(edge):
                live.append(edge)
        seen = set(live)
        while live:
            edge = live.pop()
            if j in self.down[edge]:
                return True
            for other in self.rearms[edge]:
                if other not in seen and not self._spent(other):
                    seen.add(other)
                    live.append(other)
        return False

    def _spent(self, edge: BackEdge) -> bool:
        """The loop's target has run ``max_iterations`` times since the loop was entered."""
        target = edge.target
        return self.next_iteration(target) - self.entered[target] >= edge.max_iterations


def _downstream(plan: Plan, start: int) -> frozenset[int]:
    seen = {start}
    stack = [start]
    while stack:
        i = stack.pop()
        for j in plan.successors[i]:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return frozenset(seen)


def route_names(plan: Plan, i: int, taken: frozenset[int]) -> list[str]:
    """The names of node ``i``'s targets in ``taken``, in edge order (recorded as "taken")."""
    route: Route | None = plan.routes[i]
    assert route is not None
    return [plan.names[t] for t in route.targets if t in taken]
