"""Conditional routing, bounded loops, the agent context and observers, through the API."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import pytest

import heddle
from heddle.core.errors import (
    ConfigurationError,
    GraphValidationError,
    NoAttemptContext,
    RoutingError,
)
from heddle.messaging.events import Event
from heddle.workflows import NodeStatus, RunStatus, WorkflowExecutor, WorkflowGraph
from heddle.workflows import _frontier as frontier_module


async def echo(task: Any) -> Any:
    return task


class Recorder:
    """A RunObserver keeping every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def on_event(self, event: Event) -> None:
        self.events.append(event)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [dict(e.payload) for e in self.events if e.event_type == event_type]


def triage_graph(choose: Any) -> WorkflowGraph:
    async def triage(task: str) -> dict[str, str]:
        return {"route": task}

    async def handle(task: Any) -> str:
        return f"{heddle.current().node} handled {task['route']}"

    g = WorkflowGraph("support").add_node("triage", triage)
    for name in ("billing", "tech", "sales"):
        g.add_node(name, handle)
    g.add_node("reply", echo)
    for name in ("billing", "tech", "sales"):
        g.add_edge(name, "reply")
    g.add_branch("triage", choose, ["billing", "tech", "sales"])
    return g


# --- routing -----------------------------------------------------------------------------


async def test_a_branch_runs_the_chosen_target_and_skips_the_others_as_not_taken() -> None:
    """The chosen specialist runs; the others are skipped "not taken"; the run succeeds."""
    g = triage_graph(lambda content: content["route"])
    result = await WorkflowExecutor().execute(g, input="tech")
    assert result.status == RunStatus.SUCCEEDED and result.ok
    assert result.results["tech"]["status"] == NodeStatus.SUCCEEDED
    for name in ("billing", "sales"):
        assert result.results[name]["status"] == NodeStatus.SKIPPED
        assert result.results[name]["error"] == "not taken: no edge from 'triage' was taken"
    assert result.results["triage"]["taken"] == ["tech"]
    # The join gets just what arrived over taken edges: the chosen branch's content.
    assert result.content("reply") == "tech handled tech"


async def test_a_branch_may_choose_several_targets_or_none() -> None:
    """A list takes every named edge; None takes none, and everything after is not taken."""
    g = triage_graph(lambda content: ["billing", "sales"])
    result = await WorkflowExecutor().execute(g, input="x")
    assert result.content("reply") == {
        "billing": "billing handled x",
        "sales": "sales handled x",
    }
    none = await WorkflowExecutor().execute(triage_graph(lambda content: None), input="x")
    assert none.ok
    assert none.results["triage"]["taken"] == []
    assert none.results["reply"]["error"] == (
        "not taken: no edge from 'billing', 'tech', 'sales' was taken"
    )


async def test_when_edges_are_taken_only_when_their_condition_holds() -> None:
    """add_edge(when=) is called with the source's content after it succeeds."""
    seen = []

    def is_big(content: int) -> bool:
        seen.append(content)
        return content > 10

    g = WorkflowGraph("g").add_node("n", echo).add_node("big", echo).add_node("small", echo)
    g.add_edge("n", "big", when=is_big).add_edge("n", "small", when=lambda c: c <= 10)
    result = await WorkflowExecutor().execute(g, input=3)
    assert seen == [3]
    assert result.nodes_with_status(NodeStatus.SUCCEEDED) == ["n", "small"]
    assert result.results["n"]["taken"] == ["small"]


