"""The live progress of a run, driven by the executor's events on a MessageBus.

On a terminal: a rich ``Live`` panel (spinner, bar, counts of pending /
running / done / failed / skipped nodes, retries, elapsed time, the nodes in
flight) redrawn ten times a second, with retries and failures printed above
it as they happen. Anywhere else (a pipe, a CI log): one plain line per node
event and no control codes at all. Names, errors and reasons come from the
workflow and are shown through :func:`~heddle.cli._render.visible`.

Loops and branches: a node event of a later run names the run (``write #2``,
iteration 1), a routing node's success names the branches it took
(``triage  done in 0.10s → billing``), and a loop that stopped at its bound
says so (``review → write: loop bound reached (3 iterations)``). The counts
are of nodes, by where each stands now: a node running again after it
succeeded is running, not done twice, and the bar's total is the number of
nodes however many times they run. A node skipped because no edge into it
was taken counts as "not taken", apart from the skips a failure caused.

Map nodes: a map node is one entry however many items it has. Its
``node.started`` with ``items`` opens a tally, ``summarise  12/20 items, 1
failed, 2 retries`` in the panel; item events (those with an ``item`` key)
only move that tally and the run's retry count, never the node counts. Plain
mode prints the map's start (``started: 20 items``), each failed item
(``item 11 failed after 2 attempts: ...``) and the node's end with its tally;
a succeeded or retried item prints nothing, so a map of thousands of items
stays a few lines. Items a resumed run recorded earlier send no events: the
tally starts from the items recorded done (``replayed``) and counts on.

The run hands each event to :meth:`RunProgress.on_event` (it is one of the run's
observers) on the event loop, and the
panel is redrawn by a task on the same loop, so the counts need no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from heddle.cli._render import (
    EDGE_EXHAUSTED,
    NOT_TAKEN,
    NOT_TAKEN_STYLE,
    PENDING,
    STATUS_STYLES,
    format_duration,
    is_not_taken,
    items_tally,
    iteration_of,
    loop_bound_text,
    node_label,
    preview,
    route,
    visible,
)
from heddle.messaging.events import Event, EventType
from heddle.workflows.status import NodeStatus, RunStatus

__all__ = ["RunProgress"]

#: Graphs up to this size show every node in the live panel; larger ones only those in flight.
SHOW_ALL_NODES = 12
MAX_ACTIVE_SHOWN = 8
_REFRESH_SECONDS = 0.1

# Where a node stands, as the panel counts it (PENDING and NOT_TAKEN are the table's words).
RUNNING, DONE, FAILED, SKIPPED = "running", "done", "failed", "skipped"
_STATES = (PENDING, RUNNING, DONE, FAILED, SKIPPED, NOT_TAKEN)  # in the order shown
_FINISHED = (DONE, FAILED, SKIPPED, NOT_TAKEN)
_COUNT_STYLES = {
    PENDING: "",
    RUNNING: "cyan",
    DONE: "green",
    FAILED: "red",
    SKIPPED: "yellow",
    NOT_TAKEN: NOT_TAKEN_STYLE,
}
_SYMBOLS = {PENDING: ".", DONE: "+", FAILED: "x", SKIPPED: "-", NOT_TAKEN: "-"}


@dataclass(slots=True)
class _Items:
    """How the items of one activation of a map node stand."""

    iteration: int
    total: int = 0  # 0 until the map's own node.started says how many
    done: int = 0
    failed: int = 0
    retries: int = 0

    def __str__(self) -> str:
        return items_tally(self.done, self.total, self.failed, self.retries)


class RunProgress:
    """Shows one run as its events arrive; an async context manager around the run.

    ``nodes`` are the graph's node names in order; ``done`` the nodes already
    finished before this process started (a resumed run's recorded successes);
    ``header`` is printed when the run starts; ``loops``: the graph has loops,
    so names get a run number (``write #2``) and the column leaves room for it.
    """

    def __init__(
        self,
        console: Console,
        graph_name: str,
        workflow_id: str,
        nodes: Sequence[str],
        *,
        done: Iterable[str] = (),
        header: str | None = None,
        loops: bool = False,
    ) -> None:
        self.console = console
        self.header = header
        self.graph_name = graph_name
        self.workflow_id = workflow_id
        self.nodes = list(nodes)
        self.state: dict[str, str] = dict.fromkeys(self.nodes, PENDING)
        self.detail: dict[str, str] = {}
        self.iteration: dict[str, int] = {}  # the latest run of each node that ran again
        self.items: dict[str, _Items] = {}  # the latest activation of each map node
        self.counts: Counter[str] = Counter({PENDING: len(self.nodes)})
        for name in done:
            self._set(name, DONE, "recorded earlier")
        self.retries = 0
        self.status: str | None = None  # the run's final RunStatus, from workflow.finished
        self.live_mode = console.is_terminal
        self._width = min(max((len(_shown(n)) for n in self.nodes), default=4), 24)
        if loops:  # room for a later run's " #2", so that the lines keep one column
            self._width += 3
        self._started = time.perf_counter()
        self._live: Live | None = None
        self._ticker: asyncio.Task[None] | None = None

    # -- state ------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def _set(self, node: str, state: str, detail: str = "") -> None:
        old = self.state.get(node)
        if old is None:  # an event for a node we were not told about: count it anyway
            self.nodes.append(node)
        else:
            self.counts[old] -= 1
        self.state[node] = state
        self.counts[state] += 1
        self.detail[node] = detail

    async def on_event(self, event: Event) -> None:
        """Follow one event of the run: a :class:`~heddle.workflows.RunObserver`."""
        self.follow(event)

    def follow(self, event: Event) -> None:
        """Follow one executor event."""
        kind, p = event.event_type, event.payload
        node = str(p.get("node", ""))
        if kind.startswith("node."):
            self.iteration[node] = iteration_of(p)
            if "item" in p:
                self._follow_item(kind, node, p)
                return
        line: str | None = None
        items = self.items.get(node)
        if kind == EventType.NODE_STARTED and "items" in p:
            items = self._items(node, p)
            items.total = int(p["items"])
            items.done += int(p.get("replayed", 0))  # committed before a resume: not run again
            self._set(node, RUNNING, str(items))
            line = f"started: {items.total} items"
            if p.get("replayed"):
                line += f", {p['replayed']} recorded done"
        elif kind == EventType.NODE_STARTED:
            attempt = int(p.get("attempt", 1))
            self._set(node, RUNNING, f"attempt {attempt}" if attempt > 1 else "")
            line = "started" + (f" (attempt {attempt})" if attempt > 1 else "")
        elif kind == EventType.NODE_SUCCEEDED:
            attempts = int(p.get("attempts", 1))
            took = format_duration(p.get("duration"))
            branches = f" {route(p['taken'])}" if "taken" in p else ""
            if items is not None and items.iteration == iteration_of(p):
                # Every item succeeded, those a resumed run recorded earlier too.
                items.done, items.failed = items.total, 0
                self._set(node, DONE, f"{took} ({items}){branches}")
                line = f"done in {took} ({items}){branches}"
            else:
                self._set(node, DONE, took + branches)
                line = f"done in {took}" + (f" after {attempts} attempts" if attempts > 1 else "")
                line += branches
        elif kind == EventType.NODE_RETRYING:
            self.retries += 1
            delay = float(p.get("delay", 0.0))
            self._set(node, PENDING, f"retry in {delay:.2f}s")
            line = f"attempt {p.get('attempt')} failed: {p.get('error')}; retrying in {delay:.2f}s"
        elif kind == EventType.NODE_FAILED:
            attempts = int(p.get("attempts", 0))
            if items is not None and items.iteration == iteration_of(p):
                took = format_duration(p.get("duration"))
                self._set(node, FAILED, str(items))
                line = f"failed in {took} ({items}): {p.get('error')}"
            else:
                self._set(node, FAILED, preview(p.get("error"), 40))
                plural = "s" if attempts != 1 else ""
                line = f"failed after {attempts} attempt{plural}: {p.get('error')}"
        elif kind == EventType.NODE_SKIPPED:
            reason = str(p.get("reason"))
            if is_not_taken({"status": NodeStatus.SKIPPED, "error": reason}):
                # The state says "not taken" already; the detail is the why.
                self._set(node, NOT_TAKEN, preview(reason.split(":", 1)[1], 40))
                line = reason
            else:
                self._set(node, SKIPPED, preview(reason, 40))
                line = f"skipped: {reason}"
        elif kind == EDGE_EXHAUSTED:
            self._note(loop_bound_text(p), "yellow")
        elif kind.startswith("circuit."):
            state = kind.split(".", 1)[1].replace("_", "-")
            self._note(f"circuit breaker of agent {p.get('agent')!r} {state}", "yellow")
        elif kind == EventType.WORKFLOW_STARTED:
            if self.header is not None:
                self.console.print(Text(visible(self.header)), soft_wrap=True)
        elif kind == EventType.WORKFLOW_FINISHED:
            self.status = str(p.get("status"))
        if line is not None:
            self._node_line(kind, node, line)

    def _items(self, node: str, p: Mapping[str, Any]) -> _Items:
        """The tally of ``node``'s items in the activation of event payload ``p``."""
        iteration = iteration_of(p)
        items = self.items.get(node)
        if items is None or items.iteration != iteration:
            items = self.items[node] = _Items(iteration)
        return items

    def _follow_item(self, kind: str, node: str, p: Mapping[str, Any]) -> None:
        """An event of one item of map node ``node``: its tally moves, the node counts do not."""
        items = self._items(node, p)
        if kind == EventType.NODE_RETRYING:
            self.retries += 1
            items.retries += 1
        elif kind == EventType.NODE_SUCCEEDED:
            items.done += 1
        elif kind == EventType.NODE_FAILED:
            items.failed += 1
            attempts = int(p.get("attempts", 0))
            plural = "s" if attempts != 1 else ""
            text = f"item {p['item']} failed after {attempts} attempt{plural}: {p.get('error')}"
            self._node_line(kind, node, text)
        # Running (again, if an item came before its map's own node.started), with the tally.
        self._set(node, RUNNING, str(items))

    # -- output -----------------------------------------------------------------------

    def _note(self, text: str, style: str = "") -> None:
        self.console.print(
            Text(f"{self.elapsed:7.2f}s  {visible(text, one_line=True)}", style=style),
            soft_wrap=True,
        )

    def _node_line(self, kind: str, node: str, text: str) -> None:
        node, text = self._label(node), visible(text, one_line=True)
        if self.live_mode:
            # On a terminal the panel shows progress; only what needs attention scrolls by.
            if kind not in (EventType.NODE_RETRYING, EventType.NODE_FAILED):
                return
            style = "red" if kind == EventType.NODE_FAILED else "yellow"
            self.console.print(Text(f"{node}: {text}", style=style), soft_wrap=True)
            return
        self._width = max(self._width, len(node))  # a later run's "write #2" widens it
        self.console.print(
            Text(f"{self.elapsed:7.2f}s  {node:<{self._width}}  {text}"), soft_wrap=True
        )

    def _label(self, node: str) -> str:
        return node_label(node, self.iteration.get(node, 0))

    def summary(self) -> str:
        """``3 done, 1 failed, 2 skipped, 1 not taken, 1 retry`` (no zero count but done)."""
        parts = [f"{self.counts[DONE]} done"]
        parts += [
            f"{self.counts[s]} {s}" for s in (FAILED, SKIPPED, NOT_TAKEN, PENDING) if self.counts[s]
        ]
        if self.retries:
            parts.append(f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}")
        return ", ".join(parts)

    def render(self) -> RenderableType:
        """The live panel."""
        total = len(self.nodes)
        finished = sum(self.counts[state] for state in _FINISHED)
        head = Table.grid(padding=(0, 1))
        if self.status is None:
            head.add_row(
                Spinner("dots", style="cyan"),
                Text(_shown(self.graph_name), style="bold"),
                Text(_shown(self.workflow_id), style="dim"),
                Text(format_duration(self.elapsed)),
            )
        else:
            ok = self.status == RunStatus.SUCCEEDED
            head.add_row(
                Text("OK" if ok else self.status.upper(), style="green" if ok else "red"),
                Text(_shown(self.graph_name), style="bold"),
                Text(_shown(self.workflow_id), style="dim"),
                Text(format_duration(self.elapsed)),
            )
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=finished, width=40),
            Text(f"{finished}/{total}"),
        )
        counts = Text()
        for state in _STATES:
            counts.append(f"{state} ", style="dim")
            counts.append(f"{self.counts[state]}  ", style=_COUNT_STYLES[state])
        counts.append("retries ", style="dim")
        counts.append(str(self.retries), style="yellow" if self.retries else "")
        parts: list[RenderableType] = [head, bar, counts]
        if self.status is None:
            parts.append(self._node_list())
        return Group(*parts)

    def _node_list(self) -> RenderableType:
        if len(self.nodes) <= SHOW_ALL_NODES:
            shown = self.nodes
            more = 0
        else:
            active = [n for n in self.nodes if self.state[n] == RUNNING]
            shown, more = active[:MAX_ACTIVE_SHOWN], max(0, len(active) - MAX_ACTIVE_SHOWN)
        grid = Table.grid(padding=(0, 1))
        for name in shown:
            state = self.state[name]
            mark: RenderableType
            if state == RUNNING:
                mark = Spinner("dots", style="cyan")
            else:
                mark = Text(_SYMBOLS[state], style=_COUNT_STYLES[state] or "dim")
            style = STATUS_STYLES.get(state) or _COUNT_STYLES[state]
            grid.add_row(
                mark,
                Text(self._label(name), style="" if state == RUNNING else "dim"),
                Text(state, style=style),
                Text(self.detail.get(name, ""), style="dim"),
            )
        if more:
            grid.add_row(Text(""), Text(f"... and {more} more running", style="dim"))
        return grid

    # -- lifecycle --------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH_SECONDS)
            if self._live is not None:
                self._live.refresh()

    async def __aenter__(self) -> Self:
        self._started = time.perf_counter()
        if self.live_mode:
            self._live = Live(
                get_renderable=self.render,
                console=self.console,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start(refresh=True)
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.wait({self._ticker})  # a cancel of this task still gets through
            self._ticker = None
        if self._live is not None:
            if self.status is None and exc_type is not None:
                self.status = RunStatus.CANCELLED
            self._live.refresh()
            self._live.stop()
            self._live = None
        elif self.status is not None:
            self._note(f"finished: {self.status} ({self.summary()})")

    def __repr__(self) -> str:
        return f"RunProgress({self.graph_name!r}, {self.workflow_id!r}, {dict(self.counts)})"


def _shown(name: str) -> str:
    return visible(name, one_line=True)
