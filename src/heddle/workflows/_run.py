"""One execution of a graph: the scheduling state and loop behind WorkflowExecutor.

See :mod:`heddle.workflows.executor` for how a run is scheduled and why.
A :class:`Run` lives exactly as long as one ``execute()`` or ``resume()``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from heddle import agents as agents_module
from heddle.agents import AgentReply, await_if_needed
from heddle.core.errors import (
    CircuitBreakerOpen,
    NodeTimeoutError,
    ResultNotSerializable,
    ResultTooLarge,
)
from heddle.messaging.events import Event, EventType
from heddle.workflows import runner as runner_module
from heddle.workflows.context import ExecutionContext, Message, NodeResult, NodeStatus
from heddle.workflows.graph import INPUT_FIELD, Node, Plan
from heddle.workflows.resilience import CircuitState
from heddle.workflows.runner import LocalRunner, RunnerSession

if TYPE_CHECKING:
    from heddle.workflows.executor import WorkflowExecutor

__all__ = ["Run", "error_text", "error_type", "format_traceback"]

logger = logging.getLogger("heddle.executor")

_STOP = -1  # queue sentinel: no more work for this worker

#: A recorded traceback keeps this many characters: its head and its tail.
MAX_TRACEBACK_CHARS = 16_000

# The modules whose frames lead from the run loop to an agent: a recorded
# traceback starts at the first frame after them, in the agent's own code.
_CALLING_FILES = frozenset(
    module.__file__ for module in (sys.modules[__name__], runner_module, agents_module)
)


def error_text(exc: BaseException) -> str:
    """How a failure reads in results and events: ``"TypeName: message"``."""
    try:
        message = str(exc)
    except Exception:  # RecursionError included: an agent's exception may be hostile
        message = "<its message could not be produced: str() raised>"
    if isinstance(exc, asyncio.CancelledError) and not message:
        message = (
            "the agent raised CancelledError itself (it awaited a task or future that was "
            "cancelled); the run was not cancelled"
        )
    return f"{type(exc).__name__}: {message}"


def error_type(exc: BaseException) -> str:
    """The exception's type as a user would import it: ``ValueError``, ``pkg.errors.Quota``."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """``exc``'s formatted traceback, cut in the middle when longer than ``limit``.

    The head says where the failure entered the agent, the tail where it was
    raised and what it was: both are kept.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _CALLING_FILES:
        tb = tb.tb_next  # heddle's own frames, between the run loop and the agent
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    except Exception as format_error:  # a hostile __str__ must not take the run down
        text = f"{error_type(exc)} (its traceback could not be formatted: {format_error!r})\n"
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n... {cut} characters cut ...\n{text[-half:]}"


_SYNC_TIMEOUT = "a sync agent cannot be interrupted, so the call runs on in its thread"
_SYNC_TIMEOUT_LOCAL = (
    f"{_SYNC_TIMEOUT}, and a retry waits for it and takes its result if it returns"
)


class _Stop(Exception):
    """Raised inside a worker when the run must stop; the worker cancels the others."""


