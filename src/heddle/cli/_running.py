"""Running a graph from the command line: durably, with progress, then the result and its output.

Stopping a run: the first Ctrl-C (SIGINT) or SIGTERM (``kill``, a container
stop, a CI timeout) cancels it cleanly, so it is recorded as cancelled and
can be resumed; the exit code is 128 + the signal's number (130, 143). A
second signal gives up on the clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
import sys
from collections import Counter
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.text import Text

from heddle.cli._errors import CLIError, one_line, usage_error
from heddle.cli._progress import RunProgress
from heddle.cli._render import (
    NOT_TAKEN,
    STATUS_STYLES,
    failed_items,
    format_duration,
    is_not_taken,
    jsonable,
    make_console,
    node_json,
    node_table,
    to_json,
    visible,
)
from heddle.core.errors import GraphMismatchError, RunNotFoundError
from heddle.workflows.checkpoint import RunRecord, SQLiteCheckpointer, default_database_path
from heddle.workflows.codec import recorded_types
from heddle.workflows.context import NodeResult
from heddle.workflows.executor import WorkflowExecutor, WorkflowResult
from heddle.workflows.graph import WorkflowGraph
from heddle.workflows.status import NodeStatus, RunStatus

__all__ = [
    "OutputFormat",
    "db_args",
    "db_path",
    "heddle_logging",
    "require_database",
    "run_and_report",
]

_T = TypeVar("_T")

OutputFormat = Literal["text", "json"]

#: A run's result table lists every node up to this many; beyond, only those that did not succeed.
MAX_TABLE_ROWS = 50
#: ``heddle run`` prints the output of at most this many sink nodes; ``--output json`` has all.
MAX_OUTPUTS_SHOWN = 10

# -- logging -------------------------------------------------------------------------------


class _Visible(logging.Formatter):
    """heddle's log for --debug, control characters made visible."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


class _OneLine(logging.Formatter):
    """``heddle: warning: ...``: one line, no traceback, like the CLI's own errors."""

    def format(self, record: logging.LogRecord) -> str:
        message = visible(one_line(record.getMessage()), one_line=True)
        return f"heddle: {record.levelname.lower()}: {message}"


@contextlib.contextmanager
def heddle_logging(debug: bool) -> Iterator[None]:
    """heddle's log to stderr: all of it with --debug, else only what the user must know.

    Without --debug, the checkpoint database's warnings (it is locked by
    another process, and heddle is waiting for it) are shown, one line each;
    the rest (retries, failures) is on the display already.
    """
    logger = logging.getLogger("heddle")
    handlers: list[tuple[logging.Logger, logging.Handler]] = []
    levels = {logger: logger.level}
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Visible("%(levelname)s %(name)s: %(message)s"))
        handlers.append((logger, handler))
        logger.setLevel(logging.INFO)
    else:
        handlers.append((logger, logging.NullHandler()))
        checkpoint = logging.getLogger("heddle.checkpoint")
        levels[checkpoint] = checkpoint.level
        if checkpoint.getEffectiveLevel() > logging.WARNING:
            checkpoint.setLevel(logging.WARNING)
        warnings = logging.StreamHandler(sys.stderr)
        warnings.setLevel(logging.WARNING)
        warnings.setFormatter(_OneLine())
        handlers.append((checkpoint, warnings))
    for target, added in handlers:
        target.addHandler(added)
    try:
        yield
    finally:
        for target, added in handlers:
            target.removeHandler(added)
        for target, level in levels.items():
            target.setLevel(level)


# -- the database ----------------------------------------------------------------------------


def db_path(db: Path | None) -> Path:
    """The database to use: ``--db`` if given, else the default."""
    return db.expanduser().absolute() if db is not None else default_database_path()


def db_args(db: Path | None) -> str:
    """``--db PATH`` to repeat in a printed command, when one was given."""
    return f" --db {shlex.quote(str(db))}" if db is not None else ""


def require_database(path: Path, run_id: str) -> None:
    """Looking for a run where there is no database finds none (and creates none)."""
    if not path.exists():
        raise RunNotFoundError(run_id, f"{path} (no such database)")


# -- running ---------------------------------------------------------------------------------


