"""The state of one workflow execution, as agents and task callables see it.

The executor is the only writer. It writes on the event loop through the
context's async methods; readers get read-only views, so a task callable can
look at what earlier nodes produced but cannot corrupt it, and sync agents in
worker threads get values (their task), never the context itself.

Why there is no lock: on one event loop, a mutation that contains no ``await``
cannot interleave with another. An ``asyncio.Lock`` around each list would
protect nothing more and cost two awaits per write.
The async methods stay async so a future backend (a shared store) can do I/O
behind them without changing callers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NotRequired, TypedDict, overload

from heddle.workflows.status import NodeStatus

__all__ = ["ExecutionContext", "Message", "NodeResult", "NodeStatus"]


class NodeResult(TypedDict):
    """What one activation of a node produced. JSON-serialisable when its content is."""

    content: Any
    status: NodeStatus
    error: str | None  # "TypeName: message", or why the node was skipped
    attempts: int
    duration: float  # seconds from the first attempt's start to the end, 0.0 if it never ran
    # Which run of the node this is: 0, or 1, 2, ... when a loop ran it again.
    iteration: NotRequired[int]
    # For a node with conditional out-edges that succeeded: the targets whose edges
    # were taken, in the order the edges were added.
    taken: NotRequired[list[str]]
    # For a map node: how each item ended, in item order ({"status", "error", "attempts"},
    # and "error_type" and "traceback" for an item that failed).
    items: NotRequired[list[dict[str, Any]]]
    # For an item of a map node in a durable run: a hash of the item, so that a resume
    # reuses the recorded result only for the same item.
    digest: NotRequired[str | None]
    resumed: NotRequired[bool]  # True when the result was replayed from a checkpoint
    # Set when the node failed because its agent (or its task) raised: the exception's
    # type ("ValueError", "mypackage.errors.QuotaError") and its formatted traceback
    # (capped in size: the head and the tail are kept).
    error_type: NotRequired[str | None]
    traceback: NotRequired[str | None]
    # Token counts and the like, when the agent reported them (a pydantic-ai agent does).
    usage: NotRequired[dict[str, int]]


class Message(TypedDict):
    """One entry of :attr:`ExecutionContext.messages`: a node that ran, in finishing order."""

    node: str
    agent: str
    status: NodeStatus
    content: Any
    error: str | None
    iteration: NotRequired[int]


class _SequenceView(Sequence[Any]):
    """A read-only live view of a list (O(1) to hand out, unlike a copy)."""

    __slots__ = ("_data",)

    def __init__(self, data: list[Any]) -> None:
        self._data = data

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._data[index]

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _SequenceView):
            return self._data == other._data
        return isinstance(other, list | tuple) and self._data == list(other)

    __hash__ = None  # type: ignore[assignment]


class ExecutionContext:
    """Messages, results and retry/failure counts of one execution.

    ``messages`` has one entry per node that ran (succeeded or failed), in the
    order they finished; ``results`` maps every finished node (skipped ones
    included) to its :class:`NodeResult`.
    """

    __slots__ = (
        "_failure_counts",
        "_log",
        "_messages",
        "_results",
        "_retry_counts",
        "graph_name",
        "input",
        "workflow_id",
    )

    def __init__(self, workflow_id: str, graph_name: str, input: Any = None) -> None:
        self.workflow_id = workflow_id
        self.graph_name = graph_name
        self.input = input
        # What ran, flat: node, agent, result, node, agent, result, ... Messages are built
        # from it when read: a run of 100,000 nodes makes no 100,000 dicts nobody reads.
        self._log: list[Any] = []
        self._messages: list[Message] = []
        self._results: dict[str, NodeResult] = {}
        self._retry_counts: dict[str, int] = {}
        self._failure_counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"ExecutionContext({self.workflow_id!r}, results={len(self._results)}, "
            f"messages={len(self._log) // 3})"
        )

    @property
    def messages(self) -> Sequence[Message]:
        messages, log = self._messages, self._log
        for k in range(3 * len(messages), len(log), 3):
            node, agent, result = log[k], log[k + 1], log[k + 2]
            message = Message(
                node=node,
                agent=agent,
                status=result["status"],
                content=result["content"],
                error=result["error"],
            )
            if "iteration" in result:
                message["iteration"] = result["iteration"]
            messages.append(message)
        return _SequenceView(messages)

    @property
    def results(self) -> Mapping[str, NodeResult]:
        return MappingProxyType(self._results)

    @property
    def retry_counts(self) -> Mapping[str, int]:
        """Retries per node (attempts after the first)."""
        return MappingProxyType(self._retry_counts)

    @property
    def failure_counts(self) -> Mapping[str, int]:
        """Failed attempts per node."""
        return MappingProxyType(self._failure_counts)

    def content(self, node: str) -> Any:
        """The content a finished node produced (KeyError naming the node if it has not)."""
        try:
            return self._results[node]["content"]
        except KeyError:
            finished = ", ".join(map(repr, self._results)) or "none"
            raise KeyError(f"node {node!r} has no result yet (finished: {finished})") from None

    async def add_message(self, message: Message) -> None:
        self._log += (message["node"], message["agent"], message)

    def record(self, node: str, agent: str, result: NodeResult, *, ran: bool = True) -> None:
        """Set ``node``'s result and, if it ran, its message, in one step (the executor's)."""
        self._results[node] = result
        if ran:
            self._log += (node, agent, result)

    async def set_result(self, node: str, result: NodeResult) -> None:
        self._results[node] = result

    async def increment_retry(self, node: str) -> int:
        count = self._retry_counts.get(node, 0) + 1
        self._retry_counts[node] = count
        return count

    async def increment_failure(self, node: str) -> int:
        count = self._failure_counts.get(node, 0) + 1
        self._failure_counts[node] = count
        return count
