"""Loops and branches in the CLI: later runs numbered, branches taken, not-taken skips, loop bounds.

The results and events are built by hand, as the executor makes them: a
result's ``iteration`` and ``taken``, the ``iteration`` of every node event,
``taken`` on node.succeeded, and ``edge.exhausted``.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, RenderableType

from heddle.cli._inspect import print_run, print_trace
from heddle.cli._progress import RunProgress
from heddle.cli._render import make_console, node_json, node_table
from heddle.messaging.events import Event
from heddle.workflows.checkpoint import RunRecord
from heddle.workflows.status import NodeStatus, RunStatus

NOT_TAKEN_REASON = "not taken: no edge from 'triage' was taken"
LOOP_BOUND = {"source": "review", "target": "write", "iteration": 2, "max_iterations": 3}


class _Terminal(io.StringIO):
    """A text stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


def _result(status: NodeStatus, **more: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "content": None,
        "status": status,
        "error": None,
        "attempts": 1,
        "duration": 0.1,
        "iteration": 0,
    }
    return result | more


RESULTS: dict[str, Any] = {
    "triage": _result(NodeStatus.SUCCEEDED, content="a billing question", taken=["billing"]),
    "billing": _result(NodeStatus.SUCCEEDED, content="refunded"),
    "tech": _result(NodeStatus.SKIPPED, error=NOT_TAKEN_REASON, attempts=0, duration=0.0),
    "write": _result(NodeStatus.SUCCEEDED, content="draft 3", iteration=2),
    "review": _result(NodeStatus.SUCCEEDED, content="fine", iteration=2, taken=[]),
    "bad": _result(NodeStatus.FAILED, error="ValueError: no", iteration=1),
    "after": _result(NodeStatus.SKIPPED, error="upstream node 'bad' failed", attempts=0),
}


def _plain(renderable: RenderableType) -> list[str]:
    console = make_console(io.StringIO())
    console.width = 100
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().splitlines()


def _ansi(renderable: RenderableType) -> str:
    console = Console(
        file=io.StringIO(), force_terminal=True, color_system="standard", width=100, no_color=False
    )
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


def _row(lines: list[str], node: str) -> str:
    return next(line for line in lines if line.startswith(node + " "))


def _event(kind: str, **payload: object) -> Event:
    return Event(kind, payload, workflow_id="w1")


def _progress(stream: io.StringIO, nodes: list[str]) -> RunProgress:
    console = make_console(stream)
    console.width = 100
    return RunProgress(console, "g", "w1", nodes)


# -- the result table and its JSON ---------------------------------------------------------


def test_table_numbers_the_latest_run_of_a_node_that_ran_again() -> None:
    """A node whose latest result is iteration 2 is 'write #3'; a node that ran once is its name."""
    lines = _plain(node_table(list(RESULTS), RESULTS))
    assert _row(lines, "write").split()[:3] == ["write", "#3", "succeeded"]
    assert _row(lines, "bad").split()[:3] == ["bad", "#2", "failed"]
    assert _row(lines, "billing").split()[:2] == ["billing", "succeeded"]


def test_table_shows_the_branch_a_routing_node_took_before_its_content() -> None:
    """taken ["billing"] reads '→ billing', taken [] reads '→ (none)'; other nodes show no arrow."""
    lines = _plain(node_table(list(RESULTS), RESULTS))
    assert "→ billing  a billing question" in _row(lines, "triage")
    assert "→ (none)  fine" in _row(lines, "review")
    assert "→" not in _row(lines, "billing")


def test_table_shows_a_not_taken_skip_dim_and_a_failure_skip_as_a_warning() -> None:
    """The graph's choice is dim; a skip caused by a failure keeps the skipped colour (yellow)."""
    lines = _ansi(node_table(list(RESULTS), RESULTS)).splitlines()
    tech, after = _row(lines, "tech"), _row(lines, "after")
    assert "\x1b[2mskipped" in tech and f"\x1b[2m{NOT_TAKEN_REASON}" in tech
    assert "\x1b[33mskipped" in after and "\x1b[2m" not in after


def test_node_json_has_iteration_and_taken_when_the_result_has_them() -> None:
    """iteration and taken are copied from the result; a plain or pending node has neither key."""
    review = node_json("review", RESULTS["review"])
    assert review["iteration"] == 2 and review["taken"] == []
    assert node_json("triage", RESULTS["triage"])["taken"] == ["billing"]
    plain = {k: v for k, v in RESULTS["billing"].items() if k != "iteration"}
    assert "iteration" not in node_json("billing", plain) and "taken" not in node_json("b", plain)
    assert node_json("x", None)["status"] == "pending" and "iteration" not in node_json("x", None)


# -- heddle show -----------------------------------------------------------------------------


def _record(status: RunStatus) -> RunRecord:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return RunRecord("w1", "g", "fp", None, tuple(RESULTS), status, started, started)


def test_show_prints_the_table_and_the_loops_cut_short_by_their_bound() -> None:
    """An edge.exhausted event recorded for the run reads 'review → write: loop bound reached'."""
    stream = io.StringIO()
    events = [{"event_type": "edge.exhausted", "payload": LOOP_BOUND}]
    print_run(make_console(stream), _record(RunStatus.SUCCEEDED), RESULTS, events, None)
    out = stream.getvalue()
    assert "g'  succeeded" in out and "write #3" in out
    assert "review → write: loop bound reached (3 iterations)" in out
    assert "resume it" not in out


