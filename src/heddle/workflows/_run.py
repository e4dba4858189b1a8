"""One execution of a graph: the attempts, the workers and the observers of a run.

See :mod:`heddle.workflows.executor` for how a run is scheduled and why.
A :class:`Run` lives exactly as long as one ``execute()`` or ``resume()``.
It is built from small parts: a :class:`~heddle.workflows._frontier.Frontier`
(readiness and routing), the attempts (task, breakers, the agent call under
its timeout, retries on timers), and the observers (events).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from heddle.agents import AgentReply, await_if_needed
from heddle.core.errors import (
    CircuitBreakerOpen,
    NodeTimeoutError,
    RoutingError,
    TaskBuildError,
)
from heddle.messaging.events import Event, EventType
from heddle.workflows._failures import error_text, error_type, format_traceback
from heddle.workflows._frontier import READY, Frontier, decide, route_names
from heddle.workflows._map import MapItems, MapState
from heddle.workflows._recording import Recording
from heddle.workflows._settings import Preloaded, RunSettings
from heddle.workflows.context import ExecutionContext, NodeResult
from heddle.workflows.current import ATTEMPT, AttemptContext, attempt_scope
from heddle.workflows.graph import INPUT_FIELD, Node, Plan
from heddle.workflows.observers import RunObserver
from heddle.workflows.resilience import CircuitState
from heddle.workflows.runner import LocalRunner, RunnerSession
from heddle.workflows.status import NodeStatus

__all__ = ["Run"]

logger = logging.getLogger("heddle.executor")

_SUCCEEDED, _FAILED, _SKIPPED = NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED

_SYNC_TIMEOUT = "a sync agent cannot be interrupted, so the call runs on in its thread"
_SYNC_TIMEOUT_LOCAL = (
    f"{_SYNC_TIMEOUT}, and a retry waits for it and takes its result if it returns"
)


class _Stop(Exception):
    """Raised inside a worker when the run must stop; the worker cancels the others."""


class Run(MapItems, Recording):
    """The mutable state of one execution; lives exactly as long as ``execute()``.

    An activation's end changes the run's state in one place, :meth:`_finish`
    after its checkpoint write, with no ``await`` between the result and the
    frontier: a cancellation (fail-fast, an outside cancel) can interrupt a
    node before that point or after it, never half-way, so every activation
    ends in exactly one status. The workers never raise anything but the
    run's own cancellation and :class:`_Stop`: whatever stops a run reaches
    ``execute()`` as one error, never an ``ExceptionGroup``.

    Workers are started on demand, up to ``max_concurrent``: a worker takes
    ready activations until none is left, then ends. An agent that never
    suspends is run to the end by one worker; more start only when work is
    waiting while the others are busy.
    """

    def __init__(
        self,
        settings: RunSettings,
        plan: Plan,
        context: ExecutionContext,
        *,
        observers: Sequence[RunObserver] = (),
        preloaded: Preloaded | None = None,
        owner: str | None = None,
    ) -> None:
        n = self.n = len(plan.names)
        self.settings = settings
        self.plan = plan
        self.context = context
        self.frontier = Frontier(plan)
        # Per slot: a node's current activation (slots 0..n-1), then a map's items (n...).
        self.attempts = [0] * n
        self.tasks: list[Any] = [None] * n  # kept for retries, dropped when the node ends
        self.started = [0.0] * n
        self.slot_node: list[int] = []  # slot n + k runs an item of map node slot_node[k]
        self.slot_item: list[int] = []
        self.maps: dict[int, MapState] = {}  # map nodes whose items are running
        self.contents: list[Any] = [None] * n  # latest content of each node, for its dependents
        self.history: dict[str, list[NodeResult]] | None = None if plan.static else {}
        self.routed = not plan.static
        self.failed_any = False  # an activation failed: the run fails, whatever came after
        self.ready: deque[int] = deque()
        self.workers = 0
        self.tg: asyncio.TaskGroup | None = None
        self.topup_pending = False
        self.done: asyncio.Future[None] | None = None
        self.timers: set[asyncio.TimerHandle] = set()
        self.session: RunnerSession  # opened by go(), only if something is left to run
        self.breakers = settings.breakers
        self.checkpointer = settings.checkpointer
        self.observers = tuple(observers)
        self.owner = owner  # the lease token every checkpoint write of this run carries
        self.lease_guard: Callable[[], Awaitable[None]] | None = None  # before each attempt
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self.preloaded = preloaded or None
        # Why the run stops early: the node that failed under fail_fast, or the error
        # (a checkpoint or lease failure) that execute() raises. Set before _Stop.
        self.fail_fast_node: str | None = None
        self.fatal: Exception | None = None
        self.driver: asyncio.Task[Any] | None = None
        self.worker_tasks: set[asyncio.Task[None]] = set()
        self.local_runner = isinstance(settings.runner, LocalRunner)

    def _log_extra(self, node: Node, attempt: int, **more: Any) -> dict[str, Any]:
        return {
            "workflow_id": self.context.workflow_id,
            "node": node.name,
            "agent": node.spec.name,
            "attempt": attempt,
            **more,
        }

    async def emit(self, event_type: EventType, **payload: Any) -> None:
        """Hand an event to every observer (callers check ``self.observers`` first)."""
        event = Event(event_type, payload, source="executor", workflow_id=self.context.workflow_id)
        for observer in self.observers:
            await observer.on_event(event)

    async def emit_finished(
        self, graph: str, status: str, started_at: datetime, **more: Any
    ) -> None:
        counts = dict.fromkeys(NodeStatus, 0)
        for result in self.context.results.values():
            counts[result["status"]] += 1
        await self.emit(
            EventType.WORKFLOW_FINISHED,
            graph=graph,
            status=status,
            duration=(datetime.now(UTC) - started_at).total_seconds(),
            succeeded=counts[_SUCCEEDED],
            failed=counts[_FAILED],
            skipped=counts[_SKIPPED],
            **more,
        )

    async def _circuit_changed(self, state: CircuitState | None, node: Node) -> None:
        if state is None or not self.observers:
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

    def succeeded(self) -> bool:
        """No activation failed, and every node's latest one succeeded or was not taken."""
        if self.failed_any:
            return False
        not_taken = self.frontier.not_taken
        index = self.plan.index
        for name, result in self.context.results.items():
            status = result["status"]
            if status != _SUCCEEDED and not (status == _SKIPPED and index[name] in not_taken):
                return False
        return True

    # -- the loop ----------------------------------------------------------------------

    async def go(self) -> None:
        """Run every activation that is not done; raise ``self.fatal`` if something stopped it."""
        self.driver = asyncio.current_task()
        await self._release(self.frontier.start())
        if self.frontier.open == 0:
            return
        self.session = self.settings.runner.open(self.settings.max_concurrent)
        try:
            await self.session.start()
            # Workers never raise: a worker that stops the run cancels the others
            # itself. (A TaskGroup whose child raises cancels this task too, and on
            # Python 3.11 leaves that cancel request counted, which would make the
            # caller's own timeouts and cancels misfire.)
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                self.done = asyncio.get_running_loop().create_future()
                self._topup()
                if self.frontier.open and self.fatal is None and self.fail_fast_node is None:
                    await self.done
            if self.fatal is not None:
                raise self.fatal
            if self.frontier.open:  # fail_fast cancelled what was left
                await self._mark_unfinished(self.fail_fast_node or "?")
        finally:
            self.tg = None
            for timer in self.timers:
                timer.cancel()
            await self.session.aclose()

    def _stopping(self) -> bool:
        """Whether a cancellation now is the run's own (fail-fast, fatal error, outside cancel)."""
        if self.fail_fast_node is not None or self.fatal is not None:
            return True
        return self.driver is not None and self.driver.cancelling() > 0

    def _wake(self) -> None:
        """The run is over (every node ended) or stops: let go() leave its task group."""
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _topup(self) -> None:
        """Start workers for the ready activations, up to ``max_concurrent`` in all."""
        self.topup_pending = False
        tg = self.tg
        if tg is None or self._stopping():
            return
        wanted = min(self.settings.max_concurrent - self.workers, len(self.ready))
        for _ in range(wanted):
            self.workers += 1
            task = tg.create_task(self._worker())
            self.worker_tasks.add(task)
            task.add_done_callback(self.worker_tasks.discard)

    def _schedule(self, i: int) -> None:
        self._queue((i,))

    def _queue(self, ready: Sequence[int]) -> None:
        """Queue ready activations; more workers start once the loop gets a turn."""
        self.ready.extend(ready)
        if (
            not self.topup_pending
            and self.tg is not None
            and self.workers < self.settings.max_concurrent
        ):
            # Not now: the worker that made them ready takes the next itself if its
            # agent never suspends.
            self.topup_pending = True
            asyncio.get_running_loop().call_soon(self._topup)

    async def _release(self, ready: list[int]) -> None:
        """Queue the activations that became ready; replay those recorded earlier."""
        preloaded = self.preloaded
        if preloaded is None:
            for i in ready:
                self._schedule(i)
            return
        work = deque(ready)
        names, iteration = self.plan.names, self.frontier.iteration
        while work:
            i = work.popleft()
            recorded = preloaded.get((names[i], iteration[i]))
            if recorded is None or recorded.get("status") != _SUCCEEDED:
                self._schedule(i)
                continue
            more = await self._replay(i, recorded)
            if more is None:
                self._schedule(i)  # its routing cannot be replayed: run it again
            else:
                work.extend(more)

    async def _replay(self, i: int, recorded: NodeResult) -> list[int] | None:
        """Take node ``i``'s recorded success as this activation's end; the nodes now ready."""
        plan = self.plan
        name = plan.names[i]
        taken: frozenset[int] | None = None
        if plan.routes[i] is not None:
            names = recorded.get("taken")
            if isinstance(names, list) and all(n in plan.index for n in names):
                taken = frozenset(plan.index[n] for n in names)
            else:
                try:
                    taken = self.frontier.bound(i, decide(plan, i, recorded["content"]))
                except RoutingError:
                    return None
        result = NodeResult(**{**recorded, "resumed": True})
        result["iteration"] = self.frontier.iteration[i]
        self.contents[i] = result["content"]
        self.context.record(name, plan.nodes[i].spec.name, result)
        if self.history is not None:
            self.history.setdefault(name, []).append(result)
        ready = self.frontier.settle(i, _SUCCEEDED, taken)
        skips = await self._take_skips()
        if self.frontier.open == 0:
            self._wake()  # the last node ended by a replay, mid-run
        await self._announce(skips)
        return ready

    async def _worker(self) -> None:
        ready = self.ready
        me = asyncio.current_task()
        assert me is not None
        try:
            while ready:
                i = ready.popleft()
                try:
                    await self._attempt(i)
                except asyncio.CancelledError as exc:
                    if self._stopping():
                        raise
                    # Not the run's cancellation: an agent cancelled its own task, or
                    # someone cancelled this worker. The worker lives on; the node ends.
                    while me.uncancel():
                        pass
                    if self._open(i):
                        await self._guarded(self._finish_failed(i, exc))
                except _Stop:
                    raise
                except Exception as exc:
                    self._stop_with(exc)
        except _Stop:  # this worker stops the run: the others are cancelled
            for task in list(self.worker_tasks):
                if task is not me:
                    task.cancel()
            self._wake()
        finally:
            self.workers -= 1

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

    def attempt_context(self, s: int, attempt: int) -> AttemptContext:
        """What ``heddle.current()`` returns in attempt ``attempt`` of slot ``s``."""
        i, item = (s, None) if s < self.n else self._item_slot(s)
        node = self.plan.nodes[i]
        return AttemptContext(
            self.context.workflow_id,
            self.context.graph_name,
            node.name,
            node.spec.name,
            attempt,
            self.frontier.iteration[i],
            item,
        )

    def _item_slot(self, s: int) -> tuple[int, int]:
        """The map node and the item index that slot ``s`` (>= n) runs."""
        return self.slot_node[s - self.n], self.slot_item[s - self.n]

    def _open(self, s: int) -> bool:
        """Whether slot ``s`` still has an activation to run (not ended meanwhile)."""
        if s < self.n:
            return self.frontier.state[s] == READY
        i, item = self._item_slot(s)
        state = self.maps.get(i)
        return state is not None and state.results[item] is None

    def _item(self, s: int) -> dict[str, int]:
        """The ``item`` key of slot ``s``'s events: none for a node's own activation."""
        return {} if s < self.n else {"item": self.slot_item[s - self.n]}

    async def _attempt(self, s: int) -> None:
        """Run one attempt of slot ``s``: a node's activation, or an item of a map node."""
        if s < self.n:
            i = s
            if self.frontier.state[i] != READY:  # ended meanwhile (a stray cancel failed it)
                return
            node = self.plan.nodes[i]
            if self.attempts[i] == 0:
                if node.map and i in self.maps:
                    return  # its items are running
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
                    error = TaskBuildError(node.name, exc)
                    error.__cause__ = exc
                    await self._finish(i, None, _FAILED, error, cause=exc)
                    return
                if node.map:
                    await self._expand(i)
                    return
        else:
            if not self._open(s):
                return
            i = self.slot_node[s - self.n]
            node = self.plan.nodes[i]
            if self.attempts[s] == 0:
                self.started[s] = time.perf_counter()
        if self.lease_guard is not None:
            await self.lease_guard()  # raises LeaseLostError: this process must start nothing
        breakers, agent = self.breakers, node.spec.name
        try:
            changed = await breakers.acquire(agent)
        except CircuitBreakerOpen as exc:  # the agent was not called: no attempt counted
            await self._fail(s, node, exc, None)
            return
        except Exception as exc:  # the breakers' backend failed: this attempt fails
            attempt = self.attempts[s] = self.attempts[s] + 1
            await self._fail(s, node, exc, self._retry_delay(node, exc, attempt))
            return
        attempt = self.attempts[s] = self.attempts[s] + 1
        if self.debug:
            logger.debug(
                "node %r attempt %d starts",
                node.name,
                attempt,
                extra=self._log_extra(node, attempt),
            )
        if self.observers:
            await self._circuit_changed(changed, node)
            await self.emit(
                EventType.NODE_STARTED,
                node=node.name,
                agent=node.spec.name,
                attempt=attempt,
                iteration=self.frontier.iteration[i],
                **self._item(s),
            )
        # heddle.current() for the agent, built only if it asks. Not reset afterwards: the
        # worker's own context, and the next attempt in it sets its own (a reset would
        # double the cost, which every node pays).
        ATTEMPT.set((self, s, attempt))
        try:
            content = await self._call(node, self.tasks[s], attempt)
        except asyncio.CancelledError as exc:
            if self._stopping():
                await self._record(breakers.release, node)
                raise
            # The agent raised CancelledError itself (it awaited something that another
            # task cancelled): a failure of the agent, retried only if the policy says so.
            me = asyncio.current_task()
            while me is not None and me.uncancel():
                pass
            await self._agent_failed(s, node, exc, attempt)
            return
        except Exception as exc:
            await self._agent_failed(s, node, exc, attempt)
            return
        try:  # inline, not through _record: this is the hot path of every node
            changed = await breakers.record_success(agent)
        except Exception as exc:
            self._unrecorded(node, exc)
            changed = None
        if self.observers:
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
        if s >= self.n:
            await self._finish_item(s, content, _SUCCEEDED, None, usage=usage)
            return
        taken = None
        if self.routed and self.plan.routes[i] is not None:
            try:
                taken = self.frontier.bound(i, decide(self.plan, i, content))
            except RoutingError as exc:  # the agent's work is done: not retried
                logger.warning(
                    "node %r failed: %s",
                    node.name,
                    exc,
                    extra=self._log_extra(node, attempt, error_type=error_type(exc)),
                )
                await self._finish(i, content, _FAILED, exc, cause=exc.__cause__ or exc)
                return
        await self._finish(i, content, _SUCCEEDED, None, usage=usage, taken=taken)

    async def _agent_failed(self, i: int, node: Node, exc: BaseException, attempt: int) -> None:
        changed = await self._record(self.breakers.record_failure, node)
        if self.observers:
            await self._circuit_changed(changed, node)
        await self._fail(i, node, exc, self._retry_delay(node, exc, attempt))

    def _retry_delay(self, node: Node, exc: BaseException, attempt: int) -> float | None:
        policy = node.retry or self.settings.retry
        if policy.should_retry(exc, attempt):
            return policy.delay(attempt, self.settings.rng)
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
        contents, names, plan = self.contents, self.plan.names, self.plan
        inputs = plan.predecessors[i] if plan.static else self.frontier.inputs(i)
        if template is None:
            if not inputs:
                return self.context.input
            if len(inputs) == 1:
                return contents[inputs[0]]
            return {names[p]: contents[p] for p in inputs}
        if isinstance(template, str):
            fields: dict[str, Any] = {}
            if not plan.static:  # a source whose edge delivered nothing formats as ""
                fields = dict.fromkeys(
                    (names[p] for p in (*plan.predecessors[i], *plan.back_sources[i])), ""
                )
            fields.update({names[p]: contents[p] for p in inputs})
            fields[INPUT_FIELD] = self.context.input
            return template.format_map(fields)
        if callable(template):
            with attempt_scope(self.attempt_context(i, self.attempts[i] + 1)):
                return await await_if_needed(template(self.context))
        return template

    async def _fail(
        self, s: int, node: Node, exc: BaseException, retry_delay: float | None
    ) -> None:
        """Count a failed attempt; retry after ``retry_delay`` seconds, or fail the slot if None."""
        context = self.context
        await context.increment_failure(node.name)
        attempt = self.attempts[s]
        i = s if s < self.n else self.slot_node[s - self.n]
        item = self._item(s)  # {"item": k} for an item of a map node, in logs and events
        what = f"{node.name!r}" + (f" item {item['item']}" if item else "")
        if retry_delay is not None:
            await context.increment_retry(node.name)
            error = error_text(exc)
            logger.info(
                "node %s attempt %d failed, retrying in %.3gs: %s",
                what,
                attempt,
                retry_delay,
                error,
                extra=self._log_extra(node, attempt, error_type=error_type(exc), **item),
            )
            if self.observers:
                await self.emit(
                    EventType.NODE_RETRYING,
                    node=node.name,
                    agent=node.spec.name,
                    attempt=attempt,
                    iteration=self.frontier.iteration[i],
                    error=error,
                    error_type=error_type(exc),
                    delay=retry_delay,
                    **item,
                )
            self._retry_later(s, retry_delay)
            return
        logger.warning(
            "node %s failed after %d attempt(s): %s",
            what,
            attempt,
            error_text(exc),
            extra=self._log_extra(node, attempt, error_type=error_type(exc), **item),
        )
        await self._finish(s, None, _FAILED, exc)

    async def _finish_failed(self, s: int, exc: BaseException) -> None:
        """End slot ``s`` failed with ``exc`` outside the usual path (a stray cancellation)."""
        node = self.plan.nodes[s if s < self.n else self.slot_node[s - self.n]]
        if self.attempts[s] == 0:
            self.started[s] = time.perf_counter()
        logger.warning(
            "node %r failed: %s",
            node.name,
            error_text(exc),
            extra=self._log_extra(node, self.attempts[s], error_type=error_type(exc)),
        )
        await self._finish(s, None, _FAILED, exc)

    def _retry_later(self, i: int, delay: float) -> None:
        if delay <= 0:
            self._schedule(i)
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.timers.discard(timer)
            self._schedule(i)

        timer = loop.call_later(delay, fire)
        self.timers.add(timer)

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
    ) -> None:
        """Record activation ``i``'s result, settle the frontier, then tell the observers."""
        if i >= self.n:
            await self._finish_item(i, content, status, exc, cause=cause, usage=usage)
            return
        plan, frontier = self.plan, self.frontier
        iteration = frontier.iteration[i]
        result = NodeResult(
            content=content,
            status=status,
            error=None,
            attempts=self.attempts[i],
            duration=time.perf_counter() - self.started[i],
            iteration=iteration,
        )
        if exc is not None:
            result["error"] = error_text(exc)
            result["error_type"] = error_type(exc)
            result["traceback"] = format_traceback(cause or exc)
        if usage is not None:
            result["usage"] = dict(usage)
        if taken is not None:
            result["taken"] = route_names(plan, i, taken)
        if items is not None:
            result["items"] = items
            if cause is None and exc is not None:  # the first failed item's, if any
                result["traceback"] = next(
                    (e["traceback"] for e in items if e.get("traceback")), None
                )
        if self.checkpointer is not None:
            result = await self._checkpoint(i, result)
            if result["status"] != status:  # could not be stored: it failed after all
                status, taken = result["status"], None
        # From here to the frontier nothing suspends (the context is in memory), so no
        # cancellation can come between: the node, its dependents and the run's count
        # change together, and every activation ends in exactly one status.
        name = plan.names[i]
        self.context.record(name, plan.nodes[i].spec.name, result)
        if self.history is not None:
            self.history.setdefault(name, []).append(result)
        self.tasks[i] = None
        self.attempts[i] = 0
        self.contents[i] = result["content"] if status == _SUCCEEDED else None
        if status == _FAILED:
            self.failed_any = True
        ready = frontier.settle(i, status, taken)
        skips = await self._take_skips() if frontier.skipped else None
        if frontier.open == 0:
            self._wake()
        if self.observers:
            await self._emit_end(i, result)
        if skips or frontier.exhausted:
            await self._announce(skips or [])
        if self.preloaded is None:
            if ready:
                self._queue(ready)
        else:
            await self._release(ready)
        if status == _FAILED and self.settings.fail_fast:
            self.fail_fast_node = name
            raise _Stop

    async def _mark_unfinished(self, failed: str) -> None:
        def reason(j: int) -> str:
            what = "cancelled" if self.attempts[j] or j in self.maps else "not run"
            return f"{what}: fail_fast after node {failed!r} failed"

        self.frontier.skip_unfinished(reason)
        await self._announce(await self._take_skips())
