"""Map nodes in the CLI: one progress entry and one table row per map, its items tallied.

Most events and results are built by hand, as the executor makes them: the
map's own ``node.started`` with ``items`` (how many), then per item
``node.started`` / ``node.retrying`` / ``node.succeeded`` / ``node.failed``
with an ``item`` key, then the node's own end; a map node's result carries
``items``, one ``{"status", "error", "attempts"}`` entry per item.
"""

from __future__ import annotations

import io
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from rich.console import RenderableType

from heddle.cli import cli
from heddle.cli._inspect import print_trace
from heddle.cli._progress import RunProgress
from heddle.cli._render import items_tally, make_console, node_json, node_table
from heddle.messaging.events import Event
from heddle.workflows import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.workflows.checkpoint import RunRecord
from heddle.workflows.status import NodeStatus, RunStatus

MAP_ERROR = (
    "MapError: map node 'summarise': 2 of 20 items failed (items 11, 14); "
    "item 11: ValueError: not a page"
)
TRACE_11 = 'Traceback (most recent call last):\n  File "a.py", line 3\nValueError: not a page\n'
TRACE_14 = 'Traceback (most recent call last):\n  File "a.py", line 3\nValueError: no title\n'


class _Terminal(io.StringIO):
    """A text stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


def _event(kind: str, **payload: object) -> Event:
    return Event(kind, payload, workflow_id="w1")


def _progress(stream: io.StringIO) -> RunProgress:
    console = make_console(stream)
    console.width = 100
    return RunProgress(console, "digest", "w1", ["find", "summarise", "reduce"])


def _lines(stream: io.StringIO) -> list[str]:
    """The plain lines without their elapsed time."""
    return [line.split(maxsplit=1)[1] for line in stream.getvalue().splitlines()]


def _plain(renderable: RenderableType) -> str:
    console = make_console(io.StringIO())
    console.width = 120
    with console.capture() as captured:
        console.print(renderable)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", captured.get())


def _map_events(progress: RunProgress) -> None:
    """A map of 20 items: 12 succeed, item 12 and 13 retry, item 14 fails after two attempts."""

    def item(kind: str, k: int, **more: object) -> None:
        progress.follow(_event(kind, node="summarise", iteration=0, item=k, **more))

    progress.follow(_event("node.started", node="summarise", attempt=1, iteration=0, items=20))
    for k in range(15):
        item("node.started", k, attempt=1)
    for k in range(12):
        item("node.succeeded", k, attempts=1, duration=0.1)
    for k in (12, 13):
        item("node.retrying", k, attempt=1, error="E: 503", delay=0.5)
    item("node.failed", 14, attempts=2, error="ValueError: no title")


def _item(status: NodeStatus, attempts: int = 1, error: str | None = None, **more: Any) -> Any:
    return {"status": status, "error": error, "attempts": attempts} | more


def _map_result(*, failed: bool) -> Any:
    items = [_item(NodeStatus.SUCCEEDED) for _ in range(20)]
    contents: list[Any] = [f"summary {k}" for k in range(20)]
    result: dict[str, Any] = {
        "status": NodeStatus.SUCCEEDED,
        "error": None,
        "attempts": 21,
        "duration": 1.5,
        "iteration": 0,
    }
    if failed:
        for k, error, trace in (
            (11, "ValueError: not a page", TRACE_11),
            (14, "ValueError: no title", TRACE_14),
        ):
            items[k] = _item(NodeStatus.FAILED, 2, error, error_type="ValueError", traceback=trace)
            contents[k] = None
        result |= {
            "status": NodeStatus.FAILED,
            "error": MAP_ERROR,
            "error_type": "heddle.core.errors.MapError",
            "traceback": TRACE_11,
        }
    return result | {"content": contents, "items": items}


# -- live progress -----------------------------------------------------------------------


def test_plain_progress_prints_the_maps_start_its_failed_items_and_its_end() -> None:
    """'started: 20 items', a line per failed item, the end with its tally; none per success."""
    stream = io.StringIO()
    progress = _progress(stream)
    _map_events(progress)
    for k in (12, 13, *range(15, 19)):
        progress.follow(
            _event("node.succeeded", node="summarise", attempts=2, duration=0.1, item=k)
        )
    progress.follow(_event("node.failed", node="summarise", attempts=1, error="E: x", item=19))
    progress.follow(
        _event("node.failed", node="summarise", attempts=22, error=MAP_ERROR, duration=1.5)
    )
    assert _lines(stream) == [
        "summarise  started: 20 items",
        "summarise  item 14 failed after 2 attempts: ValueError: no title",
        "summarise  item 19 failed after 1 attempt: E: x",
        f"summarise  failed in 1.50s (18/20 items, 2 failed, 2 retries): {MAP_ERROR}",
    ]


def test_item_events_move_the_maps_tally_not_the_node_counts() -> None:
    """Items are not nodes: the map is one running node; item retries add to the run's retries."""
    progress = _progress(io.StringIO())
    _map_events(progress)
    assert progress.counts["running"] == 1 and progress.counts["pending"] == 2
    assert progress.counts["done"] == 0 and progress.counts["failed"] == 0
    assert progress.retries == 2
    assert progress.detail["summarise"] == "12/20 items, 1 failed, 2 retries"
    progress.follow(_event("node.succeeded", node="summarise", attempts=20, duration=1.0))
    assert progress.counts["done"] == 1 and progress.counts["running"] == 0
    assert progress.summary() == "1 done, 2 pending, 2 retries"


