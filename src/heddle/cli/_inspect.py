"""Reading recorded runs for ``heddle runs`` and ``heddle show``: never writing a database.

Both open the database read-only (``SQLiteCheckpointer(readonly=True)``): they
never create, upgrade or write the file. A database that does not exist holds
no runs; neither command opens it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from heddle.cli._errors import usage_error
from heddle.cli._render import (
    EDGE_EXHAUSTED,
    STATUS_STYLES,
    failed_items,
    format_duration,
    format_time,
    iteration_of,
    jsonable,
    loop_bound_text,
    node_json,
    node_label,
    node_table,
    preview,
    visible,
)
from heddle.cli._running import db_args
from heddle.core.errors import RunNotFoundError
from heddle.workflows.checkpoint import RunRecord, SQLiteCheckpointer
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus, RunStatus

__all__ = [
    "has_runs",
    "print_run",
    "print_trace",
    "read_run",
    "read_runs",
    "record_json",
    "show_json",
]

#: ``show --trace`` with an unknown node lists the run's nodes up to this many.
_NODES_LISTED = 12


def has_runs(path: Path) -> bool:
    """Whether ``path`` may hold runs (a read-only open refuses a missing file)."""
    return path.exists()


def record_json(record: RunRecord, path: Path, *, with_input: bool = True) -> dict[str, Any]:
    """One run as ``show --json`` prints it; ``runs --json`` without the input (not read)."""
    doc: dict[str, Any] = {
        "workflow_id": record.workflow_id,
        "graph": record.graph_name,
        "status": record.state,
        "owner": record.lease.owner if record.lease else None,
        "lease_until": record.lease.until.isoformat() if record.lease else None,
        "fingerprint": record.fingerprint,
        "input": jsonable(record.input),
        "nodes": list(record.nodes),
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "duration": record.duration,
        "nodes_done": record.nodes_done,
        "database": str(path),
    }
    if not with_input:
        del doc["input"]
    return doc


async def read_runs(
    path: Path, limit: int, *, status: RunStatus | None, graph: str | None
) -> list[RunRecord]:
    """The latest ``limit`` runs in ``path`` with that status (as seen now) and graph name."""
    async with SQLiteCheckpointer(path, readonly=True) as checkpointer:
        return await checkpointer.list_runs(limit, status=status, graph=graph)


async def read_run(
    path: Path, run_id: str
) -> tuple[RunRecord, dict[str, NodeResult], list[dict[str, Any]]]:
    """Run ``run_id``: its record, its node results and its events (RunNotFoundError if none)."""
    async with SQLiteCheckpointer(path, readonly=True) as checkpointer:
        record = await checkpointer.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id, str(path))
        results = dict(await checkpointer.node_results(run_id))
        events = await checkpointer.events(run_id)
    return record, results, events


def show_json(
    record: RunRecord,
    results: dict[str, NodeResult],
    events: list[dict[str, Any]],
    path: Path,
) -> dict[str, Any]:
    """Everything recorded of one run, as ``show --json`` prints it."""
    return {
        "run": record_json(record, path),
        "nodes": [node_json(name, results.get(name)) for name in record.nodes],
        "events": events,
    }


def print_run(
    console: Console,
    record: RunRecord,
    results: dict[str, NodeResult],
    events: list[dict[str, Any]],
    db: Path | None,
) -> None:
    """``heddle show``: the run's header, its nodes in a table, loops cut short, how to resume it.

    A node's row is its latest iteration (``write #3``).
    """
    head = Text()
    head.append(visible(f"{record.workflow_id}  graph {record.graph_name!r}  ", one_line=True))
    head.append(record.state, style=STATUS_STYLES.get(record.state, ""))
    if record.state == RunStatus.RUNNING and record.lease is not None:
        head.append(visible(f" by {record.lease.owner}", one_line=True))
    console.print(head, soft_wrap=True)
    console.print(
        Text(
            f"started {format_time(record.started_at)}, finished {format_time(record.finished_at)}"
            f", took {format_duration(record.duration)}; {len(events)} events recorded"
        ),
        soft_wrap=True,
    )
    if record.input is not None:
        console.print(Text(f"input: {preview(record.input, 100)}"), soft_wrap=True)
    console.print(node_table(record.nodes, results))
    for event in events:
        if event.get("event_type") == EDGE_EXHAUSTED:
            payload = event.get("payload") or {}
            console.print(Text(loop_bound_text(payload), style="yellow"), soft_wrap=True)
    if record.state not in (RunStatus.SUCCEEDED, RunStatus.RUNNING):
        console.print(
            Text(
                visible(f"resume it: heddle resume {record.workflow_id} FILE.py[:VAR]{db_args(db)}")
            ),
            soft_wrap=True,
        )


def print_trace(
    console: Console, record: RunRecord, results: dict[str, NodeResult], node: str
) -> None:
    """``heddle show RUN --trace NODE``: the node's recorded traceback, or why there is none."""
    if node not in record.nodes:
        close = difflib.get_close_matches(node, record.nodes, n=3)
        if close:
            known = f"; did you mean {' or '.join(map(repr, close))}?"
        else:
            listed = ", ".join(record.nodes[:_NODES_LISTED])
            more = len(record.nodes) - _NODES_LISTED
            known = f" (its nodes: {listed}{f', and {more} more' if more > 0 else ''})"
        raise usage_error(f"run {record.workflow_id!r} has no node {node!r}{known}")
    result = results.get(node)
    name = f"node {node_label(repr(node), iteration_of(result or {}))} of run {record.workflow_id}"
    if result is None:
        line = f"{name} has no result yet (pending): no traceback recorded"
    elif _print_item_trace(console, result, name):
        return
    elif result.get("traceback"):
        kind = result.get("error_type") or "an exception"
        attempts = result.get("attempts", 0)
        console.print(
            Text(
                visible(
                    f"{name} {result['status']} after {attempts} "
                    f"attempt{'s' if attempts != 1 else ''}, raising {kind}; its traceback:",
                    one_line=True,
                ),
                style=STATUS_STYLES.get(str(result["status"]), ""),
            ),
            soft_wrap=True,
        )
        console.print(Text(visible(str(result["traceback"]).rstrip("\n"))), soft_wrap=True)
        return
    elif result["status"] == NodeStatus.FAILED:
        line = f"{name} failed without a recorded traceback: {result.get('error')}"
    else:
        why = f": {result['error']}" if result.get("error") else ""
        line = f"{name} {result['status']}{why}; no traceback recorded (it raised nothing)"
    console.print(Text(visible(line, one_line=True)), soft_wrap=True)


