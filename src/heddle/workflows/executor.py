"""The workflow executor: runs a :class:`WorkflowGraph` as fast as its dependencies allow.

How a run is scheduled (and why):

* Each node keeps a count of unfinished predecessors; a finished node
  decrements its successors' counts and queues those that reach zero. A node
  therefore starts as soon as *its own* predecessors are done, never waiting
  for an unrelated slow node, and a run costs O(nodes + edges).
* ``max_concurrent`` workers take ready nodes from one queue. Ready nodes
  wait in the queue as integers, not as parked tasks, so 100,000 ready nodes
  cost a list, not 100,000 tasks. Sync agents run in a thread pool of the same
  size, so the bound holds (and is reached) for them too.
* A retry waits for its backoff on a timer, off the worker: the worker takes
  the next ready node meanwhile, so a node in backoff never holds a slot.
* The workers live in an :class:`asyncio.TaskGroup`: when ``execute()``
  returns, raises or is cancelled, nothing of the run is left running.
* A failed node marks its descendants ``skipped`` in one walk; its siblings
  keep running (``fail_fast=True`` cancels everything instead).
* Loop-bound primitives are created per ``execute()`` call, so one executor
  (and its circuit breakers) serves several event loops one after another.
* With a ``bus``, the run publishes lifecycle events (:class:`EventType`);
  without one, no event is even built.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from heddle.agents import await_if_needed
from heddle.core._resource import AsyncResource
from heddle.core.errors import (
    CircuitBreakerOpen,
    ConfigurationError,
    GraphMismatchError,
    NodeTimeoutError,
    ResultNotSerializable,
    RunNotFoundError,
)
from heddle.messaging.events import Event, EventType
from heddle.messaging.message_bus import MessageBus
from heddle.workflows.breakers import CircuitBreakers, LocalCircuitBreakers
from heddle.workflows.checkpoint import Checkpointer, RunRecord, SQLiteCheckpointer
from heddle.workflows.context import ExecutionContext, Message, NodeResult, NodeStatus
from heddle.workflows.graph import INPUT_FIELD, Node, Plan, WorkflowGraph
from heddle.workflows.resilience import CircuitBreaker, CircuitState, RetryPolicy
from heddle.workflows.runner import LocalRunner, Runner, RunnerSession

__all__ = ["WorkflowExecutor", "WorkflowResult", "WorkflowStatus", "new_workflow_id"]

logger = logging.getLogger("heddle.executor")

WorkflowStatus = Literal["succeeded", "failed"]

_WORKFLOW_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_STOP = -1  # queue sentinel: no more work for this worker


def new_workflow_id() -> str:
    """A fresh workflow id: ``"workflow_"`` and 12 hex characters of a uuid4."""
    return f"workflow_{uuid.uuid4().hex[:12]}"


def _where(checkpointer: Checkpointer) -> object:
    return getattr(checkpointer, "path", checkpointer)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True, repr=False)
class WorkflowResult:
    """The outcome of one execution.

    ``results`` maps every node, in the graph's order, to its
    :class:`~heddle.workflows.context.NodeResult`; ``status`` is
    ``"succeeded"`` when every node succeeded, else ``"failed"``.
    """

    workflow_id: str
    graph_name: str
    status: WorkflowStatus
    results: Mapping[str, NodeResult]
    context: ExecutionContext
    started_at: datetime
    finished_at: datetime

    def __repr__(self) -> str:
        # Contents can share structure (a join's dict holds its inputs' contents): a full
        # repr of a large DAG's results is exponential, so keep the repr to a summary.
        return (
            f"WorkflowResult(workflow_id={self.workflow_id!r}, graph={self.graph_name!r}, "
            f"status={self.status!r}, nodes={len(self.results)}, duration={self.duration:.3f}s)"
        )

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def duration(self) -> float:
        """Wall-clock seconds the execution took."""
        return (self.finished_at - self.started_at).total_seconds()

    def content(self, node: str) -> Any:
        """Shorthand for ``results[node]["content"]``."""
        return self.results[node]["content"]

    def nodes_with_status(self, status: NodeStatus) -> list[str]:
        """The names of the nodes that ended with ``status``, in graph order."""
        return [name for name, r in self.results.items() if r["status"] == status]


class _FailFast(Exception):
    """Raised by a worker to make the TaskGroup cancel the run (fail_fast=True)."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