@pytest.mark.parametrize(
    ("choose", "detail"),
    [
        (lambda c: "refunds", "returned 'refunds', which is not one of its targets"),
        (lambda c: ["tech", 3], "returned ['tech', 3]"),
        (lambda c: c["missing"], "raised KeyError"),
    ],
    ids=["unknown-name", "bad-list", "raises"],
)
async def test_a_bad_choice_fails_the_source_with_a_routing_error(choose: Any, detail: str) -> None:
    """A name outside the targets, or a raising chooser, fails the source, naming it all."""
    g = triage_graph(choose)
    result = await WorkflowExecutor().execute(g, input="tech")
    assert result.status == RunStatus.FAILED
    triage = result.results["triage"]
    assert triage["status"] == NodeStatus.FAILED
    assert triage["error_type"] == "heddle.core.errors.RoutingError"
    assert triage["error"] is not None
    assert "node 'triage'" in triage["error"] and detail in triage["error"]
    assert "['billing', 'tech', 'sales']" in triage["error"]
    assert triage["attempts"] == 1  # a routing error is not retried
    for name in ("billing", "tech", "sales", "reply"):
        assert result.results[name]["error"] == "upstream node 'triage' failed"


async def test_a_raising_when_fails_the_source_and_keeps_its_traceback() -> None:
    """The condition's own traceback is recorded, so the bug can be found."""

    def broken(content: Any) -> bool:
        raise ValueError("no route field")

    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b", when=broken)
    result = await WorkflowExecutor().execute(g, input=1)
    a = result.results["a"]
    assert a["status"] == NodeStatus.FAILED
    assert "condition of edge 'a' -> 'b' raised ValueError: no route field" in (a["error"] or "")
    assert "def broken" in (a.get("traceback") or "") or "broken" in (a.get("traceback") or "")


def test_routing_error_carries_the_node_value_and_targets() -> None:
    """RoutingError names what a handler needs as attributes."""
    exc = RoutingError("triage", "bad", value="x", targets=["a", "b"])
    assert (exc.node, exc.value, exc.targets) == ("triage", "x", ("a", "b"))


# --- validation ---------------------------------------------------------------------------


def test_an_unbounded_cycle_is_rejected_naming_it_and_how_to_bound_it() -> None:
    """validate() names the cycle and shows add_edge(..., max_iterations=...)."""
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo)
    g.add_edge("a", "b").add_edge("b", "a", when=lambda c: True)
    with pytest.raises(GraphValidationError, match=r"cycle: a -> b -> a; .*max_iterations"):
        g.validate()


def test_max_iterations_on_an_edge_that_closes_no_loop_is_rejected() -> None:
    """A bound on a forward edge is a mistake, reported as such."""
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo)
    g.add_edge("a", "b", max_iterations=3)
    with pytest.raises(GraphValidationError, match="closes no loop"):
        g.validate()


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.add_edge("a", "b", when="yes"),
        lambda g: g.add_edge("b", "a", when=bool, max_iterations=0),
        lambda g: g.add_branch("a", "choose", ["b"]),
        lambda g: g.add_branch("a", bool, "b"),
        lambda g: g.add_branch("a", bool, []),
    ],
    ids=["when-not-callable", "bound-zero", "choose-not-callable", "targets-str", "no-targets"],
)
def test_bad_routing_arguments_are_refused_at_once(call: Any) -> None:
    """Bad conditions, bounds and target lists fail where they are written."""
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo)
    with pytest.raises(ConfigurationError):
        call(g)


def test_a_branch_target_twice_or_an_existing_edge_is_refused() -> None:
    """A branch cannot duplicate an edge."""
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    with pytest.raises(GraphValidationError, match="duplicate edge"):
        g.add_branch("a", bool, ["b"])
    with pytest.raises(GraphValidationError, match="twice"):
        WorkflowGraph("h").add_node("a", echo).add_node("b", echo).add_branch("a", bool, ["b", "b"])


def test_conditional_edges_are_drawn_dashed_with_the_conditions_name() -> None:
    """Mermaid and DOT show which edges are conditional, and the loop's bound."""

    def needs_changes(verdict: Any) -> bool:
        return True

    g = WorkflowGraph("g").add_node("write", echo).add_node("review", echo)
    g.add_edge("write", "review").add_edge("review", "write", when=needs_changes, max_iterations=3)
    assert '    n1 -. "needs_changes, max 3" .-> n0' in g.to_mermaid()
    assert "    n0 --> n1" in g.to_mermaid()
    assert '"review" -> "write" [style=dashed, label="needs_changes, max 3"];' in g.to_dot()