def test_live_panel_shows_the_map_as_one_entry_and_prints_only_failed_items() -> None:
    """The panel reads 'summarise running 12/20 items, ...'; only the failed item scrolls by."""
    stream = _Terminal()
    progress = _progress(stream)
    _map_events(progress)
    panel = _plain(progress.render())
    assert re.search(r"summarise +running +12/20 items, 1 failed, 2 retries", panel)
    assert "0/3" in panel and "running 1" in panel and "retries 2" in panel
    scrolled = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert scrolled == "summarise: item 14 failed after 2 attempts: ValueError: no title\n"


def test_a_succeeded_map_counts_every_item_even_those_recorded_earlier() -> None:
    """A resumed map sends no events for items committed before: its end says all succeeded."""
    stream = io.StringIO()
    progress = _progress(stream)
    progress.follow(_event("node.started", node="summarise", attempt=1, items=3))
    progress.follow(_event("node.succeeded", node="summarise", attempts=1, duration=0.1, item=2))
    assert progress.detail["summarise"] == "1/3 items"
    progress.follow(
        _event("node.succeeded", node="summarise", attempts=3, duration=0.5, taken=["reduce"])
    )
    assert _lines(stream)[-1] == "summarise  done in 0.50s (3 items) → reduce"
    assert progress.detail["summarise"] == "0.50s (3 items) → reduce"


def test_a_map_in_a_loop_tallies_each_run_apart() -> None:
    """The map's second run ('summarise #2') starts from 0/20 again."""
    stream = io.StringIO()
    progress = _progress(stream)
    _map_events(progress)
    progress.follow(
        _event("node.failed", node="summarise", attempts=21, error=MAP_ERROR, duration=1.0)
    )
    progress.follow(_event("node.started", node="summarise", attempt=1, items=20, iteration=1))
    assert progress.detail["summarise"] == "0/20 items"
    assert _lines(stream)[-1] == "summarise #2  started: 20 items"
    assert progress.counts["running"] == 1 and progress.counts["failed"] == 0


def test_an_item_event_before_its_maps_start_is_kept() -> None:
    """An observer ahead may delay the map's node.started: items seen first still count."""
    progress = _progress(io.StringIO())
    progress.follow(_event("node.started", node="summarise", attempt=1, item=0))
    progress.follow(_event("node.succeeded", node="summarise", attempts=1, duration=0.1, item=0))
    assert progress.counts["running"] == 1
    progress.follow(_event("node.started", node="summarise", attempt=1, items=4))
    assert progress.detail["summarise"] == "1/4 items"