class WorkflowExecutor(AsyncResource):
    """Runs workflow graphs with bounded concurrency, retries and circuit breakers.

    >>> import asyncio
    >>> from heddle import WorkflowGraph
    >>> async def shout(task): return task.upper()
    >>> g = WorkflowGraph("hello").add_node("shout", shout)
    >>> WorkflowExecutor().run(g, input="hi").content("shout")
    'HI'

    ``retry`` is the default :class:`RetryPolicy` of nodes that have none.
    Circuit breakers are kept per agent name and shared by every execution
    of this executor: ``circuit_breaker_threshold`` consecutive failed calls
    open one, and after ``circuit_breaker_timeout`` seconds one trial call is
    let through. ``clock`` (monotonic seconds) drives the breakers and ``rng``
    (floats in [0, 1)) the retry jitter; tests replace both.

    Pluggable parts, all optional: ``checkpointer`` (a path to an SQLite file
    or a :class:`Checkpointer`) makes runs durable and resumable;
    ``circuit_breakers`` (a :class:`CircuitBreakers` registry, e.g. one in
    Redis shared by several processes) replaces the in-process breakers, whose
    threshold and timeout are then the registry's; ``runner`` (a
    :class:`Runner`, e.g. ``heddle.distributed.RayRunner``) decides where
    attempts run. Close an executor that owns a checkpointer with ``aclose()``
    or ``async with``.

    With a ``bus``, every run publishes its lifecycle on it (all with the
    run's ``workflow_id``; payload keys in brackets): ``workflow.started``
    [graph, nodes], ``node.started`` [node, agent, attempt],
    ``node.succeeded`` [node, agent, attempts, duration], ``node.retrying``
    [node, agent, attempt, error, delay], ``node.failed`` [node, agent,
    attempts, error, duration], ``node.skipped`` [node, reason],
    ``circuit.opened`` / ``circuit.half_open`` / ``circuit.closed`` [agent,
    node, failures], and last ``workflow.finished`` [graph, status, duration,
    succeeded, failed, skipped]; a cancelled run finishes with status
    ``"cancelled"``. Publishing never waits for async subscribers (see
    :class:`MessageBus`).
    """

    def __init__(
        self,
        max_concurrent: int = 10,
        retry: RetryPolicy | None = None,
        circuit_breaker_threshold: int = 5,
        circuit_breaker_timeout: float = 30.0,
        fail_fast: bool = False,
        *,
        bus: MessageBus | None = None,
        checkpointer: Checkpointer | str | os.PathLike[str] | None = None,
        runner: Runner | None = None,
        circuit_breakers: CircuitBreakers | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigurationError(
                f"max_concurrent must be an int, got {max_concurrent!r}", parameter="max_concurrent"
            )
        if max_concurrent < 1:
            raise ConfigurationError(
                f"max_concurrent must be >= 1, got {max_concurrent}", parameter="max_concurrent"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"retry must be a RetryPolicy or None, got {type(retry).__name__}",
                parameter="retry",
            )
        self.max_concurrent = max_concurrent
        self.retry = retry if retry is not None else RetryPolicy()
        self.circuit_breaker_threshold = circuit_breaker_threshold
        self.circuit_breaker_timeout = float(circuit_breaker_timeout)
        self.fail_fast = bool(fail_fast)
        if bus is not None and not callable(getattr(bus, "publish", None)):
            raise ConfigurationError(
                f"bus must be a MessageBus (or have async publish), got {type(bus).__name__}",
                parameter="bus",
            )
        self.bus = bus
        self._owns_checkpointer = isinstance(checkpointer, str | os.PathLike)
        if isinstance(checkpointer, str | os.PathLike):
            checkpointer = SQLiteCheckpointer(checkpointer)
        elif checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            raise ConfigurationError(
                "checkpointer must be a path to an SQLite file or a Checkpointer, "
                f"got {type(checkpointer).__name__}",
                parameter="checkpointer",
            )
        self.checkpointer: Checkpointer | None = checkpointer
        self._rng = rng
        if circuit_breakers is None:
            circuit_breakers = LocalCircuitBreakers(
                failure_threshold=circuit_breaker_threshold,
                recovery_timeout=circuit_breaker_timeout,
                clock=clock,
            )
        elif not isinstance(circuit_breakers, CircuitBreakers):
            raise ConfigurationError(
                "circuit_breakers must implement heddle.workflows.CircuitBreakers, "
                f"got {type(circuit_breakers).__name__}",
                parameter="circuit_breakers",
            )
        self.breakers: CircuitBreakers = circuit_breakers
        if runner is None:
            runner = LocalRunner()
        elif not isinstance(runner, Runner):
            raise ConfigurationError(
                f"runner must implement heddle.workflows.Runner, got {type(runner).__name__}",
                parameter="runner",
            )
        self.runner: Runner = runner

    def __repr__(self) -> str:
        return f"WorkflowExecutor(max_concurrent={self.max_concurrent}, fail_fast={self.fail_fast})"

    @property
    def circuit_breakers(self) -> Mapping[str, CircuitBreaker]:
        """The in-process breakers created so far, by agent name."""
        return dict(self._local_breakers())

    def circuit_breaker(self, agent_name: str) -> CircuitBreaker:
        """The in-process breaker of ``agent_name`` (created closed on first use)."""
        return self._local_breakers().breaker(agent_name)

    def _local_breakers(self) -> LocalCircuitBreakers:
        if not isinstance(self.breakers, LocalCircuitBreakers):
            raise TypeError(
                f"this executor's breakers live in {self.breakers!r}; ask it, not the executor"
            )
        return self.breakers

    async def execute(
        self, graph: WorkflowGraph, input: Any = None, *, workflow_id: str | None = None
    ) -> WorkflowResult:
        """Run ``graph`` once with ``input``; return when every node has finished.

        The graph is validated first, so a bad graph raises
        :class:`GraphValidationError` before any agent runs. Agent failures do
        not raise: they are in the result. With a checkpointer, the run is
        recorded first (its input must be JSON) and each node's final result
        as it finishes.
        """
        if not isinstance(graph, WorkflowGraph):
            raise TypeError(f"execute() needs a WorkflowGraph, got {type(graph).__name__}")
        plan = graph.plan()
        if workflow_id is None:
            workflow_id = new_workflow_id()
        elif not isinstance(workflow_id, str) or not _WORKFLOW_ID.fullmatch(workflow_id):
            raise ConfigurationError(
                f"workflow_id must match {_WORKFLOW_ID.pattern}, got {workflow_id!r}",
                parameter="workflow_id",
            )
        started_at = datetime.now(UTC)
        if self.checkpointer is not None:
            record = RunRecord(
                workflow_id=workflow_id,
                graph_name=graph.name,
                fingerprint=graph.fingerprint(),
                input=input,
                nodes=plan.names,
                status="running",
                started_at=started_at,
            )
            await self.checkpointer.create_run(record)
        context = ExecutionContext(workflow_id, graph.name, input)
        return await self._drive(_Run(self, plan, context), graph.name, started_at)

    async def resume(
        self, workflow_id: str, graph: WorkflowGraph, *, force: bool = False
    ) -> WorkflowResult:
        """Finish a recorded run: run only the nodes that did not succeed.

        The nodes that succeeded before (in a run that failed, was cancelled
        or whose process died) are not run again; their recorded results feed
        their dependents. A run that had succeeded is returned as recorded,
        running nothing. ``graph`` must have the recorded structure (nodes,
        their agents' names, edges), else :class:`GraphMismatchError`; with
        ``force=True`` the recorded successes of nodes that still exist are
        reused and everything else runs.
        """
        checkpointer = self._require_checkpointer("resume()")
        if not isinstance(graph, WorkflowGraph):
            raise TypeError(f"resume() needs a WorkflowGraph, got {type(graph).__name__}")
        plan = graph.plan()
        record = await checkpointer.get_run(workflow_id)
        if record is None:
            raise RunNotFoundError(workflow_id, str(_where(checkpointer)))
        fingerprint = graph.fingerprint()
        if fingerprint != record.fingerprint and not force:
            raise GraphMismatchError(workflow_id, record.fingerprint, fingerprint)
        recorded = await checkpointer.node_results(workflow_id)
        context = ExecutionContext(workflow_id, record.graph_name, record.input)
        if record.status == "succeeded" and fingerprint == record.fingerprint:
            run = _Run(self, plan, context, recorded)
            await run.go()  # replays every node; nothing is left to run
            return self._result(run, record.graph_name, record.started_at, record.finished_at)
        await checkpointer.mark_running(workflow_id)
        run = _Run(self, plan, context, recorded)
        return await self._drive(run, record.graph_name, record.started_at)

    async def _drive(self, run: _Run, graph_name: str, started_at: datetime) -> WorkflowResult:
        """Run to the end, bracketed by the workflow events and the run's final record."""
        wid = run.context.workflow_id
        if run.observe:
            await run.emit(EventType.WORKFLOW_STARTED, graph=graph_name, nodes=len(run.plan.names))
        try:
            await run.go()
        except BaseException:
            if run.observe:
                await run.emit_finished(graph_name, "cancelled", started_at)
            if self.checkpointer is not None:
                await asyncio.shield(
                    self.checkpointer.finish_run(wid, "cancelled", datetime.now(UTC))
                )
            raise
        result = self._result(run, graph_name, started_at, None)
        if run.observe:
            await run.emit_finished(graph_name, result.status, started_at)
        if self.checkpointer is not None:
            await self.checkpointer.finish_run(wid, result.status, result.finished_at)
        return result

    @staticmethod
    def _result(
        run: _Run, graph_name: str, started_at: datetime, finished_at: datetime | None
    ) -> WorkflowResult:
        context = run.context
        results = {name: context.results[name] for name in run.plan.names}
        ok = all(r["status"] == "success" for r in results.values())
        return WorkflowResult(
            workflow_id=context.workflow_id,
            graph_name=graph_name,
            status="succeeded" if ok else "failed",
            results=results,
            context=context,
            started_at=started_at,
            finished_at=finished_at or datetime.now(UTC),
        )

    def _require_checkpointer(self, what: str) -> Checkpointer:
        if self.checkpointer is None:
            raise ConfigurationError(
                f"{what} needs a checkpointer: WorkflowExecutor(checkpointer='runs.db')",
                parameter="checkpointer",
            )
        return self.checkpointer

    async def aclose(self) -> None:
        """Close the checkpointer if this executor opened it (from a path). Idempotent."""
        if self._owns_checkpointer and self.checkpointer is not None:
            await self.checkpointer.aclose()

    def run(
        self, graph: WorkflowGraph, input: Any = None, *, workflow_id: str | None = None
    ) -> WorkflowResult:
        """Blocking twin of :meth:`execute`, for scripts; not for use inside a running loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.execute(graph, input, workflow_id=workflow_id))
        raise TypeError(
            "WorkflowExecutor.run() cannot be called from a running event loop; "
            "use 'await executor.execute(...)' instead"
        )


class _Run:
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
                        _error_text(exc),
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
            except* _FailFast:
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
                logger.warning("node %r: building its task failed: %s", node.name, _error_text(exc))
                await self._finish(i, None, "failed", f"TaskError: {_error_text(exc)}")
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
            error = _error_text(exc)
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
            "node %r failed after %d attempt(s): %s", node.name, self.attempts[i], _error_text(exc)
        )
        await self._finish(i, None, "failed", _error_text(exc))

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
                raise _FailFast(name)
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
            result["error"] = _error_text(exc)
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