def test_a_plain_dag_keeps_its_fingerprint_and_a_condition_changes_it() -> None:
    """Recorded runs of plain DAGs still resume; adding a condition is a structural change."""
    plain = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    routed = WorkflowGraph("g").add_node("a", echo).add_node("b", echo)
    routed.add_edge("a", "b", when=bool)
    before = hashlib.sha256(b"n\0a\0echo\nn\0b\0echo\ne\0a\0b\n").hexdigest()[:16]
    assert plain.fingerprint() == before
    assert plain.fingerprint() != routed.fingerprint()


# --- loops --------------------------------------------------------------------------------


def writer_reviewer(approve_at: int, bound: int, calls: list[Any]) -> WorkflowGraph:
    async def write(task: Any) -> str:
        calls.append(("write", task))
        return f"draft {heddle.current().iteration}"

    async def review(draft: str) -> dict[str, Any]:
        calls.append(("review", draft))
        return {"approved": draft == f"draft {approve_at}", "draft": draft}

    def needs_changes(verdict: dict[str, Any]) -> bool:
        return not verdict["approved"]

    async def publish(verdict: dict[str, Any]) -> str:
        return "published " + verdict["draft"]

    g = WorkflowGraph("essay").add_node("write", write).add_node("review", review)
    g.add_node("publish", publish)
    g.add_edge("write", "review")
    g.add_edge("review", "write", when=needs_changes, max_iterations=bound)
    g.add_edge("review", "publish", when=lambda verdict: verdict["approved"])
    return g


async def test_a_writer_reviewer_loop_revises_until_approved() -> None:
    """Each revision gets the review; publish fires once, in the approving iteration."""
    calls: list[Any] = []
    recorder = Recorder()
    g = writer_reviewer(approve_at=2, bound=3, calls=calls)
    result = await WorkflowExecutor(observers=[recorder]).execute(g, input="topic")
    assert result.ok
    assert result.content("publish") == "published draft 2"
    assert result.results["write"]["iteration"] == 2
    assert result.results["publish"]["iteration"] == 0
    assert [r["content"] for r in result.iterations("write")] == ["draft 0", "draft 1", "draft 2"]
    assert [r["iteration"] for r in result.iterations("review")] == [0, 1, 2]
    assert result.iterations("publish") == [result.results["publish"]]
    # The first draft gets the input; each revision gets the review it answers.
    assert calls[0] == ("write", "topic")
    assert calls[2] == ("write", {"approved": False, "draft": "draft 0"})
    started = [(e["node"], e["iteration"]) for e in recorder.of("node.started")]
    assert started == [
        ("write", 0), ("review", 0), ("write", 1), ("review", 1), ("write", 2), ("review", 2),
        ("publish", 0),
    ]  # fmt: skip
    assert recorder.of("node.skipped") == [] and recorder.of("edge.exhausted") == []


async def test_at_its_bound_a_loop_ends_gracefully_and_the_run_goes_on() -> None:
    """The back edge is not taken, edge.exhausted says so, publish is not taken, run succeeds."""
    calls: list[Any] = []
    recorder = Recorder()
    g = writer_reviewer(approve_at=99, bound=3, calls=calls)
    result = await WorkflowExecutor(observers=[recorder]).execute(g, input="topic")
    assert result.status == RunStatus.SUCCEEDED
    assert [c[0] for c in calls] == ["write", "review"] * 3
    assert recorder.of("edge.exhausted") == [
        {"source": "review", "target": "write", "iteration": 3, "max_iterations": 3}
    ]
    assert result.results["review"]["taken"] == []
    publish = result.results["publish"]
    assert publish["status"] == NodeStatus.SKIPPED
    assert publish["error"] == "not taken: no edge from 'review' was taken"


