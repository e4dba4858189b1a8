"""Running a graph from the command line: durably, with progress, then a result table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.text import Text

from heddle.cli._errors import EXIT_INTERRUPTED, CLIError, usage_error
from heddle.cli._progress import RunProgress
from heddle.cli._render import STATUS_STYLES, format_duration, make_console, node_table
from heddle.core.errors import GraphMismatchError, RunNotFoundError
from heddle.messaging.message_bus import MessageBus
from heddle.workflows.checkpoint import RunRecord, SQLiteCheckpointer, default_database_path
from heddle.workflows.executor import WorkflowExecutor, WorkflowResult
from heddle.workflows.graph import WorkflowGraph

__all__ = ["db_args", "db_path", "heddle_logging", "require_database", "run_and_report"]

_T = TypeVar("_T")

#: A run's result table lists every node up to this many; beyond, only those that did not succeed.
MAX_TABLE_ROWS = 50


@contextlib.contextmanager
def heddle_logging(debug: bool) -> Iterator[None]:
    """Executor log records to stderr with --debug, else nowhere (the display shows them)."""
    logger = logging.getLogger("heddle")
    handler: logging.Handler
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    level = logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def db_path(db: Path | None) -> Path:
    """The database to use: ``--db`` if given, else the default."""
    return db.expanduser().absolute() if db is not None else default_database_path()


def db_args(db: Path | None) -> str:
    """``--db PATH`` to repeat in a printed command, when one was given."""
    return f" --db {shlex.quote(str(db))}" if db is not None else ""


def require_database(path: Path, run_id: str) -> None:
    """Reading a run must not create an empty database as a side effect."""
    if not path.exists():
        raise RunNotFoundError(run_id, f"{path} (no such database)")


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
    async with SQLiteCheckpointer(path) as checkpointer, MessageBus(max_history=0) as bus:
        record = await checkpointer.get_run(workflow_id)
        done: list[str] = []
        if resume:
            if record is None:
                raise RunNotFoundError(workflow_id, str(path))
            fingerprint = graph.fingerprint()
            if fingerprint != record.fingerprint and not force:
                raise GraphMismatchError(workflow_id, record.fingerprint, fingerprint)
            recorded = await checkpointer.node_results(workflow_id)
            done = [n for n, r in recorded.items() if r.get("status") == "success" and n in graph]
            _resume_header(console, record, graph, len(done))
        elif record is not None:
            raise usage_error(
                f"workflow id {workflow_id!r} is taken in {path} (status {record.status}); "
                f"resume it with 'heddle resume {workflow_id} FILE' or choose another id"
            )
        executor = WorkflowExecutor(max_concurrent, bus=bus, checkpointer=checkpointer)
        # Printed once the run is recorded, so a refused workflow id prints only the error.
        header = None
        if not resume:
            header = (
                f"Running graph {graph.name!r} ({len(graph)} nodes) as {workflow_id}; "
                f"checkpoints in {path}"
            )
        progress = RunProgress(
            console, graph.name, workflow_id, list(graph), done=done, header=header
        )
        bus.subscribe("*", progress.on_event)
        async with progress:
            if resume:
                result = await executor.resume(workflow_id, graph, force=force)
            else:
                result = await executor.execute(graph, input, workflow_id=workflow_id)
        return result, progress


class _Interrupted(Exception):
    """The run was cancelled by Ctrl-C (SIGINT) and has recorded itself as cancelled."""


async def _interruptible(coro: Coroutine[Any, Any, _T]) -> _T:
    """Await ``coro``; the first Ctrl-C cancels it cleanly, a second one aborts at once.

    asyncio.run() reacts to SIGINT with a plain ``signal.signal`` handler, which
    runs only when the main thread wakes up: if the kernel hands the signal to
    another thread (the checkpointer's, an agent's) while the loop sleeps until
    a distant timer, Ctrl-C would wait for that timer. ``add_signal_handler``
    wakes the loop through its self-pipe, whichever thread took the signal.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt  # out of the loop: give up on a clean stop
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        installed = False
    try:
        return await coro
    except asyncio.CancelledError:
        if interrupts:
            raise _Interrupted from None
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


def _resume_header(console: Console, record: RunRecord, graph: WorkflowGraph, done: int) -> None:
    todo = len(graph) - done
    if record.status == "succeeded":
        what = "it succeeded; nothing to run"
    else:
        what = f"{done} of {len(graph)} nodes recorded done, {todo} to run"
    console.print(
        Text(
            f"Resuming {record.workflow_id} (graph {record.graph_name!r}, {record.status}): {what}"
        ),
        soft_wrap=True,
    )
    if record.status == "running":
        console.print(
            Text(
                "note: this run is marked running: its process died, or it is still running "
                "elsewhere (then both would run the same nodes)",
                style="yellow",
            ),
            soft_wrap=True,
        )


def _report_result(
    console: Console,
    result: WorkflowResult,
    progress: RunProgress,
    *,
    source: str,
    db: Path | None,
) -> None:
    names = list(result.results)
    if len(names) > MAX_TABLE_ROWS:
        names = [n for n in names if result.results[n]["status"] != "success"][:MAX_TABLE_ROWS]
    console.print()
    console.print(node_table(names, result.results))
    hidden = len(result.results) - len(names)
    if hidden:
        console.print(
            Text(f"({hidden} more nodes not listed: heddle show {result.workflow_id})", style="dim")
        )
    counts = {"success": 0, "failed": 0, "skipped": 0}
    for node in result.results.values():
        counts[node["status"]] += 1
    parts = [f"{counts['success']} done"]
    parts += [f"{counts[s]} {s}" for s in ("failed", "skipped") if counts[s]]
    if progress.retries:
        parts.append(f"{progress.retries} retr{'y' if progress.retries == 1 else 'ies'}")
    line = Text()
    line.append(f"workflow {result.workflow_id} ")
    line.append(result.status, style=STATUS_STYLES[result.status])
    line.append(f" in {format_duration(result.duration)}: {', '.join(parts)}")
    console.print(line, soft_wrap=True)
    wid, hint = result.workflow_id, db_args(db)
    if not result.ok:
        console.print(
            Text(f"  resume it:   heddle resume {wid} {shlex.quote(source)}{hint}"),
            soft_wrap=True,
        )
    console.print(Text(f"  inspect it:  heddle show {wid}{hint}"), soft_wrap=True)


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
) -> WorkflowResult:
    """Run (or resume) ``graph`` with a progress display, then print the result table.

    ``source`` is how to name the graph again in the printed ``heddle resume`` hint.
    """
    if resume:
        require_database(db_path(db), workflow_id)
    console = make_console()
    try:
        with heddle_logging(debug):
            result, progress = asyncio.run(
                _interruptible(
                    _follow(
                        console,
                        graph,
                        db=db,
                        max_concurrent=max_concurrent,
                        workflow_id=workflow_id,
                        input=input,
                        resume=resume,
                        force=force,
                    )
                )
            )
    except (KeyboardInterrupt, _Interrupted):
        raise CLIError(
            f"interrupted; workflow {workflow_id} is recorded as cancelled; resume it with: "
            f"heddle resume {workflow_id} {shlex.quote(source)}{db_args(db)}",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    _report_result(console, result, progress, source=source, db=db)
    return result