async def test_a_real_map_with_a_flaky_and_a_failing_item_reads_as_a_few_lines() -> None:
    """A real run: the start, the failed item, the map's end; the flaky item is a retry."""
    tries: dict[int, int] = {}

    async def find(task: object) -> list[int]:
        return list(range(5))

    async def each(k: int) -> int:
        tries[k] = tries.get(k, 0) + 1
        if k == 1 and tries[k] == 1:
            raise ConnectionError("503")
        if k == 3:
            raise ValueError(f"bad item {k}")
        return k * 10

    g = WorkflowGraph("digest").add_node("find", find)
    g.add_map("each", each, retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
    g.add_edge("find", "each")
    stream = io.StringIO()
    progress = RunProgress(make_console(stream), g.name, "w1", list(g))
    async with progress:
        result = await WorkflowExecutor(2, observers=[progress]).execute(g, workflow_id="w1")
    assert result.status == RunStatus.FAILED
    lines = [re.sub(r"\d+\.\d\ds", "T", line) for line in _lines(stream)]
    assert lines == [
        "find  started",
        "find  done in T",
        "each  started: 5 items",
        "each  item 3 failed after 2 attempts: ValueError: bad item 3",
        "each  failed in T (4/5 items, 1 failed, 2 retries): MapError: map node 'each': "
        "1 of 5 items failed (items 3); item 3: ValueError: bad item 3",
        "finished: failed (1 done, 1 failed, 2 retries)",
    ]
    assert progress.counts["failed"] == 1 and progress.counts["done"] == 1


# -- the result table, its JSON and --trace ---------------------------------------------------


def test_items_tally_is_short_when_every_item_succeeded() -> None:
    """'20 items', else 'done/total items' with the failures and retries that happened."""
    assert items_tally(20, 20) == "20 items"
    assert items_tally(0, 0) == "0 items"
    assert items_tally(19, 20, 1) == "19/20 items, 1 failed"
    assert items_tally(12, 20, 0, 1) == "12/20 items, 1 retry"


def test_table_tallies_a_maps_items_before_its_content() -> None:
    """A succeeded map's result cell starts '20 items', then the list of contents."""
    lines = _plain(node_table(["summarise"], {"summarise": _map_result(failed=False)}))
    row = next(line for line in lines.splitlines() if line.startswith("summarise"))
    assert row.split()[:4] == ["summarise", "succeeded", "21", "1.50s"]
    assert '20 items  ["summary 0", "summary 1"' in row


def test_table_shows_a_failed_maps_tally_and_its_first_failed_items_error() -> None:
    """'18/20 items, 2 failed  item 11: ValueError: not a page', not the MapError's preamble."""
    lines = _plain(node_table(["summarise"], {"summarise": _map_result(failed=True)}))
    row = next(line for line in lines.splitlines() if line.startswith("summarise"))
    assert "18/20 items, 2 failed  item 11: ValueError: not a page" in row


def test_node_json_lists_a_maps_items_as_stored() -> None:
    """--json has 'items', one entry per item, failed ones with their traceback; others none."""
    doc = node_json("summarise", _map_result(failed=True))
    assert len(doc["items"]) == 20
    assert doc["items"][14] == _item(
        NodeStatus.FAILED, 2, "ValueError: no title", error_type="ValueError", traceback=TRACE_14
    )
    assert json.loads(json.dumps(doc["items"][0])) == {
        "status": "succeeded",
        "error": None,
        "attempts": 1,
    }
    assert "items" not in node_json("find", {"status": NodeStatus.SUCCEEDED})


def _record() -> RunRecord:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    nodes = ("find", "summarise")
    return RunRecord("w1", "digest", "fp", None, nodes, RunStatus.FAILED, started, started)


def test_trace_of_a_failed_map_names_the_item_whose_traceback_it_shows() -> None:
    """The heading names the item, its attempts and its exception; the other failures follow."""
    stream = io.StringIO()
    print_trace(
        make_console(stream), _record(), {"summarise": _map_result(failed=True)}, "summarise"
    )
    assert stream.getvalue().splitlines() == [
        "node 'summarise' of run w1 failed: 2 of 20 items failed; item 11 failed after "
        "2 attempts, raising ValueError; its traceback:",
        *TRACE_11.splitlines(),
        "(item 14 failed too: show --json lists their tracebacks)",
    ]


def test_trace_of_a_map_that_failed_on_its_own_reads_as_any_node() -> None:
    """Every item succeeded (a condition after the map raised): the node's own traceback."""
    result = _map_result(failed=False) | {
        "status": NodeStatus.FAILED,
        "error": "RoutingError: node 'summarise': ...",
        "error_type": "heddle.core.errors.RoutingError",
        "traceback": "Traceback ...\nKeyError: 'x'\n",
    }
    stream = io.StringIO()
    print_trace(make_console(stream), _record(), {"summarise": result}, "summarise")
    assert stream.getvalue().startswith(
        "node 'summarise' of run w1 failed after 21 attempts, raising "
        "heddle.core.errors.RoutingError; its traceback:\nTraceback ...\nKeyError: 'x'"
    )


MAP_FILE = """\
import heddle
from heddle import RetryPolicy, WorkflowGraph

async def find(task):
    return ["a", "b", "c"]

async def each(page):
    if heddle.current().item == 1:
        raise ValueError(f"cannot read {page}")
    return page.upper()

graph = WorkflowGraph("digest").add_node("find", find)
graph.add_map("each", each, retry=RetryPolicy(max_attempts=1)).add_edge("find", "each")
"""


def test_run_debug_and_show_name_the_failed_item(tmp_path: Path) -> None:
    """heddle run --debug heads the traceback 'traceback of each, item 1'; show tallies the map."""
    (tmp_path / "digest.py").write_text(MAP_FILE)
    db = str(tmp_path / "runs.db")
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        run = CliRunner().invoke(
            cli, ["run", "digest.py", "--db", db, "--workflow-id", "m1", "--debug"]
        )
        show = CliRunner().invoke(cli, ["show", "m1", "--db", db])
        shown = CliRunner().invoke(cli, ["show", "m1", "--db", db, "--json"])
    finally:
        os.chdir(old)
    assert run.exit_code == 1
    assert "each  started: 3 items" in run.output
    assert "traceback of each, item 1 (ValueError):" in run.output
    assert "2/3 items, 1 failed  item 1: ValueError" in show.output  # cut at 80 columns
    (each,) = [n for n in json.loads(shown.output)["nodes"] if n["node"] == "each"]
    assert [e["status"] for e in each["items"]] == ["succeeded", "failed", "succeeded"]


async def test_a_resumed_map_starts_its_tally_from_the_items_recorded_done(
    tmp_path: Path,
) -> None:
    """The map's start says how many items a resume replays; the tally counts on from there."""
    down = {2}

    async def three(task: Any) -> list[int]:
        return [0, 1, 2]

    async def item(k: int) -> int:
        if k in down:
            raise ValueError("down")
        return k

    g = WorkflowGraph("g").add_node("find", three)
    g.add_map("each", item, retry=RetryPolicy(max_attempts=1)).add_edge("find", "each")
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        assert not (await ex.execute(g, workflow_id="r-1")).ok
        down.clear()
        stream = io.StringIO()
        progress = _progress(stream)
        ex.observers = (progress,)
        assert (await ex.resume("r-1", g)).ok
    started = [line for line in _lines(stream) if "started: 3 items" in line]
    assert len(started) == 1 and started[0].endswith("started: 3 items, 2 recorded done")
    assert progress.items["each"].done == 3
