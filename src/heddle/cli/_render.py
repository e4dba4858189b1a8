"""Consoles, tables and the text forms of what heddle records.

What a workflow produced (contents, errors, graph and node names, inputs)
may come from an LLM that an attacker can steer, so it never reaches the
terminal raw: :func:`visible` shows every control character as an escape
(ESC as ``\\x1b``), and :func:`to_json` does the same for JSON. Every command
renders user strings through them, and the console applies :func:`visible`
once more to whatever it prints (its own cursor and colour codes excepted),
so a call site that forgets cannot leak a control code. User strings reach
rich as :class:`~rich.text.Text`, never as markup, so ``[red]`` in a result is
printed as it is.

Loops and branches, in tables and in the live progress: a node's later runs
carry their number, ``write #3`` (the third run of ``write``: iteration 2;
a node that ran once has none); a routing node shows the branches it took,
``→ billing`` (``→ (none)`` when it took none); a node skipped because no
edge into it was taken is shown dim, as the graph's choice, while a node
skipped because something upstream failed keeps the warning colour.

Map nodes are one row and one progress entry, never one per item: their
items are tallied, ``20 items`` when all succeeded, ``19/20 items, 1 failed``
otherwise (``12/20 items`` while they run), and a failed map shows its first
failed item's error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, TextIO

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from heddle.messaging.events import EventType
from heddle.workflows.checkpoint import RunRecord
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus, RunStatus

__all__ = [
    "EDGE_EXHAUSTED",
    "NOT_TAKEN",
    "NOT_TAKEN_STYLE",
    "PENDING",
    "STATUS_STYLES",
    "failed_items",
    "format_duration",
    "format_time",
    "is_not_taken",
    "items_tally",
    "iteration_of",
    "jsonable",
    "loop_bound_text",
    "make_console",
    "node_json",
    "node_label",
    "node_table",
    "preview",
    "route",
    "runs_table",
    "to_json",
    "visible",
]

PREVIEW_CHARS = 60

EDGE_EXHAUSTED = EventType.EDGE_EXHAUSTED

#: What a node with no result yet is shown as: not a status, nothing has happened to it.
PENDING = "pending"

# Keyed by the enum members; NodeStatus and RunStatus share "succeeded" and "failed"
# (StrEnum members hash as their strings), so each word has one style at both levels.
STATUS_STYLES: dict[str, str] = {
    NodeStatus.SUCCEEDED: "green",
    NodeStatus.FAILED: "red",
    NodeStatus.SKIPPED: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.CANCELLED: "yellow",
    RunStatus.INTERRUPTED: "magenta",
    PENDING: "dim",
}

#: A node skipped because no edge into it was taken: the graph's choice, not a problem.
NOT_TAKEN = "not taken"
NOT_TAKEN_STYLE = "dim"
_ROUTE_STYLE = "cyan"
_ITEMS_STYLE = "magenta"

# The executor's error for such a skip starts with this, then names the edge's source.
_NOT_TAKEN_PREFIX = "not taken:"

# -- control characters ------------------------------------------------------------------

# C0 controls, DEL and C1 controls (ESC starts terminal sequences; C1's CSI, 0x9b, does on
# some terminals by itself), the Unicode line and paragraph separators, and the bidi
# overrides and isolates, which can make text read in another order than it is stored.
_CONTROLS = [
    *map(chr, range(0x20)),
    *map(chr, range(0x7F, 0xA0)),
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_ONE_LINE = str.maketrans({c: _escape(c) for c in _CONTROLS})
_FULL = str.maketrans({c: _escape(c) for c in _CONTROLS if c not in "\n\t"})
# json.dumps escapes what is below 0x20 itself; the rest only appear inside JSON strings,
# where \\uXXXX is a valid escape.
_JSON = str.maketrans({c: f"\\u{ord(c):04x}" for c in _CONTROLS if ord(c) >= 0x7F})


def visible(text: str, *, one_line: bool = False) -> str:
    """``text`` with every control character shown as an escape: ``"\\x1b[2J"`` for ESC [2J.

    Newlines and tabs are kept (a Windows line end becomes a newline), unless
    ``one_line``: then they are escaped too (``\\n``, ``\\t``), for a value
    shown on one line. Backslashes are left alone, so paths and regexes read
    as they are.
    """
    if one_line:
        return text.translate(_ONE_LINE)
    return text.replace("\r\n", "\n").translate(_FULL)


def _json_fallback(value: Any) -> Any:
    """A JSON form for what json cannot encode: ISO times, model fields, else ``str``."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        with contextlib.suppress(Exception):
            return dump(mode="json")
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` if :func:`to_json` can encode it, else its ``str()`` (a dict with tuple keys)."""
    try:
        json.dumps(value, default=_json_fallback)
    except (TypeError, ValueError, RecursionError):
        return str(value)
    return value


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as JSON text with no raw control character; see :func:`_json_fallback`."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=_json_fallback)
    return text.translate(_JSON)


# -- consoles -----------------------------------------------------------------------------


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Console(Console):
    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        # The last line of defence: the text of every segment rich prints goes through
        # visible(); rich's own codes are control segments or styles, added after this.
        for segment in super().render(renderable, options):
            text = segment.text
            if segment.control or text.isprintable() or text == "\n":
                yield segment
            else:
                yield Segment(visible(text), segment.style)

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


# -- short forms --------------------------------------------------------------------------


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One short line for a value: strings as they are, anything else as JSON; escapes visible."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = to_json(value, indent=None)
        except (TypeError, ValueError, RecursionError):  # say, a dict with tuple keys
            text = str(value)
    text = visible(text.strip(), one_line=True)
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


def iteration_of(data: Mapping[str, Any]) -> int:
    """The ``iteration`` of a node result or a node event's payload: 0 if it has none."""
    value = data.get("iteration", 0)
    return value if type(value) is int and value > 0 else 0


def node_label(name: str, iteration: int = 0) -> str:
    """``write``, or ``write #3`` for its third run (iteration 2); escapes visible."""
    shown = visible(name, one_line=True)
    return f"{shown} #{iteration + 1}" if iteration > 0 else shown


def route(taken: Iterable[Any]) -> str:
    """Where a routing node sent the run: ``→ billing``, ``→ billing, refund``, ``→ (none)``."""
    names = [visible(str(target), one_line=True) for target in taken]
    return "→ " + (", ".join(names) if names else "(none)")


def is_not_taken(result: Mapping[str, Any]) -> bool:
    """Whether a node was skipped because no edge into it was taken (not because of a failure)."""
    error = result.get("error")
    return (
        result.get("status") == NodeStatus.SKIPPED
        and isinstance(error, str)
        and error.startswith(_NOT_TAKEN_PREFIX)
    )


def loop_bound_text(payload: Mapping[str, Any]) -> str:
    """An ``edge.exhausted`` event: ``review → write: loop bound reached (3 iterations)``."""
    source = visible(str(payload.get("source")), one_line=True)
    target = visible(str(payload.get("target")), one_line=True)
    bound = payload.get("max_iterations")
    return f"{source} → {target}: loop bound reached ({bound} iterations)"


def items_tally(succeeded: int, total: int, failed: int = 0, retries: int = 0) -> str:
    """A map node's items: ``20 items`` when all succeeded, else ``12/20 items, 1 failed``;
    then ``, 2 retries`` if any."""
    text = f"{total} items" if succeeded == total else f"{succeeded}/{total} items"
    if failed:
        text += f", {failed} failed"
    if retries:
        text += f", {retries} retr{'y' if retries == 1 else 'ies'}"
    return text


def _items(result: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """A map node's ``items`` (one entry per item), None for another node or an odd value."""
    items = result.get("items")
    if not isinstance(items, list) or not all(isinstance(e, Mapping) for e in items):
        return None
    return items


def _items_text(items: Sequence[Mapping[str, Any]]) -> str:
    succeeded = sum(e.get("status") == NodeStatus.SUCCEEDED for e in items)
    return items_tally(succeeded, len(items), len(items) - succeeded)


def failed_items(result: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """The items of a map node's result that did not succeed, as ``(index, entry)``; [] for a
    node that is not a map."""
    return [
        (k, entry)
        for k, entry in enumerate(_items(result) or ())
        if entry.get("status") != NodeStatus.SUCCEEDED
    ]


def node_json(name: str, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """One node as ``show --json`` and ``run --output json`` print it (pending if no result).

    ``iteration``, ``taken`` and ``items`` are there when the result has them
    (a node of a loop, a routing node, a map node: one entry per item).
    """
    result = result or {}
    doc: dict[str, Any] = {"node": name, "status": result.get("status", PENDING)}
    if "iteration" in result:
        doc["iteration"] = result["iteration"]
    doc |= {
        "attempts": result.get("attempts", 0),
        "duration": result.get("duration"),
        "error": result.get("error"),
        "error_type": result.get("error_type"),
        "traceback": result.get("traceback"),
    }
    if "taken" in result:
        doc["taken"] = jsonable(result["taken"])
    if "items" in result:
        doc["items"] = jsonable(result["items"])
    doc["content"] = jsonable(result.get("content"))
    return doc


# -- tables -------------------------------------------------------------------------------


def _status(status: str, note: str = "", *, style: str | None = None) -> Text:
    return Text(status + note, style=STATUS_STYLES.get(status, "") if style is None else style)


def _cell(text: str, style: str = "") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _name(name: str, iteration: int = 0) -> Text:
    text = Text(visible(name, one_line=True))
    if iteration > 0:
        text.append(f" #{iteration + 1}", style="dim")
    return text


def _outcome(result: Mapping[str, Any], status: str) -> Text:
    """The result column: a map's items, the branches taken and the content, or the error.

    A map node that failed because of its items shows the first failed item's
    error (the node's own error says the same, after a long preamble).
    """
    shown = _cell("")
    items = _items(result)
    if items is not None:
        shown.append(_items_text(items), style=_ITEMS_STYLE)
        shown.append("  ")
    if status != NodeStatus.SUCCEEDED:
        style = NOT_TAKEN_STYLE if is_not_taken(result) else STATUS_STYLES.get(status, "")
        error = result.get("error") or ""
        failed = failed_items(result)
        if failed:
            k, entry = failed[0]
            error = f"item {k}: {entry.get('error') or error}"
        shown.append(preview(error), style=style)
        return shown
    if "taken" in result:
        shown.append(route(result["taken"]), style=_ROUTE_STYLE)
        shown.append("  ")
    shown.append(preview(result.get("content")))
    return shown


def node_table(
    names: Sequence[str], results: Mapping[str, NodeResult], *, title: str | None = None
) -> Table:
    """One row per node of ``names``, in that order; a node without a result is ``pending``.

    A node's row is its latest run: ``write #3`` when it ran three times.
    """
    table = Table(
        title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False
    )
    # The fixed columns keep their width; the result takes what is left, cut with an ellipsis.
    labels = [node_label(n, iteration_of(results.get(n) or {})) for n in names]
    node_width = min(max(map(len, labels), default=4), 32)
    table.add_column("node", no_wrap=True, min_width=node_width)
    table.add_column("status", no_wrap=True, min_width=7)
    table.add_column("attempts", justify="right", no_wrap=True, min_width=8)
    table.add_column("time", justify="right", no_wrap=True, min_width=5)
    table.add_column("result", overflow="ellipsis")  # shrinkable; its cells do not wrap
    for name in names:
        result = results.get(name)
        if result is None:
            table.add_row(_name(name), _status(PENDING), "-", "-", Text(""))
            continue
        status = str(result.get("status"))
        resumed = bool(result.get("resumed"))
        table.add_row(
            _name(name, iteration_of(result)),
            _status(
                status,
                " (resumed)" if resumed else "",
                style=NOT_TAKEN_STYLE if is_not_taken(result) else None,
            ),
            str(result.get("attempts", "-")),
            format_duration(result.get("duration")) if not resumed else "-",
            _outcome(result, status),
        )
    return table


def runs_table(records: Sequence[RunRecord], width: int) -> Table:
    """Recent runs: id, graph, status, started, duration, nodes done/total, in ``width`` columns.

    Ids and graph names are never cut. When the row is wider than ``width``,
    the start time goes first (its time under its date), then the graph name
    folds onto more lines, then the id: the id is what a user copies.
    """
    rows = [
        (
            visible(r.workflow_id, one_line=True),
            visible(r.graph_name, one_line=True),
            r.state,
            format_time(r.started_at),
            format_duration(r.duration),
            f"{r.nodes_done}/{len(r.nodes)}",
        )
        for r in records
    ]
    heads = ("workflow id", "graph", "status", "started", "took", "done")
    natural = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    id_w, graph_w, status_w, started_w, took_w, done_w = natural
    gaps = 3 * (len(heads) - 1)  # padding, divider, padding
    fixed = status_w + took_w + done_w + gaps
    if fixed + started_w + id_w + graph_w > width:
        started_w = len("2026-11-27")
        room = width - fixed - started_w
        graph_w = max(min(graph_w, room - id_w), min(graph_w, _FOLDED_MIN))
        id_w = max(min(id_w, room - graph_w), min(id_w, _FOLDED_MIN))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column(heads[0], width=id_w, overflow="fold")
    table.add_column(heads[1], width=graph_w, overflow="fold")
    table.add_column(heads[2], width=status_w, no_wrap=True)
    table.add_column(heads[3], width=started_w)
    table.add_column(heads[4], width=took_w, justify="right", no_wrap=True)
    table.add_column(heads[5], width=done_w, justify="right", no_wrap=True)
    for wid, graph, state, started, took, done in rows:
        table.add_row(Text(wid), Text(graph), _status(state), started, took, done)
    return table


#: A folded id or graph name keeps at least this many characters a line.
_FOLDED_MIN = 12
