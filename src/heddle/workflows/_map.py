"""A map node's items: one activation per item of its task, gathered back into one result."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heddle.core.errors import MapError, RoutingError
from heddle.messaging.events import EventType
from heddle.workflows._failures import error_text, error_type, format_traceback
from heddle.workflows._frontier import decide
from heddle.workflows.codec import encode
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from heddle.workflows._frontier import Frontier
    from heddle.workflows._settings import Preloaded, RunSettings
    from heddle.workflows.checkpoint import Checkpointer
    from heddle.workflows.graph import Plan
    from heddle.workflows.observers import RunObserver

__all__ = ["MapItems", "MapState", "item_digest", "items_summary", "map_failure"]

_SUCCEEDED, _FAILED = NodeStatus.SUCCEEDED, NodeStatus.FAILED


@dataclass(slots=True)
class MapState:
    """The items of one activation of a map node, while they run."""

    node: int
    iteration: int
    started: float  # when the node's activation started (its task was built)
    results: list[NodeResult | None]  # by item, None until the item ends
    left: int  # items not ended yet


def item_digest(item: Any) -> str | None:
    """A short hash of an item as stored (None if it cannot be stored: never reused)."""
    try:
        text = encode(item, node=None)
    except Exception:
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def items_summary(results: list[NodeResult | None]) -> list[dict[str, Any]]:
    """How each item ended, for the map node's result (``"items"``): no contents, no tracebacks
    but for failed items."""
    summary = []
    for result in results:
        if result is None:  # fail_fast ended the node before this item did
            summary.append({"status": "skipped", "error": "cancelled: fail_fast", "attempts": 0})
            continue
        entry: dict[str, Any] = {
            "status": str(result["status"]),  # the plain word: stored as JSON, read anywhere
            "error": result["error"],
            "attempts": result["attempts"],
        }
        if result["status"] != NodeStatus.SUCCEEDED:
            entry["error_type"] = result.get("error_type")
            entry["traceback"] = result.get("traceback")
        summary.append(entry)
    return summary


def map_failure(node: str, results: list[NodeResult | None]) -> MapError | None:
    """The error of a map node some of whose items failed; None if every item succeeded."""
    failed = [k for k, r in enumerate(results) if r is not None and r["status"] != _SUCCEEDED]
    if not failed:
        return None
    first = results[failed[0]]
    shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
    detail = f"{len(failed)} of {len(results)} items failed (items {shown})"
    if first is not None and first["error"]:
        detail += f"; item {failed[0]}: {first['error']}"
    return MapError(node, detail, failed=failed)


class MapItems:
    """The part of a run that fans a map node out into its items and gathers them back.

    Items are slots ``n, n+1, ...`` of the run (after its nodes' own slots): each
    has its own attempts, retries, timeout and breaker call, and the run's one
    concurrency bound holds for them as for nodes. A part of :class:`Run`, which
    provides what is declared here.
    """

    if TYPE_CHECKING:
        n: int
        plan: Plan
        frontier: Frontier
        routed: bool
        settings: RunSettings
        preloaded: Preloaded | None
        observers: tuple[RunObserver, ...]
        checkpointer: Checkpointer | None
        attempts: list[int]
        tasks: list[Any]
        started: list[float]
        slot_node: list[int]
        slot_item: list[int]
        maps: dict[int, MapState]

        def _queue(self, ready: Sequence[int]) -> None: ...
        def _item_slot(self, s: int) -> tuple[int, int]: ...
        async def emit(self, event_type: EventType, **payload: Any) -> None: ...
        async def _emit_end(self, i: int, result: NodeResult, item: int | None = None) -> None: ...
        async def _checkpoint(
            self, i: int, result: NodeResult, item: int | None = None
        ) -> NodeResult: ...
        async def _finish(
            self,
            i: int,
            content: Any,
            status: NodeStatus,
            exc: BaseException | None,
            *,
            cause: BaseException | None = None,
            usage: Mapping[str, int] | None = None,
            taken: frozenset[int] | None = None,
            items: list[dict[str, Any]] | None = None,
        ) -> None: ...

    async def _expand(self, i: int) -> None:
        """Map node ``i``'s task is built: start one activation per item of it."""
        node, task = self.plan.nodes[i], self.tasks[i]
        if not isinstance(task, list):
            got = type(task).__name__
            error = MapError(
                node.name, f"its task must be a list (one activation per item), got {got}"
            )
            await self._finish(i, None, _FAILED, error)
            return
        count = len(task)
        iteration = self.frontier.iteration[i]
        state = MapState(i, iteration, self.started[i], [None] * count, count)
        self.maps[i] = state
        self.tasks[i] = None
        first = self.n + len(self.slot_node)
        self.slot_node += [i] * count
        self.slot_item += range(count)
        self.attempts += [0] * count
        self.tasks += task
        self.started += [0.0] * count
        if self.preloaded is not None:  # items a crashed run committed are not run again
            for k in range(count):
                recorded = self.preloaded.get((node.name, iteration, k))
                if (
                    recorded is not None
                    and recorded.get("status") == _SUCCEEDED
                    and recorded.get("digest") == item_digest(task[k])  # still the same item
                ):
                    state.results[k] = NodeResult(**{**recorded, "resumed": True})
                    state.left -= 1
                    self.tasks[first + k] = None
        if self.observers:
            await self.emit(
                EventType.NODE_STARTED,
                node=node.name,
                agent=node.spec.name,
                attempt=1,
                iteration=iteration,
                items=count,
                replayed=count - state.left,  # committed before a resume: not run again
            )
        if state.left:
            self._queue([first + k for k in range(count) if state.results[k] is None])
        if not state.left and self.maps.get(i) is state:
            await self._complete_map(i)

    async def _finish_item(
        self,
        s: int,
        content: Any,
        status: NodeStatus,
        exc: BaseException | None,
        *,
        cause: BaseException | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> None:
        """Record how item slot ``s`` ended; the last item to end completes its map node."""
        i, item = self._item_slot(s)
        state = self.maps.get(i)
        if state is None or state.results[item] is not None:
            return  # its node ended meanwhile
        result = NodeResult(
            content=content,
            status=status,
            error=None,
            attempts=self.attempts[s],
            duration=time.perf_counter() - self.started[s],
            iteration=state.iteration,
        )
        if exc is not None:
            result["error"] = error_text(exc)
            result["error_type"] = error_type(exc)
            result["traceback"] = format_traceback(cause or exc)
        if usage is not None:
            result["usage"] = dict(usage)
        if self.checkpointer is not None:
            # Which item this was, so that a resume reuses it only for the same item.
            result["digest"] = item_digest(self.tasks[s])
            result = await self._checkpoint(i, result, item)
        state.results[item] = result  # from the checkpoint to here, nothing suspends
        state.left -= 1
        self.attempts[s] = 0
        self.tasks[s] = None
        if self.observers:
            await self._emit_end(i, result, item)
        stop = status != _SUCCEEDED and self.settings.fail_fast  # the node fails at once
        if (stop or not state.left) and self.maps.get(i) is state:
            await self._complete_map(i)

    async def _complete_map(self, i: int) -> None:
        """Every item of map node ``i`` ended: its content is their contents, in item order."""
        state = self.maps.pop(i)
        results = state.results
        self.attempts[i] = sum(r["attempts"] for r in results if r is not None)
        self.started[i] = state.started
        items = items_summary(results)
        content = [None if r is None else r["content"] for r in results]
        failure = map_failure(self.plan.names[i], results)
        if failure is not None:
            await self._finish(i, content, _FAILED, failure, items=items)
            return
        taken = None
        if self.routed and self.plan.routes[i] is not None:
            try:
                taken = self.frontier.bound(i, decide(self.plan, i, content))
            except RoutingError as exc:
                await self._finish(
                    i, content, _FAILED, exc, cause=exc.__cause__ or exc, items=items
                )
                return
        await self._finish(i, content, _SUCCEEDED, None, taken=taken, items=items)