def test_show_trace_names_the_run_of_the_node_it_speaks_of() -> None:
    """--trace of a node that ran again says which run of it ended that way: 'node 'bad' #2'."""
    stream = io.StringIO()
    print_trace(make_console(stream), _record(RunStatus.FAILED), RESULTS, "bad")
    assert stream.getvalue().startswith("node 'bad' #2 of run w1 failed without a recorded")


# -- live progress ---------------------------------------------------------------------------


def test_plain_progress_names_later_runs_branches_and_not_taken_skips() -> None:
    """A line per event: 'write #2' for iteration 1, '→ billing' after a route, 'not taken: ...'."""
    stream = io.StringIO()
    progress = _progress(stream, ["triage", "billing", "tech", "write"])
    progress.follow(_event("node.succeeded", node="triage", duration=0.1, taken=["billing"]))
    progress.follow(_event("node.skipped", node="tech", reason=NOT_TAKEN_REASON, iteration=0))
    progress.follow(_event("node.started", node="write", attempt=1, iteration=1))
    progress.follow(_event("node.succeeded", node="write", duration=0.1, iteration=1, taken=[]))
    lines = [line.split(maxsplit=1)[1] for line in stream.getvalue().splitlines()]
    assert lines == [
        "triage   done in 0.10s → billing",
        f"tech     {NOT_TAKEN_REASON}",
        "write #2  started",
        "write #2  done in 0.10s → (none)",
    ]


def test_progress_says_when_a_loop_stopped_at_its_bound() -> None:
    """edge.exhausted prints 'review → write: loop bound reached (3 iterations)', plain or live."""
    for stream in (io.StringIO(), _Terminal()):
        progress = _progress(stream, ["write", "review"])
        progress.follow(_event("edge.exhausted", **LOOP_BOUND))
        assert "review → write: loop bound reached (3 iterations)" in stream.getvalue()
        assert progress.counts["done"] == 0


def test_a_node_running_again_is_running_not_done_twice() -> None:
    """Counts are by where each node stands now: done, then running again, then done once more."""
    progress = _progress(io.StringIO(), ["write", "review"])
    progress.follow(_event("node.started", node="write", attempt=1, iteration=0))
    progress.follow(_event("node.succeeded", node="write", duration=0.1, iteration=0))
    assert (progress.counts["done"], progress.counts["running"]) == (1, 0)
    progress.follow(_event("node.started", node="write", attempt=1, iteration=1))
    assert (progress.counts["done"], progress.counts["running"]) == (0, 1)
    progress.follow(_event("node.succeeded", node="write", duration=0.1, iteration=1))
    assert (progress.counts["done"], progress.counts["pending"]) == (1, 1)
    assert progress.summary() == "1 done, 1 pending"


def test_not_taken_skips_are_counted_apart_from_failure_skips() -> None:
    """A not-taken skip counts as 'not taken', a skip after a failure as 'skipped'."""
    progress = _progress(io.StringIO(), ["tech", "after"])
    progress.follow(_event("node.skipped", node="tech", reason=NOT_TAKEN_REASON, iteration=0))
    progress.follow(_event("node.skipped", node="after", reason="upstream node 'bad' failed"))
    assert progress.summary() == "0 done, 1 skipped, 1 not taken"


def test_live_panel_shows_the_run_number_the_route_and_a_bar_over_the_nodes() -> None:
    """The panel lists 'write #2' running, '→ billing' after triage, and the bar counts nodes."""
    stream = _Terminal()
    progress = _progress(stream, ["triage", "tech", "write"])
    progress.follow(_event("node.succeeded", node="triage", duration=0.1, taken=["billing"]))
    progress.follow(_event("node.skipped", node="tech", reason=NOT_TAKEN_REASON, iteration=0))
    progress.follow(_event("node.succeeded", node="write", duration=0.1, iteration=0))
    progress.follow(_event("node.started", node="write", attempt=1, iteration=1))
    text = re.sub(r"\x1b\[[0-9;]*m", "", _ansi(progress.render()))
    assert "2/3" in text
    assert "done 1  failed 0  skipped 0  not taken 1" in text
    assert "0.10s → billing" in text
    assert re.search(r"tech +not taken +no edge from 'triage' was taken", text)
    assert re.search(r"write #2 +running", text)
    assert stream.getvalue() == ""  # progress is the panel's job: nothing scrolled by


def test_final_panel_reads_the_run_status() -> None:
    """workflow.finished with RunStatus.SUCCEEDED reads OK; another status is shown in capitals."""
    for status, shown in [(RunStatus.SUCCEEDED, "OK"), (RunStatus.FAILED, "FAILED")]:
        progress = _progress(_Terminal(), ["a"])
        progress.follow(_event("workflow.finished", status=status))
        assert _ansi(progress.render()).count(shown) == 1


def test_plain_progress_of_a_loop_keeps_one_column_for_later_runs() -> None:
    """With loops=True the name column leaves room for "#N": every line starts alike."""
    stream = io.StringIO()
    progress = RunProgress(make_console(stream), "g", "w1", ["write", "review"], loops=True)
    for iteration in (0, 1, 2):
        progress.follow(_event("node.started", node="write", attempt=1, iteration=iteration))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert len({line.index("started") for line in lines}) == 1, lines
