"""The progress display and the console: live panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from heddle.cli._progress import RunProgress
from heddle.cli._render import format_duration, make_console, node_table, preview
from heddle.messaging.events import Event, EventType
from heddle.workflows.executor import WorkflowExecutor
from heddle.workflows.graph import WorkflowGraph
from heddle.workflows.resilience import RetryPolicy
from heddle.workflows.status import RunStatus


class _Terminal(io.StringIO):
    """A text stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


def _event(kind: EventType, **payload: object) -> Event:
    return Event(kind, payload, workflow_id="w1")


def _graph() -> WorkflowGraph:
    calls = {"flaky": 0}

    async def ok(task: object) -> str:
        return "ok"

    async def flaky(task: object) -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("503")
        return "ok"

    async def bad(task: object) -> str:
        raise ValueError("bad [red]input[/red]")

    g = WorkflowGraph("g").add_node("a", ok)
    g.add_node("flaky", flaky, retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
    g.add_node("bad", bad, retry=RetryPolicy(max_attempts=1)).add_node("after", ok)
    return g.add_edge("a", "flaky").add_edge("a", "bad").add_edge("bad", "after")


async def _follow(stream: io.StringIO, **console_kwargs: object) -> RunProgress:
    console = make_console(stream)
    for name, value in console_kwargs.items():
        setattr(console, name, value)
    graph = _graph()
    progress = RunProgress(console, graph.name, "w1", list(graph), header="header line")
    async with progress:
        await WorkflowExecutor(observers=[progress]).execute(graph, "x", workflow_id="w1")
    return progress


async def test_plain_mode_prints_one_line_per_node_event() -> None:
    """Off a terminal: header, a line per node event, a closing summary; no control codes."""
    stream = io.StringIO()
    progress = await _follow(stream)
    out = stream.getvalue()
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "header line"
    assert [line.split()[1] for line in lines[1:-1]].count("flaky") == 4  # 2 starts, retry, done
    assert "flaky  attempt 1 failed: ConnectionError: 503; retrying in 0.00s" in out
    assert "bad    failed after 1 attempt: ValueError: bad [red]input[/red]" in out
    assert "after  skipped: upstream node 'bad' failed" in out
    assert lines[-1].endswith("finished: failed (2 done, 1 failed, 1 skipped, 1 retry)")
    assert progress.counts["done"] == 2 and progress.retries == 1


async def test_terminal_mode_draws_a_live_panel_and_prints_only_what_needs_attention() -> None:
    """On a terminal: ANSI output, the final panel with the counts, retries and failures above."""
    stream = _Terminal()
    progress = await _follow(stream, width=100)
    out = stream.getvalue()
    assert "\x1b[" in out
    assert "flaky: attempt 1 failed: ConnectionError: 503" in out
    assert "bad: failed after 1 attempt" in out
    assert "a: started" not in out  # progress is the panel's job, not scrolling lines
    assert "FAILED" in out  # the final panel's status
    assert "4/4" in out
    assert progress.status == RunStatus.FAILED


def test_panel_of_a_big_graph_shows_only_the_nodes_in_flight() -> None:
    """Past 12 nodes the panel lists the running ones, at most 8, and counts the rest."""
    console = make_console(_Terminal())
    console.width = 100
    names = [f"n{i}" for i in range(30)]
    progress = RunProgress(console, "big", "w1", names, done=["n0"])
    for name in names[1:20]:
        progress.follow(_event(EventType.NODE_STARTED, node=name, attempt=1))
    progress.follow(_event(EventType.NODE_RETRYING, node="n1", attempt=1, error="E", delay=1.0))
    progress.follow(_event(EventType.NODE_STARTED, node="unknown", attempt=2))
    progress.follow(_event(EventType.CIRCUIT_OPENED, agent="ok", node="n2", failures=5))
    with console.capture() as captured:
        console.print(progress.render())
    text = re.sub(r"\x1b\[[0-9;]*m", "", captured.get())
    assert "pending 11" in text and "running 19" in text and "done 1" in text
    assert "and 11 more running" in text
    assert "n19" not in text
    assert progress.counts["running"] == 19  # n2..n19 and the unknown node
    assert "circuit breaker of agent 'ok' opened" in console.file.getvalue()  # type: ignore[attr-defined]
    assert "RunProgress('big', 'w1'" in repr(progress)


async def test_cancelled_run_leaves_a_cancelled_panel() -> None:
    """An exception out of the run closes the panel with the status 'cancelled'."""
    console = make_console(_Terminal())
    progress = RunProgress(console, "g", "w1", ["a"])
    with pytest.raises(KeyboardInterrupt):
        async with progress:
            raise KeyboardInterrupt
    assert progress.status == RunStatus.CANCELLED
    assert "CANCELLED" in console.file.getvalue()  # type: ignore[attr-defined]


def test_console_is_plain_off_a_terminal_even_with_force_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pipe never gets ANSI codes: FORCE_COLOR does not override the TTY test."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    stream = io.StringIO()
    console = make_console(stream)
    console.print("[red]red[/red]")
    assert not console.is_terminal
    assert stream.getvalue() == "red\n"


def test_console_on_a_terminal_respects_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: a terminal console keeps its cursor control but prints no colours."""
    monkeypatch.setenv("NO_COLOR", "1")
    stream = _Terminal()
    console = make_console(stream)
    console.print("[red]red[/red]")
    assert console.is_terminal and console.no_color
    assert "\x1b[31m" not in stream.getvalue()


def test_console_without_isatty_is_plain() -> None:
    """A stream that cannot answer isatty (closed, or no such method) counts as a pipe."""
    stream = io.StringIO()
    stream.close()
    assert not make_console(stream).is_terminal


def test_broken_pipe_silences_the_console_instead_of_exiting(tmp_path: Path) -> None:
    """The reader of stdout went away: output stops, nothing raises (a durable run finishes)."""
    with (tmp_path / "out.txt").open("w") as stream:
        console = make_console(stream)
        console.on_broken_pipe()
        assert console.quiet
        console.print("not written")
    assert os.path.getsize(tmp_path / "out.txt") == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("  two\n lines ", "two\\n lines"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ({"k": [1, 2]}, '{"k": [1, 2]}'),
        ("x" * 70, "x" * 59 + "…"),
        ({1, 2}, "[1, 2]"),
    ],
)
def test_preview_is_one_short_line(value: object, expected: str) -> None:
    """Strings as they are, other values as JSON, line breaks escaped, cut with an ellipsis."""
    assert preview(value) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "-"), (0.123, "0.12s"), (12.34, "12.3s"), (245, "4m05s"), (7380, "2h03m")],
)
def test_format_duration(seconds: float | None, expected: str) -> None:
    """Durations read at a glance, from milliseconds to hours."""
    assert format_duration(seconds) == expected


def test_node_table_shows_pending_nodes_and_errors() -> None:
    """A node without a result is pending; a failed node shows its error."""
    console = make_console(io.StringIO())
    table = node_table(
        ["a", "b"],
        {"a": {"content": None, "status": "failed", "error": "E: x", "attempts": 3, "duration": 1}},
    )
    with console.capture() as captured:
        console.print(table)
    rows = [line.split() for line in captured.get().splitlines()[2:]]
    assert rows == [["a", "failed", "3", "1.00s", "E:", "x"], ["b", "pending", "-", "-"]]