async def _follow(
    console: Console,
    graph: WorkflowGraph,
    *,
    db: Path | None,
    max_concurrent: int,
    workflow_id: str,
    input: Any = None,
    resume: bool = False,
    force: bool = False,
) -> tuple[WorkflowResult, RunProgress]:
    """Execute (or resume) ``graph`` durably while a RunProgress shows its events."""
    path = db_path(db)
    async with SQLiteCheckpointer(path) as checkpointer:
        types = recorded_types(graph)  # the classes to read the run's values back as
        record = await checkpointer.get_run(workflow_id, input_types=types.input)
        done: list[str] = []
        if resume:
            if record is None:
                raise RunNotFoundError(workflow_id, str(path))
            fingerprint = graph.fingerprint()
            if fingerprint != record.fingerprint and not force:
                raise GraphMismatchError(workflow_id, record.fingerprint, fingerprint)
            recorded = await checkpointer.node_results(workflow_id, types=types.nodes)
            done = [
                n
                for n, r in recorded.items()
                if r.get("status") == NodeStatus.SUCCEEDED and n in graph
            ]
            _resume_header(console, record, graph, len(done))
        elif record is not None:
            raise usage_error(
                f"workflow id {workflow_id!r} is taken in {path} (status {record.state}); "
                f"resume it with 'heddle resume {workflow_id} FILE' or choose another id"
            )
        # Printed once the run is recorded, so a refused workflow id prints only the error.
        header = None
        if not resume:
            header = (
                f"Running graph {graph.name!r} ({len(graph)} nodes) as {workflow_id}; "
                f"checkpoints in {path}"
            )
        progress = RunProgress(
            console,
            graph.name,
            workflow_id,
            list(graph),
            done=done,
            header=header,
            loops=bool(graph.plan().back_edges),
        )
        executor = WorkflowExecutor(max_concurrent, checkpointer=checkpointer, observers=[progress])
        async with progress:
            if resume:
                result = await executor.resume(workflow_id, graph, force=force)
            else:
                result = await executor.execute(graph, input, workflow_id=workflow_id)
        return result, progress


def _resume_header(console: Console, record: RunRecord, graph: WorkflowGraph, done: int) -> None:
    if record.state == RunStatus.RUNNING:
        return  # another live process holds it: the executor refuses, with its owner
    if record.state == RunStatus.SUCCEEDED:
        what = "it succeeded; nothing to run"
    else:
        what = f"{done} of {len(graph)} nodes recorded done, {len(graph) - done} to run"
        if graph.plan().back_edges:
            what = f"{done} of {len(graph)} nodes recorded done; the loop goes on where it stopped"
    console.print(
        Text(
            visible(
                f"Resuming {record.workflow_id} (graph {record.graph_name!r}, "
                f"{record.state}): {what}"
            )
        ),
        soft_wrap=True,
    )


@dataclass(slots=True)
class _Stopping:
    """The signal that asked the run to stop, once one has."""

    signum: int | None = None


class _Interrupted(Exception):
    """The run was cancelled by a signal and has recorded itself as cancelled."""


async def _interruptible(coro: Coroutine[Any, Any, _T], stopping: _Stopping) -> _T:
    """Await ``coro``; the first SIGINT or SIGTERM cancels it cleanly, a second aborts at once.

    asyncio.run() reacts to SIGINT with a plain ``signal.signal`` handler, which
    runs only when the main thread wakes up: if the kernel hands the signal to
    another thread (the checkpointer's, an agent's) while the loop sleeps until
    a distant timer, Ctrl-C would wait for that timer. ``add_signal_handler``
    wakes the loop through its self-pipe, whichever thread took the signal.
    SIGTERM would otherwise kill the process on the spot, leaving the run
    marked running until its death is noticed, and saying nothing.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        if stopping.signum is not None:
            raise KeyboardInterrupt  # out of the loop: give up on a clean stop
        stopping.signum = signum
        task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            continue
        installed.append(signum)
    try:
        return await coro
    except asyncio.CancelledError:
        if stopping.signum is not None:
            raise _Interrupted from None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _stopped_error(signum: int | None, workflow_id: str, source: str, db: Path | None) -> CLIError:
    signum = signum or signal.SIGINT
    what = "interrupted" if signum == signal.SIGINT else f"{signal.Signals(signum).name} received"
    return CLIError(
        f"{what}; workflow {workflow_id} is recorded as cancelled; resume it with: "
        f"heddle resume {workflow_id} {shlex.quote(source)}{db_args(db)}",
        exit_code=128 + signum,
    )


# -- reporting -------------------------------------------------------------------------------


def _sinks(graph: WorkflowGraph) -> list[str]:
    """The nodes nothing waits for, in graph order: their contents are the run's output."""
    return [name for name in graph if not graph.successors(name)]


def _print_value(console: Console, value: Any) -> None:
    """A whole value: a string as it is, anything else as indented JSON; escapes visible."""
    text = value if isinstance(value, str) else to_json(jsonable(value))
    console.print(Text(visible(text)), soft_wrap=True)


def _print_output(console: Console, result: WorkflowResult, outputs: list[str]) -> None:
    done = [n for n in outputs if result.results[n]["status"] == NodeStatus.SUCCEEDED]
    for name in done[:MAX_OUTPUTS_SHOWN]:
        console.print()
        title = "output" if len(outputs) == 1 else f"output of {name}"
        console.print(Text(visible(f"{title}:", one_line=True), style="bold"), soft_wrap=True)
        _print_value(console, result.results[name]["content"])
    if len(done) > MAX_OUTPUTS_SHOWN:
        console.print()
        console.print(
            Text(
                f"({len(done) - MAX_OUTPUTS_SHOWN} more outputs not shown: "
                f"heddle show {result.workflow_id} --json)",
                style="dim",
            ),
            soft_wrap=True,
        )


