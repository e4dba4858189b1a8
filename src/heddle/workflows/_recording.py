"""How a run records what ended: results in the checkpoint, skips, and their events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from heddle.core.errors import ResultNotSerializable, ResultTooLarge
from heddle.messaging.events import EventType
from heddle.workflows._failures import error_text, error_type
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus

if TYPE_CHECKING:
    from heddle.workflows._frontier import Frontier
    from heddle.workflows.checkpoint import Checkpointer
    from heddle.workflows.context import ExecutionContext
    from heddle.workflows.graph import Plan
    from heddle.workflows.observers import RunObserver

__all__ = ["Recording"]

logger = logging.getLogger("heddle.executor")

_SUCCEEDED, _FAILED, _SKIPPED = NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED


class Recording:
    """The part of a run that records ends: checkpoint writes, skips and end events.

    A part of :class:`Run`, which provides what is declared here.
    """

    if TYPE_CHECKING:
        plan: Plan
        frontier: Frontier
        context: ExecutionContext
        checkpointer: Checkpointer | None
        owner: str | None
        observers: tuple[RunObserver, ...]
        history: dict[str, list[NodeResult]] | None
        attempts: list[int]
        tasks: list[Any]
        contents: list[Any]

        def _wake(self) -> None: ...
        async def emit(self, event_type: EventType, **payload: Any) -> None: ...

    async def _take_skips(self) -> list[tuple[int, str, NodeResult]]:
        """Give the nodes the frontier just skipped their results; never suspends.

        Called right after :meth:`Frontier.settle`, before any ``await`` that
        could suspend, so that a cancellation never finds a node ended in the
        frontier without its result.
        """
        frontier = self.frontier
        if not frontier.skipped:
            return []
        skipped, frontier.skipped = frontier.skipped, []
        out = [(j, why, await self._skip(j, why, iteration)) for j, why, iteration in skipped]
        if frontier.open == 0:
            self._wake()
        return out

    async def _announce(self, skips: list[tuple[int, str, NodeResult]]) -> None:
        """Record and publish what the frontier decided besides the node's own end."""
        frontier = self.frontier
        if frontier.exhausted:
            exhausted, frontier.exhausted = frontier.exhausted, []
            if self.observers:
                names = self.plan.names
                for edge, iteration in exhausted:
                    await self.emit(
                        EventType.EDGE_EXHAUSTED,
                        source=names[edge.source],
                        target=names[edge.target],
                        iteration=iteration,
                        max_iterations=edge.max_iterations,
                    )
        for j, reason, result in skips:
            await self._announce_skip(j, reason, result)

    async def _emit_end(self, i: int, result: NodeResult, item: int | None = None) -> None:
        payload: dict[str, Any] = {
            "node": self.plan.names[i],
            "agent": self.plan.nodes[i].spec.name,
            "attempts": result["attempts"],
            "iteration": result["iteration"],
            "duration": result["duration"],
        }
        if item is not None:
            payload["item"] = item
        if result["status"] == _SUCCEEDED:
            if "taken" in result:
                payload["taken"] = result["taken"]
            await self.emit(EventType.NODE_SUCCEEDED, **payload)
        else:
            payload["error"] = result["error"]
            payload["error_type"] = result.get("error_type")
            payload["traceback"] = result.get("traceback")
            await self.emit(EventType.NODE_FAILED, **payload)

    async def _checkpoint(self, i: int, result: NodeResult, item: int | None = None) -> NodeResult:
        """Record a final result; a success is durable before its dependents may start."""
        assert self.checkpointer is not None
        name, wid = self.plan.names[i], self.context.workflow_id
        iteration = result["iteration"]
        try:
            await self.checkpointer.save_node(
                wid,
                name,
                result,
                iteration=iteration,
                item=item,
                wait=result["status"] == _SUCCEEDED,
                owner=self.owner,
            )
        except (ResultNotSerializable, ResultTooLarge) as exc:
            # The work is done but cannot be stored: the node fails, and its content stays
            # in the in-memory result so that the caller does not lose it.
            logger.warning(
                "node %r failed: %s", name, exc, extra={"workflow_id": wid, "node": name}
            )
            failed = NodeResult(
                content=None,
                status=_FAILED,
                error=error_text(exc),
                attempts=result["attempts"],
                duration=result["duration"],
                iteration=iteration,
                error_type=error_type(exc),
                traceback=None,
            )
            await self.checkpointer.save_node(
                wid, name, failed, iteration=iteration, item=item, wait=False, owner=self.owner
            )
            result = NodeResult(**{**failed, "content": result["content"]})
        return result

    async def _skip(self, j: int, reason: str, iteration: int) -> NodeResult:
        """Node ``j`` is skipped (the frontier says so): its result, in memory."""
        name = self.plan.names[j]
        result = NodeResult(
            content=None,
            status=_SKIPPED,
            error=reason,
            attempts=self.attempts[j],
            duration=0.0,
            iteration=iteration,
        )
        self.context.record(name, self.plan.nodes[j].spec.name, result, ran=False)
        if self.history is not None:
            self.history.setdefault(name, []).append(result)
        self.tasks[j] = None
        self.contents[j] = None
        return result

    async def _announce_skip(self, j: int, reason: str, result: NodeResult) -> None:
        """Record and publish a skip already settled by :meth:`_skip`."""
        name = self.plan.names[j]
        if self.checkpointer is not None:
            await self.checkpointer.save_node(
                self.context.workflow_id,
                name,
                result,
                iteration=result["iteration"],
                wait=False,
                owner=self.owner,
            )
        if self.observers:
            await self.emit(
                EventType.NODE_SKIPPED, node=name, reason=reason, iteration=result["iteration"]
            )
