"""One execution of a graph: the scheduling state and loop behind WorkflowExecutor.

See :mod:`heddle.workflows.executor` for how a run is scheduled and why.
A :class:`Run` lives exactly as long as one ``execute()`` or ``resume()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from heddle.agents import await_if_needed
from heddle.core.errors import CircuitBreakerOpen, NodeTimeoutError, ResultNotSerializable
from heddle.messaging.events import Event, EventType
from heddle.workflows.context import ExecutionContext, Message, NodeResult, NodeStatus
from heddle.workflows.graph import INPUT_FIELD, Node, Plan
from heddle.workflows.resilience import CircuitState
from heddle.workflows.runner import RunnerSession

if TYPE_CHECKING:
    from heddle.workflows.executor import WorkflowExecutor

__all__ = ["FailFast", "Run", "error_text"]

logger = logging.getLogger("heddle.executor")

_STOP = -1  # queue sentinel: no more work for this worker


def error_text(exc: BaseException) -> str:
    """How a failure reads in results and events: ``"TypeName: message"``."""
    return f"{type(exc).__name__}: {exc}"


class FailFast(Exception):
    """Raised by a worker to make the TaskGroup cancel the run (fail_fast=True)."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


class Run:
    """The mutable state of one execution; lives exactly as long as ``execute()``."""

    def __init__(
        self,
        executor: WorkflowExecutor,
        plan: Plan,
        context: ExecutionContext,
        preloaded: Mapping[str, NodeResult] | None = None,
    ) -> None:
        n = len(plan.names)
        self.executor = executor
        self.plan = plan
        self.context = context
        self.waiting_on = [len(p) for p in plan.predecessors]
        self.status: list[NodeStatus | None] = [None] * n
        self.attempts = [0] * n
        self.tasks: list[Any] = [None] * n  # kept for retries, dropped when the node ends
        self.contents: list[Any] = [None] * n  # of succeeded nodes, for their dependents
        self.started = [0.0] * n
        self.remaining = n
        self.workers = min(executor.max_concurrent, n)
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.timers: set[asyncio.TimerHandle] = set()
        self.session: RunnerSession  # opened by go(), only if something is left to run
        self.breakers = executor.breakers
        self.fail_fast_node: str | None = None
        self.bus = executor.bus
        self.checkpointer = executor.checkpointer
        self.observe = self.bus is not None or self.checkpointer is not None
        self.lost_events = 0  # events the bus refused (it raised on publish)
        self.preloaded = preloaded

    async def emit(self, event_type: EventType, **payload: Any) -> None:
        event = Event(event_type, payload, source="executor", workflow_id=self.context.workflow_id)
        if self.bus is not None:
            try:
                await self.bus.publish(event)
            except Exception as exc:
                # Events are observations: a bus that is down (a Redis outage) must not
                # fail the work it observes. Say so once per run, then count quietly.
                self.lost_events += 1
                if self.lost_events == 1:
                    logger.warning(
                        "workflow %r: could not publish %s on %r (%s); the run goes on, "
                        "further publish failures of this run are not logged",
                        self.context.workflow_id,
                        event.event_type,
                        self.bus,
                        error_text(exc),
                    )
        if self.checkpointer is not None:
            await self.checkpointer.add_event(self.context.workflow_id, event.to_dict())

    async def emit_finished(self, graph: str, status: str, started_at: datetime) -> None:
        counts = {"success": 0, "failed": 0, "skipped": 0}
        for result in self.context.results.values():
            counts[result["status"]] += 1
        await self.emit(
            EventType.WORKFLOW_FINISHED,
            graph=graph,
            status=status,
            duration=(datetime.now(UTC) - started_at).total_seconds(),
            succeeded=counts["success"],
            failed=counts["failed"],
            skipped=counts["skipped"],
        )

    async def _circuit_changed(self, state: CircuitState | None, node: Node) -> None:
        if state is None or not self.observe:
            return
        event_type = {
            CircuitState.OPEN: EventType.CIRCUIT_OPENED,
            CircuitState.HALF_OPEN: EventType.CIRCUIT_HALF_OPEN,
            CircuitState.CLOSED: EventType.CIRCUIT_CLOSED,
        }[state]
        await self.emit(
            event_type,
            agent=node.spec.name,
            node=node.name,
            failures=await self.breakers.failures(node.spec.name),
        )

    async def go(self) -> None:
        if self.preloaded:
            await self._replay(self.preloaded)
        for i, count in enumerate(self.waiting_on):
            if count == 0 and self.status[i] is None:
                self.queue.put_nowait(i)
        if self.remaining == 0:
            return
        self.session = self.executor.runner.open(self.executor.max_concurrent)
        try:
            await self.session.start()
            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(self.workers):
                        tg.create_task(self._worker())
            except* FailFast:
                pass
            if self.fail_fast_node is not None:
                await self._mark_unfinished(self.fail_fast_node)
        finally:
            for timer in self.timers:
                timer.cancel()
            await self.session.aclose()

    async def _replay(self, recorded: Mapping[str, NodeResult]) -> None:
        """Take the recorded successes of an earlier attempt at this run as done."""
        plan, context = self.plan, self.context
        for i in plan.order:  # topological, so messages read as the run went
            name = plan.names[i]
            result = recorded.get(name)
            if result is None or result.get("status") != "success":
                continue
            result = NodeResult(**{**result, "resumed": True})
            self.status[i] = "success"
            self.contents[i] = result["content"]
            self.attempts[i] = result["attempts"]
            self.remaining -= 1
            await context.set_result(name, result)
            await context.add_message(
                Message(
                    node=name,
                    agent=plan.nodes[i].spec.name,
                    status="success",
                    content=result["content"],
                    error=None,
                )
            )
            for j in plan.successors[i]:
                self.waiting_on[j] -= 1

    async def _worker(self) -> None:
        queue = self.queue
        while True:
            i = await queue.get()
            if i == _STOP:
                return
            await self._attempt(i)

    async def _attempt(self, i: int) -> None:
        node = self.plan.nodes[i]
        if self.attempts[i] == 0:
            self.started[i] = time.perf_counter()
            try:
                self.tasks[i] = await self._task_for(i, node)
            except Exception as exc:
                logger.warning("node %r: building its task failed: %s", node.name, error_text(exc))
                await self._finish(i, None, "failed", f"TaskError: {error_text(exc)}")
                return
        breakers, agent = self.breakers, node.spec.name
        try:
            changed = await breakers.acquire(agent)
        except CircuitBreakerOpen as exc:  # the agent was not called: no attempt counted
            await self._fail(i, node, exc, None)
            return
        attempt = self.attempts[i] = self.attempts[i] + 1
        if self.observe:
            await self._circuit_changed(changed, node)
            await self.emit(
                EventType.NODE_STARTED, node=node.name, agent=node.spec.name, attempt=attempt
            )
        try:
            content = await self._call(node, self.tasks[i], attempt)
        except asyncio.CancelledError:
            await breakers.release(agent)
            raise
        except Exception as exc:
            changed = await breakers.record_failure(agent)
            if self.observe:
                await self._circuit_changed(changed, node)
            policy = node.retry or self.executor.retry
            delay = None
            if policy.should_retry(exc, attempt):
                delay = policy.delay(attempt, self.executor._rng)
            await self._fail(i, node, exc, delay)
            return
        changed = await breakers.record_success(agent)
        if self.observe:
            await self._circuit_changed(changed, node)
        await self._finish(i, content, "success", None)

    async def _call(self, node: Node, task: Any, attempt: int) -> Any:
        if node.timeout is None:
            return await self.session.call(node.spec, task)
        try:
            async with asyncio.timeout(node.timeout) as scope:
                return await self.session.call(node.spec, task)
        except TimeoutError as exc:
            if scope.expired():
                raise NodeTimeoutError(node.name, node.timeout, attempt) from exc
            raise

    async def _task_for(self, i: int, node: Node) -> Any:
        template = node.task
        preds = self.plan.predecessors[i]
        contents, names = self.contents, self.plan.names
        if template is None:
            if not preds:
                return self.context.input
            if len(preds) == 1:
                return contents[preds[0]]
            return {names[p]: contents[p] for p in preds}
        if isinstance(template, str):
            fields = {names[p]: contents[p] for p in preds}
            fields[INPUT_FIELD] = self.context.input
            return template.format_map(fields)
        if callable(template):
            return await await_if_needed(template(self.context))
        return template

    async def _fail(self, i: int, node: Node, exc: Exception, retry_delay: float | None) -> None:
        """Count a failed attempt; retry after ``retry_delay`` seconds, or fail the node if None."""
        context = self.context
        await context.increment_failure(node.name)
        if retry_delay is not None:
            await context.increment_retry(node.name)
            error = error_text(exc)
            logger.info(
                "node %r attempt %d failed, retrying: %s", node.name, self.attempts[i], error
            )
            if self.observe:
                await self.emit(
                    EventType.NODE_RETRYING,
                    node=node.name,
                    agent=node.spec.name,
                    attempt=self.attempts[i],
                    error=error,
                    delay=retry_delay,
                )
            self._retry_later(i, retry_delay)
            return
        logger.warning(
            "node %r failed after %d attempt(s): %s", node.name, self.attempts[i], error_text(exc)
        )
        await self._finish(i, None, "failed", error_text(exc))

    def _retry_later(self, i: int, delay: float) -> None:
        if delay <= 0:
            self.queue.put_nowait(i)
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.timers.discard(timer)
            self.queue.put_nowait(i)

        timer = loop.call_later(delay, fire)
        self.timers.add(timer)

    async def _finish(self, i: int, content: Any, status: NodeStatus, error: str | None) -> None:
        plan = self.plan
        name = plan.names[i]
        self.status[i] = status
        result = NodeResult(
            content=content,
            status=status,
            error=error,
            attempts=self.attempts[i],
            duration=time.perf_counter() - self.started[i],
        )
        if self.checkpointer is not None:
            result = await self._checkpoint(i, result)
            status, content, error = result["status"], result["content"], result["error"]
        self.tasks[i] = None
        self.contents[i] = content
        context = self.context
        await context.set_result(name, result)
        await context.add_message(
            Message(
                node=name,
                agent=plan.nodes[i].spec.name,
                status=status,
                content=content,
                error=error,
            )
        )
        self.remaining -= 1
        if self.observe:
            if status == "success":
                await self.emit(
                    EventType.NODE_SUCCEEDED,
                    node=name,
                    agent=plan.nodes[i].spec.name,
                    attempts=result["attempts"],
                    duration=result["duration"],
                )
            else:
                await self.emit(
                    EventType.NODE_FAILED,
                    node=name,
                    agent=plan.nodes[i].spec.name,
                    attempts=result["attempts"],
                    error=error,
                    duration=result["duration"],
                )
        if status == "success":
            waiting_on, statuses, queue = self.waiting_on, self.status, self.queue
            for j in plan.successors[i]:
                waiting_on[j] -= 1
                if waiting_on[j] == 0 and statuses[j] is None:
                    queue.put_nowait(j)
        else:
            await self._skip_descendants(i, f"upstream node {name!r} failed")
            if self.executor.fail_fast:
                self.fail_fast_node = name
                raise FailFast(name)
        if self.remaining == 0:
            for _ in range(self.workers):
                self.queue.put_nowait(_STOP)

    async def _checkpoint(self, i: int, result: NodeResult) -> NodeResult:
        """Record a final result; a success is durable before its dependents may start."""
        assert self.checkpointer is not None
        name, wid = self.plan.names[i], self.context.workflow_id
        try:
            await self.checkpointer.save_node(wid, name, result, wait=result["status"] == "success")
        except ResultNotSerializable as exc:
            logger.warning("node %r failed: %s", name, exc)
            self.status[i] = "failed"
            result = NodeResult(**{**result, "content": None, "status": "failed"})
            result["error"] = error_text(exc)
            await self.checkpointer.save_node(wid, name, result, wait=False)
        return result

    async def _skip_descendants(self, i: int, reason: str) -> None:
        plan, status = self.plan, self.status
        stack = list(plan.successors[i])
        while stack:
            j = stack.pop()
            if status[j] is not None:
                continue
            await self._skip(j, reason)
            stack.extend(plan.successors[j])

    async def _skip(self, j: int, reason: str) -> None:
        self.status[j] = "skipped"
        self.remaining -= 1
        result = NodeResult(
            content=None, status="skipped", error=reason, attempts=self.attempts[j], duration=0.0
        )
        await self.context.set_result(self.plan.names[j], result)
        if self.checkpointer is not None:
            await self.checkpointer.save_node(
                self.context.workflow_id, self.plan.names[j], result, wait=False
            )
        if self.observe:
            await self.emit(EventType.NODE_SKIPPED, node=self.plan.names[j], reason=reason)

    async def _mark_unfinished(self, failed: str) -> None:
        for j, status in enumerate(self.status):
            if status is None:
                what = "cancelled" if self.attempts[j] else "not run"
                await self._skip(j, f"{what}: fail_fast after node {failed!r} failed")