def _print_tracebacks(console: Console, results: Mapping[str, NodeResult]) -> None:
    """Each failed node's recorded traceback (for --debug), or why there is none."""
    for name, result in results.items():
        if result["status"] != NodeStatus.FAILED:
            continue
        console.print()
        recorded, kind = result.get("traceback"), result.get("error_type")
        # A map node failed by its items carries the traceback of one of them: name it.
        item = next((f for f in failed_items(result) if f[1].get("traceback") == recorded), None)
        of = name
        if recorded and item is not None:
            of, kind = f"{name}, item {item[0]}", item[1].get("error_type")
        if recorded:
            head = f"traceback of {of}" + (f" ({kind})" if kind else "") + ":"
        else:
            head = f"{name}: no traceback recorded ({result.get('error')})"
        console.print(Text(visible(head, one_line=True), style="red"), soft_wrap=True)
        if recorded:
            console.print(Text(visible(recorded.rstrip("\n"))), soft_wrap=True)


def _notable(result: NodeResult) -> bool:
    """Whether a node's row is worth a line in a long table: it failed, or a failure skipped it."""
    return result["status"] != NodeStatus.SUCCEEDED and not is_not_taken(result)


def _summary(results: Iterable[NodeResult]) -> list[str]:
    """``["3 done", "1 failed", "1 skipped", "2 not taken"]``, the zero counts but done left out."""
    counts: Counter[str] = Counter()
    for node in results:
        counts[NOT_TAKEN if is_not_taken(node) else node["status"]] += 1
    parts = [f"{counts[NodeStatus.SUCCEEDED]} done"]
    words = (NodeStatus.FAILED, NodeStatus.SKIPPED, NOT_TAKEN)
    return parts + [f"{counts[word]} {word}" for word in words if counts[word]]


def _report_result(
    console: Console,
    result: WorkflowResult,
    progress: RunProgress,
    *,
    source: str,
    db: Path | None,
    debug: bool,
    outputs: list[str] | None,
) -> None:
    names = list(result.results)
    if len(names) > MAX_TABLE_ROWS:
        names = [n for n in names if _notable(result.results[n])][:MAX_TABLE_ROWS]
    console.print()
    console.print(node_table(names, result.results))
    hidden = len(result.results) - len(names)
    if hidden:
        console.print(
            Text(f"({hidden} more nodes not listed: heddle show {result.workflow_id})", style="dim")
        )
    parts = _summary(result.results.values())
    if progress.retries:
        parts.append(f"{progress.retries} retr{'y' if progress.retries == 1 else 'ies'}")
    line = Text()
    line.append(f"workflow {result.workflow_id} ")
    line.append(result.status, style=STATUS_STYLES.get(result.status, ""))
    line.append(f" in {format_duration(result.duration)}: {', '.join(parts)}")
    console.print(line, soft_wrap=True)
    wid, hint = result.workflow_id, db_args(db)
    if not result.ok:
        console.print(
            Text(visible(f"  resume it:   heddle resume {wid} {shlex.quote(source)}{hint}")),
            soft_wrap=True,
        )
    console.print(Text(visible(f"  inspect it:  heddle show {wid}{hint}")), soft_wrap=True)
    if debug:
        _print_tracebacks(console, result.results)
    if outputs is not None:
        _print_output(console, result, outputs)


def _run_json(result: WorkflowResult, outputs: list[str]) -> dict[str, Any]:
    """The whole result of a run, as ``heddle run --output json`` prints it."""
    return {
        "workflow_id": result.workflow_id,
        "graph": result.graph_name,
        "status": result.status,
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "duration": result.duration,
        "nodes": [node_json(name, node) for name, node in result.results.items()],
        "output": {name: node_json(name, result.results[name])["content"] for name in outputs},
    }


def run_and_report(
    graph: WorkflowGraph,
    source: str,
    *,
    debug: bool,
    db: Path | None,
    max_concurrent: int,
    workflow_id: str,
    input: Any = None,
    resume: bool = False,
    force: bool = False,
    output: OutputFormat | None = "text",
) -> WorkflowResult:
    """Run (or resume) ``graph`` with a progress display, then print the result.

    ``source`` is how to name the graph again in the printed ``heddle resume``
    hint. ``output``: ``"text"`` prints the table and then the run's output
    (the contents of its sink nodes); ``"json"`` prints only the result as
    JSON on stdout, the progress going to stderr; None prints the table only.
    """
    if resume:
        require_database(db_path(db), workflow_id)
    console = make_console()
    shown = make_console(sys.stderr) if output == "json" else console
    stopping = _Stopping()
    try:
        with heddle_logging(debug):
            result, progress = asyncio.run(
                _interruptible(
                    _follow(
                        shown,
                        graph,
                        db=db,
                        max_concurrent=max_concurrent,
                        workflow_id=workflow_id,
                        input=input,
                        resume=resume,
                        force=force,
                    ),
                    stopping,
                )
            )
    except (KeyboardInterrupt, _Interrupted):
        raise _stopped_error(stopping.signum, workflow_id, source, db) from None
    outputs = _sinks(graph)
    if output == "json":
        click.echo(to_json(_run_json(result, outputs)))
    else:
        _report_result(
            console,
            result,
            progress,
            source=source,
            db=db,
            debug=debug,
            outputs=outputs if output == "text" else None,
        )
    return result
