"""The ``heddle`` command: run, list, show, resume and draw workflows; the bundled demo."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from heddle import __version__
from heddle.cli._errors import EXIT_INTERRUPTED, report, usage_error
from heddle.cli._input import INPUT_HELP, read_input
from heddle.cli._inspect import (
    has_runs,
    print_run,
    print_trace,
    read_run,
    read_runs,
    record_json,
    show_json,
)
from heddle.cli._loader import GraphSource, load_graph
from heddle.cli._render import make_console, runs_table, to_json, visible
from heddle.cli._running import (
    OutputFormat,
    db_path,
    heddle_logging,
    require_database,
    run_and_report,
)
from heddle.workflows.executor import new_workflow_id
from heddle.workflows.status import RunStatus

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


# Before the command (``heddle --debug run``) or after it (``heddle run --debug``).
DEBUG_OPTION = click.option(
    "--debug",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_set_debug,
    help="Show tracebacks (a failed node's too) and heddle's log.",
)

DB_OPTION = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="SQLite file of durable runs [default: $HEDDLE_HOME/heddle.db, else ./.heddle/heddle.db].",
)


@click.group("heddle", cls=_HeddleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@DEBUG_OPTION
@click.version_option(__version__, prog_name="heddle")
def cli() -> None:
    """Run multi-agent workflows durably, and inspect and resume their runs.

    FILE.py[:VAR] names a Python file and the variable holding a WorkflowGraph
    (or a function returning one); VAR may be left out when the file holds
    exactly one graph. run, resume and graph execute FILE.py: never give them
    a file you would not run with python. Exit codes: 0 ok, 1 the run or the
    work failed, 2 bad command line or unknown file, variable or run,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """


MAX_CONCURRENT_OPTION = click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most agent calls in flight at once.",
)

OUTPUT_OPTION = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: progress, a table of the nodes, then the run's output; json: only the "
    "result as JSON on stdout (progress on stderr).",
)


@cli.command()
@click.argument("file", metavar="FILE.py[:VAR]")
@click.option("--input", "input_value", metavar="VALUE", help=INPUT_HELP)
@click.option(
    "--input-text", metavar="TEXT", help="The workflow input: TEXT itself, always a string."
)
@MAX_CONCURRENT_OPTION
@DB_OPTION
@click.option("--workflow-id", metavar="ID", help="Id of the new run [default: a fresh one].")
@OUTPUT_OPTION
@DEBUG_OPTION
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    input_value: str | None,
    input_text: str | None,
    max_concurrent: int,
    db: Path | None,
    workflow_id: str | None,
    output: OutputFormat,
) -> None:
    """Run a workflow file durably, with live progress; print its output.

    FILE.py is executed: run only files you trust. The output is the content
    of the nodes nothing waits for. Exits 1 if the run fails; `heddle resume`
    finishes it later.
    """
    workflow_input = read_input(input_value, input_text)
    graph, source = load_graph(file)
    result = run_and_report(
        graph,
        _source_text(source),
        debug=_debug(ctx),
        db=db,
        max_concurrent=max_concurrent,
        workflow_id=workflow_id or new_workflow_id(),
        input=workflow_input,
        output=output,
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
@OUTPUT_OPTION
@DEBUG_OPTION
@click.pass_context
def resume(
    ctx: click.Context,
    run_id: str,
    file: str,
    max_concurrent: int,
    db: Path | None,
    force: bool,
    output: OutputFormat,
) -> None:
    """Finish a failed or interrupted run.

    Only the nodes of run RUN_ID that did not succeed run again; the graph in
    FILE.py (executed: run only files you trust) must have the recorded
    structure unless --force is given.
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
        output=output,
    )
    if not result.ok:
        ctx.exit(1)


# -- inspecting ---------------------------------------------------------------------------


@cli.command()
@DB_OPTION
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Most runs listed."
)
@click.option(
    "--status",
    type=click.Choice([status.value for status in RunStatus]),
    help="Only the runs with this status (interrupted: running, but its process is gone).",
)
@click.option("--graph", "graph_name", metavar="NAME", help="Only the runs of this graph.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@DEBUG_OPTION
@click.pass_context
def runs(
    ctx: click.Context,
    db: Path | None,
    limit: int,
    status: str | None,
    graph_name: str | None,
    as_json: bool,
) -> None:
    """List recent runs, newest first."""
    path = db_path(db)
    wanted = RunStatus(status) if status is not None else None
    records = []
    if has_runs(path):
        with heddle_logging(_debug(ctx)):
            records = asyncio.run(read_runs(path, limit, status=wanted, graph=graph_name))
    if as_json:
        click.echo(to_json([record_json(r, path, with_input=False) for r in records]))
        return
    console = make_console()
    if not records:
        which = f" with status {status}" if status else ""
        which += f" of graph {graph_name!r}" if graph_name is not None else ""
        console.print(Text(visible(f"no runs{which} recorded in {path}")), soft_wrap=True)
        return
    console.print(runs_table(records, console.width))


@cli.command()
@click.argument("run_id", metavar="RUN_ID")
@DB_OPTION
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run, its nodes and events as JSON."
)
@click.option(
    "--trace",
    metavar="NODE",
    help="Print the traceback recorded for NODE (the exception it raised), if any.",
)
@DEBUG_OPTION
@click.pass_context
def show(
    ctx: click.Context, run_id: str, db: Path | None, as_json: bool, trace: str | None
) -> None:
    """Show one run, node by node.

    Every node of run RUN_ID in graph order (with no result yet: pending), with
    its status, attempts, duration and a preview of its result or error.
    """
    if as_json and trace is not None:
        raise usage_error("--json and --trace do not go together (--json has every traceback)")
    path = db_path(db)
    require_database(path, run_id)
    with heddle_logging(_debug(ctx)):
        record, results, events = asyncio.run(read_run(path, run_id))
    if as_json:
        click.echo(to_json(show_json(record, results, events, path)))
        return
    console = make_console()
    if trace is not None:
        print_trace(console, record, results, trace)
    else:
        print_run(console, record, results, events, db)


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
@DEBUG_OPTION
def graph(file: str, fmt: str) -> None:
    """Print a workflow's graph as a Mermaid flowchart (or DOT).

    FILE.py is executed to build the graph: use only files you trust.
    """
    workflow, _ = load_graph(file)
    text = workflow.to_mermaid() if fmt == "mermaid" else workflow.to_dot()
    click.echo(visible(text), nl=False)


# -- the demo -----------------------------------------------------------------------------


@cli.command()
@DB_OPTION
@DEBUG_OPTION
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
        output=None,  # the epilogue below says what came out
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
