"""The ``heddle`` command: run, list, show, resume and draw workflows; the bundled demo."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from heddle import __version__
from heddle.cli._errors import EXIT_INTERRUPTED, report
from heddle.cli._loader import GraphSource, load_graph
from heddle.cli._render import (
    STATUS_STYLES,
    format_duration,
    format_time,
    make_console,
    node_table,
    preview,
    runs_table,
)
from heddle.cli._running import db_args, db_path, require_database, run_and_report
from heddle.core.errors import RunNotFoundError
from heddle.workflows.checkpoint import RunRecord, SQLiteCheckpointer
from heddle.workflows.executor import new_workflow_id

__all__ = ["cli", "main"]


@dataclass(slots=True)
class _State:
    debug: bool = False


class _HeddleGroup(click.Group):
    """A click group whose errors are one line on stderr (see ``heddle.cli._errors``)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        state = _State()
        try:
            code = super().main(
                args, prog_name or "heddle", complete_var, standalone_mode=False, obj=state, **extra
            )
            code = code if isinstance(code, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "")
            code = 0
        except click.Abort:
            sys.stderr.write("heddle: interrupted\n")
            code = EXIT_INTERRUPTED
        except Exception as exc:
            code = report(exc, debug=state.debug, stream=sys.stderr)
        if standalone_mode:
            sys.exit(code)
        return code


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(_State).debug = True


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(_State)
    return state is not None and state.debug


DB_OPTION = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="SQLite file of durable runs [default: $HEDDLE_HOME/heddle.db, else ./.heddle/heddle.db].",
)


@click.group("heddle", cls=_HeddleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_set_debug,
    help="Show tracebacks and the executor's log.",
)
@click.version_option(__version__, prog_name="heddle")
def cli() -> None:
    """Run multi-agent workflows durably, and inspect and resume their runs.

    FILE.py[:VAR] names a Python file and the variable holding a WorkflowGraph
    (or a function returning one); VAR may be left out when the file holds
    exactly one graph. Exit codes: 0 ok, 1 the run or the work failed,
    2 bad command line or unknown file, variable or run, 130 interrupted.
    """


MAX_CONCURRENT_OPTION = click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most agent calls in flight at once.",
)


@cli.command()
@click.argument("file", metavar="FILE.py[:VAR]")
@click.option("--input", "input_text", metavar="TEXT", help="The workflow input (a string).")
@MAX_CONCURRENT_OPTION
@DB_OPTION
@click.option("--workflow-id", metavar="ID", help="Id of the new run [default: a fresh one].")
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    input_text: str | None,
    max_concurrent: int,
    db: Path | None,
    workflow_id: str | None,
) -> None:
    """Run a workflow file durably, with live progress.

    Exits 1 if the run fails; `heddle resume` finishes it later.
    """
    graph, source = load_graph(file)
    result = run_and_report(
        graph,
        _source_text(source),
        debug=_debug(ctx),
        db=db,
        max_concurrent=max_concurrent,
        workflow_id=workflow_id or new_workflow_id(),
        input=input_text,
    )
    if not result.ok:
        ctx.exit(1)


def _source_text(source: GraphSource) -> str:
    """How to name the graph again in a ``heddle resume`` hint: FILE.py:VAR."""
    return f"{source.path}:{source.var}" if source.var else str(source.path)


@cli.command()
@click.argument("run_id", metavar="RUN_ID")
@click.argument("file", metavar="FILE.py[:VAR]")
@MAX_CONCURRENT_OPTION
@DB_OPTION
@click.option("--force", is_flag=True, help="Resume even if the graph's structure changed.")
@click.pass_context
def resume(
    ctx: click.Context, run_id: str, file: str, max_concurrent: int, db: Path | None, force: bool
) -> None:
    """Finish a failed or interrupted run.

    Only the nodes of run RUN_ID that did not succeed run again; the graph in
    FILE.py must have the recorded structure unless --force is given.
    """
    graph, source = load_graph(file)
    result = run_and_report(
        graph,
        _source_text(source),
        debug=_debug(ctx),
        db=db,
        max_concurrent=max_concurrent,
        workflow_id=run_id,
        resume=True,
        force=force,
    )
    if not result.ok:
        ctx.exit(1)


# -- inspecting ---------------------------------------------------------------------------