class Run:
    """The mutable state of one execution; lives exactly as long as ``execute()``.

    A node's state changes in one place, :meth:`_settle`, with no ``await``
    inside it: a cancellation (fail-fast, an outside cancel) can interrupt a
    node before that point or after it, never half-way, so every node ends in
    exactly one status. The workers never raise anything but the run's own
    cancellation and :class:`_Stop`: whatever stops a run reaches ``execute()``
    as one error, never an ``ExceptionGroup``.
    """

    def __init__(
        self,
        executor: WorkflowExecutor,
        plan: Plan,
        context: ExecutionContext,
        preloaded: Mapping[str, NodeResult] | None = None,
        *,
        owner: str | None = None,
        lease_guard: Callable[[], Awaitable[None]] | None = None,
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
        self.bus = executor.bus
        self.checkpointer = executor.checkpointer
        self.owner = owner  # the lease token every checkpoint write of this run carries
        self.lease_guard = lease_guard  # awaited before each attempt: do we still own the run?
        self.observe = self.bus is not None or self.checkpointer is not None
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self.lost_events = 0  # events the bus refused (it raised on publish)
        self.preloaded = preloaded
        # Why the run stops early: the node that failed under fail_fast, or the error
        # (a checkpoint or lease failure) that execute() raises. Set before _Stop.
        self.fail_fast_node: str | None = None
        self.fatal: Exception | None = None
        self.driver: asyncio.Task[Any] | None = None
        self.worker_tasks: list[asyncio.Task[None]] = []
        self.local_runner = isinstance(executor.runner, LocalRunner)

    def _log_extra(self, node: Node, attempt: int, **more: Any) -> dict[str, Any]:
        return {
            "workflow_id": self.context.workflow_id,
            "node": node.name,
            "agent": node.spec.name,
            "attempt": attempt,
            **more,
        }

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
                        extra={"workflow_id": self.context.workflow_id},
                    )
        if self.checkpointer is not None:
            await self.checkpointer.add_event(
                self.context.workflow_id, event.to_dict(), owner=self.owner
            )

    async def emit_finished(
        self, graph: str, status: str, started_at: datetime, **more: Any
    ) -> None:
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
            **more,
        )

    async def _circuit_changed(self, state: CircuitState | None, node: Node) -> None:
        if state is None or not self.observe:
            return
        event_type = {
            CircuitState.OPEN: EventType.CIRCUIT_OPENED,
            CircuitState.HALF_OPEN: EventType.CIRCUIT_HALF_OPEN,
            CircuitState.CLOSED: EventType.CIRCUIT_CLOSED,
        }[state]
        try:
            failures = await self.breakers.failures(node.spec.name)
        except Exception:  # only for the event: a shared registry may be unreachable
            failures = -1
        await self.emit(event_type, agent=node.spec.name, node=node.name, failures=failures)

    # -- the loop ----------------------------------------------------------------------

    async def go(self) -> None:
        """Run every node that is not done; raise ``self.fatal`` if something stopped the run."""
        self.driver = asyncio.current_task()
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
            # Workers never raise: a worker that stops the run cancels the others
            # itself. (A TaskGroup whose child raises cancels this task too, and on
            # Python 3.11 leaves that cancel request counted, which would make the
            # caller's own timeouts and cancels misfire.)
            async with asyncio.TaskGroup() as tg:
                self.worker_tasks = [tg.create_task(self._worker()) for _ in range(self.workers)]
            if self.fatal is not None:
                raise self.fatal
            if self.remaining:  # fail_fast cancelled what was left
                failed = self.fail_fast_node or "?"
                await self._mark_unfinished(failed)
        finally:
            for timer in self.timers:
                timer.cancel()
            await self.session.aclose()

    def _stopping(self) -> bool:
        """Whether a cancellation now is the run's own (fail-fast, fatal error, outside cancel)."""
        if self.fail_fast_node is not None or self.fatal is not None:
            return True
        return self.driver is not None and self.driver.cancelling() > 0

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
        me = asyncio.current_task()
        assert me is not None
        try:
            while True:
                i = _STOP
                try:
                    i = await queue.get()
                    if i == _STOP:
                        return
                    await self._attempt(i)
                except asyncio.CancelledError as exc:
                    if self._stopping():
                        raise
                    # Not the run's cancellation: an agent cancelled its own task, or
                    # someone cancelled this worker. The worker lives on; the node ends.
                    while me.uncancel():
                        pass
                    if i != _STOP and self.status[i] is None:
                        await self._guarded(self._finish_failed(i, exc))
                except _Stop:
                    raise
                except Exception as exc:
                    self._stop_with(exc)
        except _Stop:  # this worker stops the run: the others are cancelled
            for task in self.worker_tasks:
                if task is not me:
                    task.cancel()

    async def _guarded(self, step: Awaitable[None]) -> None:
        """Await a bookkeeping step; an error in it stops the run (see :meth:`_stop_with`)."""
        try:
            await step
        except Exception as exc:
            self._stop_with(exc)

    def _stop_with(self, exc: Exception) -> NoReturn:
        """Stop the run: recording it failed (checkpoint, lease); execute() raises ``exc``."""
        if isinstance(exc, _Stop):
            raise exc
        if self.fatal is None:
            self.fatal = exc
            logger.error(
                "workflow %r stops: %s",
                self.context.workflow_id,
                error_text(exc),
                extra={"workflow_id": self.context.workflow_id, "error_type": error_type(exc)},
            )
        raise _Stop from exc

    async def _attempt(self, i: int) -> None:
        if self.status[i] is not None:  # ended meanwhile (a stray cancel failed it)
            return
        node = self.plan.nodes[i]
        if self.attempts[i] == 0:
            self.started[i] = time.perf_counter()
            try:
                self.tasks[i] = await self._task_for(i, node)
            except Exception as exc:
                logger.warning(
                    "node %r: building its task failed: %s",
                    node.name,
                    error_text(exc),
                    extra=self._log_extra(node, 0, error_type=error_type(exc)),
                )
                await self._finish(i, None, "failed", exc, prefix="TaskError: ")
                return
        if self.lease_guard is not None:
            await self.lease_guard()  # raises LeaseLostError: this process must start nothing
        breakers, agent = self.breakers, node.spec.name
        try:
            changed = await breakers.acquire(agent)
        except CircuitBreakerOpen as exc:  # the agent was not called: no attempt counted
            await self._fail(i, node, exc, None)
            return
        except Exception as exc:  # the breakers' backend failed: this attempt fails
            attempt = self.attempts[i] = self.attempts[i] + 1
            await self._fail(i, node, exc, self._retry_delay(node, exc, attempt))
            return
        attempt = self.attempts[i] = self.attempts[i] + 1
        if self.debug:
            logger.debug(
                "node %r attempt %d starts",
                node.name,
                attempt,
                extra=self._log_extra(node, attempt),
            )
        if self.observe:
            await self._circuit_changed(changed, node)
            await self.emit(
                EventType.NODE_STARTED, node=node.name, agent=node.spec.name, attempt=attempt
            )
        try:
            content = await self._call(node, self.tasks[i], attempt)
        except asyncio.CancelledError as exc:
            if self._stopping():
                await self._record(breakers.release, node)
                raise
            # The agent raised CancelledError itself (it awaited something that another
            # task cancelled): a failure of the agent, retried only if the policy says so.
            me = asyncio.current_task()
            while me is not None and me.uncancel():
                pass
            await self._agent_failed(i, node, exc, attempt)
            return
        except Exception as exc:
            await self._agent_failed(i, node, exc, attempt)
            return
        try:  # inline, not through _record: this is the hot path of every node
            changed = await breakers.record_success(agent)
        except Exception as exc:
            self._unrecorded(node, exc)
            changed = None
        if self.observe:
            await self._circuit_changed(changed, node)
        if self.debug:
            logger.debug(
                "node %r attempt %d succeeded",
                node.name,
                attempt,
                extra=self._log_extra(node, attempt),
            )
        usage = None
        if type(content) is AgentReply:  # an agent that reports usage (pydantic-ai)
            content, usage = content.content, content.usage
        await self._finish(i, content, "success", None, usage=usage)

    async def _agent_failed(self, i: int, node: Node, exc: BaseException, attempt: int) -> None:
        changed = await self._record(self.breakers.record_failure, node)
        if self.observe:
            await self._circuit_changed(changed, node)
        await self._fail(i, node, exc, self._retry_delay(node, exc, attempt))

    def _retry_delay(self, node: Node, exc: BaseException, attempt: int) -> float | None:
        policy = node.retry or self.executor.retry
        if policy.should_retry(exc, attempt):
            return policy.delay(attempt, self.executor._rng)
        return None

    async def _record(
        self, verdict: Callable[[str], Awaitable[CircuitState | None]], node: Node
    ) -> CircuitState | None:
        """Tell the breakers how a call went; their failure does not change the node's outcome."""
        try:
            return await verdict(node.spec.name)
        except Exception as exc:
            self._unrecorded(node, exc)
            return None

    def _unrecorded(self, node: Node, exc: Exception) -> None:
        logger.warning(
            "node %r: could not update the circuit breaker of agent %r: %s",
            node.name,
            node.spec.name,
            error_text(exc),
            extra=self._log_extra(node, 0, error_type=error_type(exc)),
        )

    async def _call(self, node: Node, task: Any, attempt: int) -> Any:
        if node.timeout is None:
            return await self.session.call(node.spec, task)
        try:
            async with asyncio.timeout(node.timeout) as scope:
                return await self.session.call(node.spec, task)
        except TimeoutError as exc:
            if scope.expired():
                detail = ""
                if not node.spec.is_async:
                    detail = _SYNC_TIMEOUT_LOCAL if self.local_runner else _SYNC_TIMEOUT
                raise NodeTimeoutError(node.name, node.timeout, attempt, detail) from exc
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

    async def _fail(
        self, i: int, node: Node, exc: BaseException, retry_delay: float | None
    ) -> None:
        """Count a failed attempt; retry after ``retry_delay`` seconds, or fail the node if None."""
        context = self.context
        await context.increment_failure(node.name)
        attempt = self.attempts[i]
        if retry_delay is not None:
            await context.increment_retry(node.name)
            error = error_text(exc)
            logger.info(
                "node %r attempt %d failed, retrying in %.3gs: %s",
                node.name,
                attempt,
                retry_delay,
                error,
                extra=self._log_extra(node, attempt, error_type=error_type(exc)),
            )
            if self.observe:
                await self.emit(
                    EventType.NODE_RETRYING,
                    node=node.name,
                    agent=node.spec.name,
                    attempt=attempt,
                    error=error,
                    error_type=error_type(exc),
                    delay=retry_delay,
                )
            self._retry_later(i, retry_delay)
            return
        logger.warning(
            "node %r failed after %d attempt(s): %s",
            node.name,
            attempt,
            error_text(exc),
            extra=self._log_extra(node, attempt, error_type=error_type(exc)),
        )
        await self._finish(i, None, "failed", exc)

    async def _finish_failed(self, i: int, exc: BaseException) -> None:
        """End node ``i`` failed with ``exc`` outside the usual path (a stray cancellation)."""
        node = self.plan.nodes[i]
        if self.attempts[i] == 0:
            self.started[i] = time.perf_counter()
        logger.warning(
            "node %r failed: %s",
            node.name,
            error_text(exc),
            extra=self._log_extra(node, self.attempts[i], error_type=error_type(exc)),
        )
        await self._finish(i, None, "failed", exc)

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

    async def _finish(
        self,
        i: int,
        content: Any,
        status: NodeStatus,
        exc: BaseException | None,
        *,
        prefix: str = "",
        usage: Mapping[str, int] | None = None,
    ) -> None:
        """Record node ``i``'s final result, settle the run's state, then tell the observers."""
        result = NodeResult(
            content=content,
            status=status,
            error=None,
            attempts=self.attempts[i],
            duration=time.perf_counter() - self.started[i],
        )
        if exc is not None:
            result["error"] = prefix + error_text(exc)
            result["error_type"] = error_type(exc)
            result["traceback"] = format_traceback(exc)
        if usage is not None:
            result["usage"] = dict(usage)
        if self.checkpointer is not None:
            result = await self._checkpoint(i, result)
        # From here to add_message nothing suspends (the context is in memory), so no
        # cancellation can come between: the node, its dependents and the run's count
        # change together, and every node ends in exactly one status.
        plan = self.plan
        name = plan.names[i]
        await self.context.set_result(name, result)  # in memory: never suspends
        # _settle and _release_successors, inlined: this is every node's path.
        status = self.status[i] = result["status"]
        self.tasks[i] = None
        self.contents[i] = result["content"]
        self.remaining -= 1
        succeeded = status == "success"
        if succeeded:
            waiting_on, statuses, queue = self.waiting_on, self.status, self.queue
            for j in plan.successors[i]:
                waiting_on[j] -= 1
                if waiting_on[j] == 0 and statuses[j] is None:
                    queue.put_nowait(j)
        else:
            reason = f"upstream node {name!r} failed"
            doomed = await self._doom_descendants(i, reason)
        if self.remaining == 0:
            self._stop_workers()
        await self.context.add_message(
            Message(
                node=name,
                agent=self.plan.nodes[i].spec.name,
                status=result["status"],
                content=result["content"],
                error=result["error"],
            )
        )
        if self.observe:
            await self._emit_end(i, result)
        if succeeded:
            return
        if doomed:
            await self._announce_skips(doomed, reason)
        if self.executor.fail_fast:
            self.fail_fast_node = name
            raise _Stop

    def _settle(self, i: int, result: NodeResult) -> None:
        """Node ``i`` has ended with ``result`` (already in the context): no await here."""
        self.status[i] = result["status"]
        self.tasks[i] = None
        self.contents[i] = result["content"]
        self.remaining -= 1

    def _stop_workers(self) -> None:
        """Every node has ended: each worker takes one stop sentinel and returns."""
        for _ in range(self.workers):
            self.queue.put_nowait(_STOP)

    async def _emit_end(self, i: int, result: NodeResult) -> None:
        name, agent = self.plan.names[i], self.plan.nodes[i].spec.name
        if result["status"] == "success":
            await self.emit(
                EventType.NODE_SUCCEEDED,
                node=name,
                agent=agent,
                attempts=result["attempts"],
                duration=result["duration"],
            )
        else:
            await self.emit(
                EventType.NODE_FAILED,
                node=name,
                agent=agent,
                attempts=result["attempts"],
                error=result["error"],
                error_type=result.get("error_type"),
                traceback=result.get("traceback"),
                duration=result["duration"],
            )

    async def _checkpoint(self, i: int, result: NodeResult) -> NodeResult:
        """Record a final result; a success is durable before its dependents may start."""
        assert self.checkpointer is not None
        name, wid = self.plan.names[i], self.context.workflow_id
        try:
            await self.checkpointer.save_node(
                wid, name, result, wait=result["status"] == "success", owner=self.owner
            )
        except (ResultNotSerializable, ResultTooLarge) as exc:
            # The work is done but cannot be stored: the node fails, and its content stays
            # in the in-memory result so that the caller does not lose it.
            logger.warning(
                "node %r failed: %s", name, exc, extra={"workflow_id": wid, "node": name}
            )
            failed = NodeResult(
                content=None,
                status="failed",
                error=error_text(exc),
                attempts=result["attempts"],
                duration=result["duration"],
                error_type=error_type(exc),
                traceback=None,
            )
            await self.checkpointer.save_node(wid, name, failed, wait=False, owner=self.owner)
            result = NodeResult(**{**failed, "content": result["content"]})
        return result

    async def _doom_descendants(self, i: int, reason: str) -> list[int]:
        """Mark every unfinished node downstream of ``i`` skipped; return them."""
        plan, status = self.plan, self.status
        doomed = []
        stack = list(plan.successors[i])
        while stack:
            j = stack.pop()
            if status[j] is not None:
                continue
            await self._skip(j, reason)
            doomed.append(j)
            stack.extend(plan.successors[j])
        return doomed

    async def _skip(self, j: int, reason: str) -> None:
        result = NodeResult(
            content=None, status="skipped", error=reason, attempts=self.attempts[j], duration=0.0
        )
        await self.context.set_result(self.plan.names[j], result)  # never suspends
        self._settle(j, result)

    async def _announce_skips(self, doomed: list[int], reason: str) -> None:
        """Record and publish skips already settled by :meth:`_skip`."""
        wid, names, checkpointer = self.context.workflow_id, self.plan.names, self.checkpointer
        for j in doomed:
            if checkpointer is not None:
                result = self.context.results[names[j]]
                await checkpointer.save_node(wid, names[j], result, wait=False, owner=self.owner)
            if self.observe:
                await self.emit(EventType.NODE_SKIPPED, node=names[j], reason=reason)

    async def _mark_unfinished(self, failed: str) -> None:
        for j, status in enumerate(self.status):
            if status is None:
                what = "cancelled" if self.attempts[j] else "not run"
                reason = f"{what}: fail_fast after node {failed!r} failed"
                await self._skip(j, reason)
                await self._announce_skips([j], reason)