def _print_item_trace(console: Console, result: NodeResult, name: str) -> bool:
    """A map node that failed because of its items: the traceback it carries is an item's, so
    say which; False if ``result`` is not that."""
    traceback = result.get("traceback")
    failed = failed_items(result) if traceback else []
    traced = next((f for f in failed if f[1].get("traceback") == traceback), None)
    if traced is None:
        return False
    k, entry = traced
    attempts = entry.get("attempts", 0)
    total = len(result.get("items") or ())
    head = (
        f"{name} failed: {len(failed)} of {total} items failed; item {k} failed after "
        f"{attempts} attempt{'s' if attempts != 1 else ''}, raising "
        f"{entry.get('error_type') or 'an exception'}; its traceback:"
    )
    red = STATUS_STYLES[NodeStatus.FAILED]
    console.print(Text(visible(head, one_line=True), style=red), soft_wrap=True)
    console.print(Text(visible(str(traceback).rstrip("\n"))), soft_wrap=True)
    others = [j for j, _ in failed if j != k]
    if others:
        shown = ", ".join(map(str, others[:10])) + (", ..." if len(others) > 10 else "")
        them = f"item {shown} failed too" if len(others) == 1 else f"items {shown} failed too"
        console.print(
            Text(f"({them}: show --json lists their tracebacks)", style="dim"), soft_wrap=True
        )
    return True