async def test_a_supervisor_routes_to_specialists_until_it_answers_finish() -> None:
    """The supervisor loops back through the chosen specialist; the table says who acted."""
    plan = iter(["research", "code", "research", "FINISH"])
    seen: list[Any] = []

    async def supervisor(task: Any) -> str:
        seen.append(task)
        return next(plan)

    async def specialist(task: Any) -> str:
        ctx = heddle.current()
        return f"{ctx.node} #{ctx.iteration}"

    g = WorkflowGraph("team").add_node("supervisor", supervisor)
    g.add_node("research", specialist).add_node("code", specialist).add_node("FINISH", echo)
    g.add_branch("supervisor", lambda choice: choice, ["research", "code", "FINISH"])
    for name in ("research", "code"):
        g.add_edge(name, "supervisor", max_iterations=5)
    result = await WorkflowExecutor().execute(g, input="build it")
    assert result.ok
    assert seen == ["build it", "research #0", "code #0", "research #1"]
    assert [r["taken"] for r in result.iterations("supervisor")] == [
        ["research"],
        ["code"],
        ["research"],
        ["FINISH"],
    ]
    assert result.results["research"]["iteration"] == 1
    assert result.results["code"]["status"] == NodeStatus.SUCCEEDED
    assert result.content("FINISH") == "FINISH"


async def test_a_supervisor_that_never_finishes_stops_at_its_bound() -> None:
    """max_iterations=5: five supervisor turns, then the run ends, not with an exception."""
    turns = []

    async def supervisor(task: Any) -> str:
        turns.append(heddle.current().iteration)
        return "research"

    g = WorkflowGraph("team").add_node("supervisor", supervisor)
    g.add_node("research", echo).add_node("FINISH", echo)
    g.add_branch("supervisor", lambda choice: choice, ["research", "FINISH"])
    g.add_edge("research", "supervisor", max_iterations=5)
    result = await WorkflowExecutor().execute(g, input="go")
    assert turns == [0, 1, 2, 3, 4]
    assert result.ok
    assert result.results["FINISH"]["error"] == "not taken: no edge from 'supervisor' was taken"


async def test_nodes_downstream_inside_a_loop_run_every_iteration() -> None:
    """A node fed by the loop's head runs once per iteration, with that iteration's content."""
    g = writer_reviewer(approve_at=1, bound=5, calls=[])
    g.add_node("log", echo).add_edge("write", "log")
    result = await WorkflowExecutor().execute(g, input="t")
    assert [r["content"] for r in result.iterations("log")] == ["draft 0", "draft 1"]


async def test_a_template_sees_the_back_edge_content_only_once_it_arrived() -> None:
    """{review} is empty in the first iteration, the review after it; {input} always."""
    tasks = []

    async def write(task: str) -> str:
        tasks.append(task)
        return "draft"

    async def review(task: str) -> str:
        return f"notes {heddle.current().iteration}"

    g = WorkflowGraph("g").add_node("write", write, task="{input}|{review}")
    g.add_node("review", review).add_edge("write", "review")
    g.add_edge("review", "write", max_iterations=2)
    await WorkflowExecutor().execute(g, input="topic")
    assert tasks == ["topic|", "topic|notes 0"]


async def test_a_thousand_iteration_loop_costs_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frontier's bookkeeping per iteration does not grow with the iterations done."""
    reads = 0

    class CountingList(list):  # type: ignore[type-arg]
        def __getitem__(self, i: Any) -> Any:
            nonlocal reads
            reads += 1
            return super().__getitem__(i)

    original = frontier_module.Frontier.__init__

    def counting_init(self: Any, *args: Any) -> None:
        original(self, *args)
        self.state = CountingList(self.state)
        self.iteration = CountingList(self.iteration)

    monkeypatch.setattr(frontier_module.Frontier, "__init__", counting_init)

    def loop(n: int) -> WorkflowGraph:
        g = WorkflowGraph("loop").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
        return g.add_edge("b", "a", max_iterations=n)

    result = await WorkflowExecutor().execute(loop(100), input=0)
    small, reads = reads, 0
    assert result.results["a"]["iteration"] == 99
    result = await WorkflowExecutor().execute(loop(1000), input=0)
    assert result.results["b"]["iteration"] == 999
    assert reads < 11 * small


