"""How the SQLite checkpointer stores values, and reads its rows back checked."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from heddle.core.errors import CheckpointError, ResultNotRestorable
from heddle.workflows import codec
from heddle.workflows.checkpoint import RunLease, RunRecord, RunStatus
from heddle.workflows.context import NodeResult, NodeStatus

__all__ = [
    "SELECT_RUN",
    "SELECT_SUMMARY",
    "encode",
    "read_event",
    "read_node_result",
    "read_record",
]

# Results and inputs pass through encode and _decode only, so that how they are stored
# can change in one place.


# The user classes (Enums, dataclasses, pydantic models) this process has stored. Its own
# code made them, so reading them back may rebuild them: the type to restore always comes
# from the code (this set, or the classes the caller names), never from the database.
_STORED_CLASSES: set[type] = set()


def encode(value: Any, *, node: str | None, max_bytes: int) -> str:
    """The stored text of ``node``'s result (None: the run's input).

    Raises ResultNotSerializable or ResultTooLarge, naming the node.
    """
    seen: set[type] = set()
    text = codec.encode(value, node=node, max_bytes=max_bytes, seen=seen)
    if seen:
        _STORED_CLASSES.update(seen)
    return text


def _decode(
    text: Any,
    *,
    node: str | None,
    workflow_id: str,
    types: Iterable[type] = (),
    lenient: bool = False,
) -> Any:
    """The value stored as ``text`` for ``node`` (None: the input); ResultNotRestorable.

    ``lenient`` (for inspecting runs): a value holding a class this process
    cannot name comes back in its stored form, tags and all.
    """
    if not isinstance(text, str):
        raise ResultNotRestorable(
            f"cannot read back {_recorded(node, workflow_id)}: it is stored as "
            f"{type(text).__name__}, not text",
            workflow_id=workflow_id,
            node=node,
        )
    candidates = [*types, *_STORED_CLASSES]
    try:
        return codec.decode(text, types=candidates, node=node, workflow_id=workflow_id)
    except ResultNotRestorable:
        if not lenient:
            raise
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
        raise


def _recorded(node: str | None, workflow_id: str) -> str:
    what = "the input" if node is None else f"the result of node {node!r}"
    return f"{what} of run {workflow_id!r}"


_NODE_STATUSES: tuple[str, ...] = get_args(NodeStatus)
_RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)


def read_node_result(
    workflow_id: str,
    node: str,
    status: Any,
    text: Any,
    types: Iterable[type] = (),
    *,
    lenient: bool = False,
) -> NodeResult:
    """A recorded result, checked: ResultNotRestorable rather than a node taken for not run."""
    result = _decode(text, node=node, workflow_id=workflow_id, types=types, lenient=lenient)
    problem = _result_problem(result, status)
    if problem:
        raise ResultNotRestorable(
            f"cannot read back {_recorded(node, workflow_id)}: {problem}; heddle does not "
            "treat it as not run: restore the row, or delete it to have the node run again",
            workflow_id=workflow_id,
            node=node,
        )
    return result  # type: ignore[no-any-return]


def _result_problem(result: Any, status: Any) -> str | None:
    if not isinstance(result, dict):
        return f"it holds {type(result).__name__}, not a result"
    missing = [k for k in ("content", "status", "error", "attempts", "duration") if k not in result]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if result["status"] not in _NODE_STATUSES:
        return f"its status is {_preview(result['status'])}"
    if result["status"] != status:
        return f"its status column says {_preview(status)} but the result {result['status']!r}"
    if result["error"] is not None and not isinstance(result["error"], str):
        return f"its error is {_preview(result['error'])}"
    if isinstance(result["attempts"], bool) or not isinstance(result["attempts"], int):
        return f"its attempts are {_preview(result['attempts'])}"
    if isinstance(result["duration"], bool) or not isinstance(result["duration"], int | float):
        return f"its duration is {_preview(result['duration'])}"
    return None


def read_event(workflow_id: str, seq: int, text: Any, path: Path) -> dict[str, Any]:
    try:
        event = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        event = None
    if not isinstance(event, dict):
        raise CheckpointError(
            f"run {workflow_id!r} in {path}: its event {seq} is not a JSON object "
            f"({_preview(text)})",
            path=path,
        )
    return event


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


_SUMMARY_COLUMNS = (
    "workflow_id, graph_name, fingerprint, {input}, nodes, status, started_at, finished_at, "
    "owner, owner_site, lease_until, (SELECT COUNT(*) FROM heddle_node_results AS r "
    "WHERE r.workflow_id = heddle_runs.workflow_id AND r.status = 'success')"
)
SELECT_RUN = f"SELECT {_SUMMARY_COLUMNS.format(input='input')} FROM heddle_runs"
SELECT_SUMMARY = f"SELECT {_SUMMARY_COLUMNS.format(input='NULL')} FROM heddle_runs"


class _Row:
    """Reads the columns of one heddle_runs row, naming the run and column it cannot read."""

    def __init__(self, workflow_id: Any, path: Path) -> None:
        self.workflow_id = workflow_id
        self.path = path

    def bad(self, column: str, value: Any, expected: str) -> CheckpointError:
        return CheckpointError(
            f"run {self.workflow_id!r} in {self.path}: its {column} column holds "
            f"{_preview(value)}, not {expected}; heddle cannot read this run (fix or delete "
            "its row in heddle_runs)",
            path=self.path,
        )

    def text(self, column: str, value: Any, *, optional: bool = False) -> Any:
        if isinstance(value, str) or (optional and value is None):
            return value
        raise self.bad(column, value, "text")

    def moment(self, column: str, value: Any, *, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.bad(column, value, "an ISO 8601 timestamp") from None
        # heddle writes UTC with its offset; a time without one is read as UTC too.
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_record(
    row: tuple[Any, ...],
    path: Path,
    *,
    input_types: Iterable[type] = (),
    lenient: bool = False,
) -> RunRecord:
    (wid, graph, fingerprint, input_text, nodes_text, status, started, finished) = row[:8]
    owner, site, lease_until, done = row[8:]
    read = _Row(wid, path)
    read.text("workflow_id", wid)
    try:
        nodes = json.loads(nodes_text)
    except (TypeError, ValueError, RecursionError):
        nodes = None
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise read.bad("nodes", nodes_text, "a JSON list of node names")
    if status not in _RUN_STATUSES:
        raise read.bad("status", status, f"one of {', '.join(_RUN_STATUSES)}")
    owner = read.text("owner", owner, optional=True)
    until = read.moment("lease_until", lease_until, optional=True)
    return RunRecord(
        workflow_id=wid,
        graph_name=read.text("graph_name", graph),
        fingerprint=read.text("fingerprint", fingerprint),
        input=None
        if input_text is None
        else _decode(input_text, node=None, workflow_id=wid, types=input_types, lenient=lenient),
        nodes=tuple(nodes),
        status=status,
        started_at=read.moment("started_at", started),
        finished_at=read.moment("finished_at", finished, optional=True),
        lease=RunLease(owner, read.text("owner_site", site, optional=True) or "", until)
        if owner and until
        else None,
        nodes_done=int(done),
    )
