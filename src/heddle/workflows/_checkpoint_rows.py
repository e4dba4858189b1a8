"""How the SQLite checkpointer stores values, and reads its rows back checked."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heddle.core.errors import CheckpointError, ConfigurationError, ResultNotRestorable
from heddle.workflows import codec
from heddle.workflows.activation import Activation
from heddle.workflows.checkpoint import RunLease, RunRecord, RunStatus
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus

__all__ = [
    "END_STATUSES",
    "SELECT_RUN",
    "SELECT_SUMMARY",
    "STORED_STATUSES",
    "encode",
    "encode_result",
    "read_event",
    "read_node_result",
    "read_record",
    "recorded",
    "run_status",
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


# Keys of a result that its row holds, or that only the reader sets: never in the stored text.
_NOT_STORED = frozenset({"resumed", "iteration", "item"})


def encode_result(result: NodeResult, *, node: str, max_bytes: int) -> tuple[str, str]:
    """The stored status word and text of ``node``'s result.

    Both hold the status as its plain word (``"succeeded"``), never as a tagged
    :class:`NodeStatus`. Raises ConfigurationError for a status that is not a
    node status, ResultNotSerializable or ResultTooLarge for the rest.
    """
    status = _node_status(result["status"])
    if status is None:
        raise ConfigurationError(
            f"the result of node {node!r} has the status {_preview(result['status'])}, "
            f"not one of {', '.join(NodeStatus)}",
            parameter="result",
        )
    stored = {k: v for k, v in result.items() if k not in _NOT_STORED}
    stored["status"] = status.value
    return status.value, encode(stored, node=node, max_bytes=max_bytes)


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
            f"cannot read back {recorded(node, workflow_id)}: it is stored as "
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


def recorded(node: str | None, workflow_id: str, activation: Activation | None = None) -> str:
    """Names what was recorded: "the result of node 'a' (iteration 2) of run 'w'"."""
    what = "the input" if node is None else f"the result of node {node!r}"
    if activation is not None and activation.iteration:
        what += f" (iteration {activation.iteration})"
    if activation is not None and activation.item is not None:
        what += f" (item {activation.item})"
    return f"{what} of run {workflow_id!r}"


# Version 1 of the schema wrote "success"; opening a file migrates it, but a read-only
# open reads the file as it is. Writes take the old word too, from callers not yet moved
# to NodeStatus, and store the new one.
_OLD_WORDS = {"success": NodeStatus.SUCCEEDED}


def _node_status(value: Any) -> NodeStatus | None:
    """The NodeStatus that ``value`` (a member, its word, or an old word) stands for, or None."""
    if isinstance(value, NodeStatus):
        return value
    if not isinstance(value, str):
        return None
    try:
        return NodeStatus(value)
    except ValueError:
        return _OLD_WORDS.get(value)


def read_node_result(
    workflow_id: str,
    activation: Activation,
    status: Any,
    text: Any,
    types: Iterable[type] = (),
    *,
    lenient: bool = False,
) -> NodeResult:
    """A recorded result, checked: ResultNotRestorable rather than a node taken for not run.

    Its ``"status"`` is a :class:`NodeStatus` member, its ``"iteration"`` that
    of ``activation``, and its ``"item"`` too when that is not None.
    """
    node = activation.node
    result = _decode(text, node=node, workflow_id=workflow_id, types=types, lenient=lenient)
    problem = _result_problem(result, status)
    if problem:
        raise ResultNotRestorable(
            f"cannot read back {recorded(node, workflow_id, activation)}: {problem}; heddle "
            "does not treat it as not run: restore the row, or delete it to have the node run "
            "again",
            workflow_id=workflow_id,
            node=node,
        )
    result["status"] = _node_status(result["status"])
    result["iteration"] = activation.iteration
    if activation.item is None:
        result.pop("item", None)
    else:
        result["item"] = activation.item
    return result  # type: ignore[no-any-return]


def _result_problem(result: Any, status: Any) -> str | None:
    if not isinstance(result, dict):
        return f"it holds {type(result).__name__}, not a result"
    missing = [k for k in ("content", "status", "error", "attempts", "duration") if k not in result]
    if missing:
        return f"it lacks {', '.join(missing)}"
    word = _node_status(result["status"])
    if word is None:
        return f"its status is {_preview(result['status'])}"
    if word != _node_status(status):
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


# nodes_done: the nodes with a succeeded activation ('success': a version-1 file read as it is).
_SUMMARY_COLUMNS = (
    "workflow_id, graph_name, fingerprint, {input}, nodes, status, started_at, finished_at, "
    "owner, owner_site, lease_until, (SELECT COUNT(DISTINCT r.node) FROM heddle_node_results "
    "AS r WHERE r.workflow_id = heddle_runs.workflow_id AND r.status IN ('succeeded', "
    "'success'))"
)
SELECT_RUN = f"SELECT {_SUMMARY_COLUMNS.format(input='input')} FROM heddle_runs"
SELECT_SUMMARY = f"SELECT {_SUMMARY_COLUMNS.format(input='NULL')} FROM heddle_runs"


STORED_STATUSES = tuple(s for s in RunStatus if s is not RunStatus.INTERRUPTED)
"""The run statuses a row holds (``interrupted`` is how a running one reads, never stored)."""

END_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
"""The statuses a run ends with."""


def run_status(
    value: Any, *, parameter: str, allowed: Iterable[RunStatus] = RunStatus
) -> RunStatus:
    """``value`` (a RunStatus or its word) as a member of ``allowed``, else ConfigurationError."""
    allowed = tuple(allowed)
    try:
        status = RunStatus(value)
    except ValueError:
        pass
    else:
        if status in allowed:
            return status
    raise ConfigurationError(
        f"{parameter} must be one of {', '.join(allowed)}, got {value!r}", parameter=parameter
    )


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
    if status not in STORED_STATUSES:
        raise read.bad("status", status, f"one of {', '.join(STORED_STATUSES)}")
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
        status=RunStatus(status),
        started_at=read.moment("started_at", started),
        finished_at=read.moment("finished_at", finished, optional=True),
        lease=RunLease(owner, read.text("owner_site", site, optional=True) or "", until)
        if owner and until
        else None,
        nodes_done=int(done),
    )