async def test_a_failure_inside_a_loop_fails_the_run_and_skips_what_follows() -> None:
    """A failed iteration ends the loop; its dependents are skipped as upstream-failed."""

    async def review(task: Any) -> bool:
        if heddle.current().iteration == 1:
            raise ValueError("reviewer down")
        return False

    g = WorkflowGraph("g").add_node("write", echo).add_node("review", review)
    g.add_node("publish", echo).add_edge("write", "review")
    g.add_edge("review", "write", when=lambda ok: not ok, max_iterations=5)
    g.add_edge("review", "publish", when=bool)
    result = await WorkflowExecutor(retry=heddle.RetryPolicy(max_attempts=1)).execute(g, input=1)
    assert result.status == RunStatus.FAILED
    assert result.results["review"]["status"] == NodeStatus.FAILED
    assert result.results["review"]["iteration"] == 1
    assert result.results["publish"]["error"] == "upstream node 'review' failed"


# --- the agent context ------------------------------------------------------------------


async def test_current_gives_async_and_sync_agents_their_attempt() -> None:
    """workflow id, graph, node, agent, attempt and iteration, in a thread too."""
    seen = {}
    failed_once = []

    async def flaky(task: Any) -> str:
        ctx = heddle.current()
        if not failed_once:
            failed_once.append(ctx.attempt)
            raise ConnectionError("once")
        seen["async"] = ctx
        return "ok"

    def sync(task: Any) -> str:
        seen["sync"] = heddle.current()
        return "ok"

    g = WorkflowGraph("ctx").add_node("a", flaky).add_node("b", sync).add_edge("a", "b")
    retry = heddle.RetryPolicy(max_attempts=2, initial_delay=0.0)
    result = await WorkflowExecutor(retry=retry).execute(g, workflow_id="w-ctx")
    assert result.ok
    assert failed_once == [1]
    a, b = seen["async"], seen["sync"]
    assert (a.workflow_id, a.graph, a.node, a.attempt, a.iteration, a.item) == (
        "w-ctx", "ctx", "a", 2, 0, None
    )  # fmt: skip
    assert a.agent.endswith("flaky")
    assert (b.node, b.attempt) == ("b", 1)
    with pytest.raises(NoAttemptContext, match="only available inside an agent"):
        heddle.current()


async def test_a_task_callable_sees_the_attempt_it_builds_the_task_for() -> None:
    """heddle.current() works in a task callable too."""
    nodes = []

    def task(ctx: Any) -> str:
        nodes.append(heddle.current().node)
        return "x"

    g = WorkflowGraph("g").add_node("a", echo, task=task)
    await WorkflowExecutor().execute(g)
    assert nodes == ["a"]


# --- observers ---------------------------------------------------------------------------


async def test_an_observer_sees_every_event_with_iterations() -> None:
    """Every node event carries its iteration; the run's events come in order."""
    recorder = Recorder()
    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    await WorkflowExecutor(observers=[recorder]).execute(g, input=1)
    kinds = [e.event_type for e in recorder.events]
    assert kinds[0] == "workflow.started" and kinds[-1] == "workflow.finished"
    for event in recorder.events:
        if event.event_type.startswith("node."):
            assert event.payload["iteration"] == 0


async def test_a_raising_observer_is_logged_once_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An observer's failure never fails the work it observes."""

    class Broken:
        async def on_event(self, event: Event) -> None:
            raise RuntimeError("dashboard down")

    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo).add_edge("a", "b")
    with caplog.at_level(logging.WARNING, logger="heddle.executor"):
        result = await WorkflowExecutor(observers=[Broken()]).execute(g, input=1)
    assert result.ok
    warnings = [r for r in caplog.records if "dashboard down" in r.getMessage()]
    assert len(warnings) == 1


def test_something_that_is_not_an_observer_is_refused() -> None:
    """observers= takes RunObservers only."""
    with pytest.raises(ConfigurationError, match="RunObserver"):
        WorkflowExecutor(observers=[print])  # type: ignore[list-item]