def _run_json(record: RunRecord, path: Path) -> dict[str, Any]:
    return {
        "workflow_id": record.workflow_id,
        "graph": record.graph_name,
        "status": record.state,
        "owner": record.lease.owner if record.lease else None,
        "lease_until": record.lease.until.isoformat() if record.lease else None,
        "fingerprint": record.fingerprint,
        "input": record.input,
        "nodes": list(record.nodes),
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "duration": record.duration,
        "nodes_done": record.nodes_done,
        "database": str(path),
    }


async def _read_runs(path: Path, limit: int) -> list[RunRecord]:
    async with SQLiteCheckpointer(path) as checkpointer:
        return await checkpointer.list_runs(limit)


@cli.command()
@DB_OPTION
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Most runs listed."
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def runs(db: Path | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    path = db_path(db)
    records = asyncio.run(_read_runs(path, limit)) if path.exists() else []
    if as_json:
        rows = [_run_json(r, path) for r in records]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    console = make_console()
    if not records:
        console.print(Text(f"no runs recorded in {path}"), soft_wrap=True)
        return
    console.print(runs_table(records))


async def _read_run(
    path: Path, run_id: str
) -> tuple[RunRecord, dict[str, Any], list[dict[str, Any]]]:
    async with SQLiteCheckpointer(path) as checkpointer:
        record = await checkpointer.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id, str(path))
        results = dict(await checkpointer.node_results(run_id))
        events = await checkpointer.events(run_id)
    return record, results, events


@cli.command()
@click.argument("run_id", metavar="RUN_ID")
@DB_OPTION
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run, its nodes and events as JSON."
)
def show(run_id: str, db: Path | None, as_json: bool) -> None:
    """Show one run, node by node.

    Every node of run RUN_ID in graph order (with no result yet: pending), with
    its status, attempts, duration and a preview of its result or error.
    """
    path = db_path(db)
    require_database(path, run_id)
    record, results, events = asyncio.run(_read_run(path, run_id))
    if as_json:
        nodes = []
        for name in record.nodes:
            result = results.get(name) or {}
            nodes.append(
                {
                    "node": name,
                    "status": result.get("status", "pending"),
                    "attempts": result.get("attempts", 0),
                    "duration": result.get("duration"),
                    "error": result.get("error"),
                    "content": result.get("content"),
                }
            )
        doc = {"run": _run_json(record, path), "nodes": nodes, "events": events}
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        return
    console = make_console()
    head = Text()
    head.append(f"{record.workflow_id}  graph {record.graph_name!r}  ")
    head.append(record.state, style=STATUS_STYLES.get(record.state, ""))
    if record.state == "running" and record.lease is not None:
        head.append(f" by {record.lease.owner}")
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
    if record.state not in ("succeeded", "running"):
        console.print(
            Text(f"resume it: heddle resume {record.workflow_id} FILE.py[:VAR]{db_args(db)}"),
            soft_wrap=True,
        )


@cli.command()
@click.argument("file", metavar="FILE.py[:VAR]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart or Graphviz DOT.",
)
def graph(file: str, fmt: str) -> None:
    """Print a workflow's graph as a Mermaid flowchart (or DOT)."""
    workflow, _ = load_graph(file)
    click.echo(workflow.to_mermaid() if fmt == "mermaid" else workflow.to_dot(), nl=False)


# -- the demo -----------------------------------------------------------------------------


@cli.command()
@DB_OPTION
@click.pass_context
def demo(ctx: click.Context, db: Path | None) -> None:
    """Run the bundled example workflow (offline, about two seconds).

    Five agents write a research brief: a fan-out and a join, a flaky agent
    that is retried, and agent memory that persists between runs.
    """
    from heddle.examples import demo as bundled

    console = make_console()
    console.print(Text(bundled.INTRO), soft_wrap=True)
    console.print()
    result = run_and_report(
        bundled.build_graph(),
        f"{bundled.__file__}:build_graph",
        debug=_debug(ctx),
        db=db,
        max_concurrent=4,
        workflow_id=new_workflow_id(),
        input=bundled.TOPIC,
    )
    console.print()
    for line in bundled.epilogue(result):
        console.print(Text(line), soft_wrap=True)
    if not result.ok:
        ctx.exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``heddle`` console script: run the CLI with ``argv`` (default: sys.argv[1:])."""
    code: int = cli.main(argv, prog_name="heddle", standalone_mode=False)
    return code
