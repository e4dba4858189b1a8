"""Consoles, tables and short text forms of what heddle records.

Everything a user's workflow produced (contents, errors, names) reaches rich
as :class:`~rich.text.Text`, never as markup, so ``[red]`` in a result is
printed as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from heddle.workflows.checkpoint import RunRecord
from heddle.workflows.context import NodeResult

__all__ = [
    "STATUS_STYLES",
    "format_duration",
    "format_time",
    "make_console",
    "node_table",
    "preview",
    "runs_table",
]

PREVIEW_CHARS = 60

STATUS_STYLES = {
    "success": "green",
    "succeeded": "green",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "yellow",
    "interrupted": "magenta",
    "running": "cyan",
    "pending": "dim",
}


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # The reader went away (``heddle run ... | head``): stop printing, but let a durable
        # run finish and be recorded rather than dying inside an event callback.
        self.quiet = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.file.fileno())
            os.close(devnull)


def make_console(stream: TextIO | None = None) -> Console:
    """A console on ``stream`` (stdout): a terminal only when it is a TTY.

    ``force_terminal`` is the TTY test itself, so a pipe never gets control
    codes even when ``FORCE_COLOR`` is set; rich reads ``NO_COLOR`` itself.
    """
    stream = stream if stream is not None else sys.stdout
    tty = _is_tty(stream)
    return _Console(
        file=stream if stream is not sys.stdout else None,
        force_terminal=tty,
        force_interactive=tty,
        highlight=False,
        emoji=False,
    )


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One short line for a node's content: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_duration(seconds: float | None) -> str:
    """``0.12s``, ``12.3s``, ``4m05s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_time(moment: datetime | None) -> str:
    """A timestamp in the local time zone, to the second; ``-`` when unknown."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _status(status: str, note: str = "") -> Text:
    return Text(status + note, style=STATUS_STYLES.get(status, ""))


def _cell(text: str, style: str = "") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def node_table(
    names: Sequence[str], results: Mapping[str, NodeResult], *, title: str | None = None
) -> Table:
    """One row per node of ``names``, in that order; a node without a result is ``pending``."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False
    )
    # The fixed columns keep their width; the result takes what is left, cut with an ellipsis.
    node_width = min(max((len(n) for n in names), default=4), 32)
    table.add_column("node", no_wrap=True, min_width=node_width)
    table.add_column("status", no_wrap=True, min_width=7)
    table.add_column("attempts", justify="right", no_wrap=True, min_width=8)
    table.add_column("time", justify="right", no_wrap=True, min_width=5)
    table.add_column("result", overflow="ellipsis")  # shrinkable; its cells do not wrap
    for name in names:
        result = results.get(name)
        if result is None:
            table.add_row(Text(name), _status("pending"), "-", "-", Text(""))
            continue
        status = str(result.get("status"))
        resumed = bool(result.get("resumed"))
        if status == "success":
            shown = _cell(preview(result.get("content")))
        else:
            shown = _cell(preview(result.get("error") or ""), STATUS_STYLES.get(status, ""))
        table.add_row(
            Text(name),
            _status(status, " (resumed)" if resumed else ""),
            str(result.get("attempts", "-")),
            format_duration(result.get("duration")) if not resumed else "-",
            shown,
        )
    return table


def runs_table(records: Sequence[RunRecord]) -> Table:
    """Recent runs: id, graph, status, started, duration, nodes done/total."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("workflow id", no_wrap=True)
    table.add_column("graph", min_width=5)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    for record in records:
        table.add_row(
            Text(record.workflow_id),
            Text(record.graph_name),
            _status(record.state),
            format_time(record.started_at),
            format_duration(record.duration),
            f"{record.nodes_done}/{len(record.nodes)}",
        )
    return table