# --- bad input ---------------------------------------------------------------------------


def test_an_async_condition_is_refused_where_it_is_written() -> None:
    """A coroutine function as when= or choose= would always be truthy: refused at once."""

    async def approved(content: Any) -> bool:
        return True

    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo)
    with pytest.raises(ConfigurationError, match="not a coroutine function"):
        g.add_edge("a", "b", when=approved)
    with pytest.raises(ConfigurationError, match="not a coroutine function"):
        g.add_branch("a", approved, ["b"])


async def test_a_condition_whose_truth_cannot_be_told_fails_the_source() -> None:
    """A value whose bool() raises is a RoutingError, not an escape from the run."""

    class Ambiguous:
        def __bool__(self) -> bool:
            raise ValueError("truth of an array is ambiguous")

    g = WorkflowGraph("g").add_node("a", echo).add_node("b", echo)
    g.add_edge("a", "b", when=lambda content: Ambiguous())
    result = await WorkflowExecutor().execute(g, input=1)
    assert result.results["a"]["error_type"] == "heddle.core.errors.RoutingError"
    assert "truth of an array is ambiguous" in (result.results["a"]["error"] or "")


async def test_asking_a_result_for_a_node_it_does_not_have_names_the_nodes() -> None:
    """content() and iterations() of an unknown node: one clear error, not a KeyError."""
    g = WorkflowGraph("g").add_node("a", echo)
    result = await WorkflowExecutor().execute(g, input=1)
    for ask in (result.content, result.iterations):
        with pytest.raises(ConfigurationError, match=r"no node 'b' in this run .*nodes: 'a'"):
            ask("b")


# --- replay ------------------------------------------------------------------------------


async def test_a_run_whose_last_node_is_replayed_after_a_live_one_ends(tmp_path: Any) -> None:
    """resume(force=True) with a node inserted before a recorded one finishes, not hangs."""
    calls: list[str] = []

    def agent(name: str) -> Any:
        async def run(task: Any) -> str:
            calls.append(name)
            return name

        run.__qualname__ = name
        return run

    db = tmp_path / "runs.db"
    first = WorkflowGraph("g").add_node("a", agent("a")).add_node("y", agent("y"))
    first.add_edge("a", "y")
    async with WorkflowExecutor(checkpointer=db) as ex:
        await ex.execute(first, input=1, workflow_id="w-replay")
    second = WorkflowGraph("g").add_node("a", agent("a")).add_node("x", agent("x"))
    second.add_node("y", agent("y")).add_edge("a", "x").add_edge("x", "y")
    calls.clear()
    async with WorkflowExecutor(checkpointer=db) as ex:
        result = await asyncio.wait_for(ex.resume("w-replay", second, force=True), 30)
    assert result.ok
    assert calls == ["x"]
    assert result.results["y"]["resumed"] is True


async def test_a_loop_inside_another_gets_its_whole_bound_each_outer_round() -> None:
    """The bound counts the target's runs since the loop was entered: each outer round anew."""

    async def step(task: Any) -> int:
        return heddle.current().iteration

    g = WorkflowGraph("nested")
    for name in ("plan", "write", "review", "judge"):
        g.add_node(name, step)
    g.add_edge("plan", "write").add_edge("write", "review")
    g.add_edge("review", "write", max_iterations=2)  # always revise: the bound ends it
    g.add_edge("review", "judge", when=lambda iteration: iteration % 2 == 1)
    g.add_edge("judge", "plan", max_iterations=3)  # always go round: the bound ends it
    recorder = Recorder()
    result = await WorkflowExecutor(observers=[recorder]).execute(g, input=0)
    assert result.ok
    assert len(result.iterations("plan")) == 3
    assert len(result.iterations("write")) == 6  # twice in each of the 3 outer rounds
    exhausted = [(e["source"], e["iteration"]) for e in recorder.of("edge.exhausted")]
    assert exhausted == [("review", 2), ("review", 4), ("review", 6), ("judge", 3)]
