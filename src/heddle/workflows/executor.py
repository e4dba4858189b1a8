"""The workflow executor: runs a :class:`WorkflowGraph` as fast as its dependencies allow.

How a run is scheduled (and why):

* Each node keeps a count of unfinished predecessors; a finished node
  decrements its successors' counts and queues those that reach zero. A node
  therefore starts as soon as *its own* predecessors are done, never waiting
  for an unrelated slow node, and a run costs O(nodes + edges).
* Up to ``max_concurrent`` workers take ready activations from one queue,
  started on demand: a worker runs ready activations until none is left, so
  agents that never suspend cost one task in all, and more workers start
  only when work waits while the others are busy. Ready nodes wait in the
  queue as integers, not as parked tasks, so 100,000 ready nodes cost a
  deque, not 100,000 tasks. Sync agents run in the runner's one thread
  pool (``max_threads``, default ``max_concurrent``), shared by every run of
  the executor, so the bound holds (and is reached) for them too, and many
  concurrent runs do not multiply the threads.
* A retry waits for its backoff on a timer, off the worker: the worker takes
  the next ready node meanwhile, so a node in backoff never holds a slot.
* The workers live in an :class:`asyncio.TaskGroup`: when ``execute()``
  returns, raises or is cancelled, nothing of the run is left running.
* A failed node marks its descendants ``skipped`` in one walk; its siblings
  keep running (``fail_fast=True`` cancels everything instead).
* Loop-bound primitives are created per ``execute()`` call, so one executor
  (and its circuit breakers) serves several event loops one after another.
* Conditional edges and loops are decided by the run's frontier
  (:mod:`heddle.workflows._frontier`); a plain DAG pays only a counter per
  node for them.
* Everything that watches a run (the ``bus``, the checkpointer's event log,
  ``observers``) is a :class:`RunObserver` in one list; with none, no event
  is even built.
* With a checkpointer, the run is owned by this process through a
  :class:`RunLease`, renewed every third of ``checkpointer.lease``; if another
  process takes the run over, this one stops it with :class:`LeaseLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from heddle.core._checks import check_int
from heddle.core._resource import AsyncResource
from heddle.core.errors import (
    ConfigurationError,
    GraphMismatchError,
    LeaseLostError,
    RunNotFoundError,
)
from heddle.messaging.events import EventType
from heddle.messaging.message_bus import MessageBus
from heddle.workflows._failures import error_text, error_type
from heddle.workflows._lease import LeaseKeeper
from heddle.workflows._run import Run
from heddle.workflows._settings import Preloaded, RunSettings
from heddle.workflows.activation import Activation
from heddle.workflows.breakers import CircuitBreakers, LocalCircuitBreakers
from heddle.workflows.checkpoint import Checkpointer, RunLease, RunRecord, SQLiteCheckpointer
from heddle.workflows.codec import recorded_types
from heddle.workflows.context import ExecutionContext, NodeResult
from heddle.workflows.graph import Plan, WorkflowGraph
from heddle.workflows.observers import BusObserver, EventLog, Isolated, RunObserver
from heddle.workflows.resilience import CircuitBreaker, RetryPolicy
from heddle.workflows.runner import LocalRunner, Runner
from heddle.workflows.status import NodeStatus, RunStatus

__all__ = ["WorkflowExecutor", "WorkflowResult", "new_workflow_id"]

logger = logging.getLogger("heddle.executor")

_WORKFLOW_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def new_workflow_id() -> str:
    """A fresh workflow id: ``"workflow_"`` and 12 hex characters of a uuid4."""
    return f"workflow_{uuid.uuid4().hex[:12]}"


def _where(checkpointer: Checkpointer) -> object:
    return getattr(checkpointer, "path", checkpointer)


def _successes(recorded: Mapping[Activation, NodeResult]) -> Preloaded:
    """The recorded successes of a run, by ``(node, iteration)`` and a map's items by
    ``(node, iteration, item)``: what a resume replays."""
    return {
        (node, iteration) if item is None else (node, iteration, item): result
        for (node, iteration, item), result in recorded.items()
        if result.get("status") == NodeStatus.SUCCEEDED
    }


@dataclass(frozen=True, slots=True, repr=False)
class WorkflowResult:
    """The outcome of one execution.

    ``results`` maps every node, in the graph's order, to the
    :class:`~heddle.workflows.context.NodeResult` of its latest activation
    (a node a loop ran again has ``"iteration"`` 1, 2, ...;
    :meth:`iterations` lists them all); ``status`` is
    :attr:`RunStatus.SUCCEEDED` when no activation failed and every node's
    latest one succeeded or was skipped as not taken (a branch that was not
    chosen), else :attr:`RunStatus.FAILED`.
    """

    workflow_id: str
    graph_name: str
    status: RunStatus
    results: Mapping[str, NodeResult]
    context: ExecutionContext
    started_at: datetime
    finished_at: datetime
    history: Mapping[str, list[NodeResult]] | None = None

    def __repr__(self) -> str:
        # Contents can share structure (a join's dict holds its inputs' contents): a full
        # repr of a large DAG's results is exponential, so keep the repr to a summary.
        return (
            f"WorkflowResult(workflow_id={self.workflow_id!r}, graph={self.graph_name!r}, "
            f"status={str(self.status)!r}, nodes={len(self.results)}, "
            f"duration={self.duration:.3f}s)"
        )

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCEEDED

    def iterations(self, node: str) -> list[NodeResult]:
        """Every activation of ``node`` this run recorded, oldest first (one for most nodes)."""
        latest = self._result_of(node)
        if self.history is None or node not in self.history:
            return [latest]
        return list(self.history[node])

    @property
    def duration(self) -> float:
        """Wall-clock seconds the execution took."""
        return (self.finished_at - self.started_at).total_seconds()

    def content(self, node: str) -> Any:
        """Shorthand for ``results[node]["content"]``."""
        return self._result_of(node)["content"]

    def _result_of(self, node: str) -> NodeResult:
        try:
            return self.results[node]
        except (KeyError, TypeError):
            known = ", ".join(map(repr, self.results))
            raise ConfigurationError(
                f"no node {node!r} in this run of graph {self.graph_name!r} (nodes: {known})",
                parameter="node",
            ) from None

    def nodes_with_status(self, status: NodeStatus | str) -> list[str]:
        """The names of the nodes whose latest activation ended with ``status``, in graph order."""
        return [name for name, r in self.results.items() if r["status"] == status]


class WorkflowExecutor(AsyncResource):
    """Runs workflow graphs with bounded concurrency, retries and circuit breakers.

    >>> import asyncio
    >>> from heddle import WorkflowGraph
    >>> async def shout(task): return task.upper()
    >>> g = WorkflowGraph("hello").add_node("shout", shout)
    >>> WorkflowExecutor().run(g, input="hi").content("shout")
    'HI'

    Every setting after ``max_concurrent`` is keyword-only. ``retry`` is the
    default :class:`RetryPolicy` of nodes that have none. Circuit breakers are
    kept per agent name and shared by every execution of this executor:
    ``circuit_breaker_threshold`` (5) consecutive failed calls open one, and
    after ``circuit_breaker_timeout`` (30) seconds one trial call is let
    through; both are refused when ``circuit_breakers`` (a registry with its
    own settings) is given. ``clock`` (monotonic seconds) drives the breakers and ``rng``
    (floats in [0, 1)) the retry jitter; tests replace both.

    Pluggable parts, all optional: ``checkpointer`` (a path to an SQLite file
    or a :class:`Checkpointer`) makes runs durable and resumable;
    ``circuit_breakers`` (a :class:`CircuitBreakers` registry, e.g. one in
    Redis shared by several processes) replaces the in-process breakers, whose
    threshold and timeout are then the registry's; ``runner`` (a
    :class:`Runner`, e.g. ``heddle.distributed.RayRunner``) decides where
    attempts run. The default runner runs sync agents in one thread pool
    shared by every run of this executor, of ``max_threads`` threads (default:
    ``max_concurrent``); ``max_concurrent`` bounds the agent calls of each
    run. Close an executor with ``aclose()`` or ``async with`` to release the
    checkpointer it opened and its threads.

    Every run hands its lifecycle events to each of ``observers``
    (:class:`RunObserver`) and, with a ``bus``, publishes them on it (all
    events carry the run's ``workflow_id``; payload keys in brackets):
    ``workflow.started`` [graph, nodes], ``node.started`` [node, agent,
    attempt, iteration], ``node.succeeded`` [node, agent, attempts,
    iteration, duration, and ``taken`` for a node with conditional edges],
    ``node.retrying`` [node, agent, attempt, iteration, error, error_type,
    delay], ``node.failed`` [node, agent, attempts, iteration, error,
    error_type, traceback, duration], ``node.skipped`` [node, reason,
    iteration], ``edge.exhausted`` [source, target, iteration,
    max_iterations] (a loop's bound was reached), ``circuit.opened`` /
    ``circuit.half_open`` / ``circuit.closed`` [agent, node, failures], and
    last ``workflow.finished`` [graph, status, duration, succeeded, failed,
    skipped]; a cancelled run finishes with status ``"cancelled"``.
    Publishing never waits for async subscribers (see :class:`MessageBus`);
    an observer that raises is logged, not fatal.
    """

    def __init__(
        self,
        max_concurrent: int = 10,
        *,
        retry: RetryPolicy | None = None,
        circuit_breaker_threshold: int | None = None,
        circuit_breaker_timeout: float | None = None,
        fail_fast: bool = False,
        bus: MessageBus | None = None,
        checkpointer: Checkpointer | str | os.PathLike[str] | None = None,
        runner: Runner | None = None,
        max_threads: int | None = None,
        circuit_breakers: CircuitBreakers | None = None,
        observers: Sequence[RunObserver] = (),
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        check_int(max_concurrent, "max_concurrent", minimum=1)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"retry must be a RetryPolicy or None, got {type(retry).__name__}",
                parameter="retry",
            )
        self.max_concurrent = max_concurrent
        self.retry = retry if retry is not None else RetryPolicy()
        self.fail_fast = bool(fail_fast)
        if bus is not None and not callable(getattr(bus, "publish", None)):
            raise ConfigurationError(
                f"bus must be a MessageBus (or have async publish), got {type(bus).__name__}",
                parameter="bus",
            )
        self.bus = bus
        observers = tuple(observers)
        for observer in observers:
            if not isinstance(observer, RunObserver):
                raise ConfigurationError(
                    "observers must be RunObservers (with async on_event(event)), "
                    f"got {type(observer).__name__}",
                    parameter="observers",
                )
        self.observers: tuple[RunObserver, ...] = observers
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
                threshold=5 if circuit_breaker_threshold is None else circuit_breaker_threshold,
                timeout=30.0 if circuit_breaker_timeout is None else circuit_breaker_timeout,
                clock=clock,
            )
        elif circuit_breaker_threshold is not None or circuit_breaker_timeout is not None:
            given = (
                "circuit_breaker_threshold"
                if circuit_breaker_threshold is not None
                else ("circuit_breaker_timeout")
            )
            raise ConfigurationError(
                f"{given} configures the executor's own breakers; with circuit_breakers= "
                "given, set the threshold and timeout on that registry instead",
                parameter=given,
            )
        elif not isinstance(circuit_breakers, CircuitBreakers):
            raise ConfigurationError(
                "circuit_breakers must implement heddle.workflows.CircuitBreakers, "
                f"got {type(circuit_breakers).__name__}",
                parameter="circuit_breakers",
            )
        self.breakers: CircuitBreakers = circuit_breakers
        self._owns_runner = runner is None
        if runner is None:
            runner = LocalRunner(max_threads=max_threads)
        elif max_threads is not None:
            raise ConfigurationError(
                "max_threads sizes the default runner's thread pool; with runner= given, "
                "size that runner instead (LocalRunner(max_threads=...))",
                parameter="max_threads",
            )
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
        lease = None
        if self.checkpointer is not None:
            lease = RunLease.take(self.checkpointer.lease)
            record = RunRecord(
                workflow_id=workflow_id,
                graph_name=graph.name,
                fingerprint=graph.fingerprint(),
                input=input,
                nodes=plan.names,
                status=RunStatus.RUNNING,
                started_at=started_at,
                lease=lease,
            )
            try:
                await self.checkpointer.create_run(record)
            except BaseException as exc:
                # A cancel does not stop a write in flight: the run may be recorded.
                await self._give_up(workflow_id, lease, exc)
                raise
        context = ExecutionContext(workflow_id, graph.name, input)
        run = self._new_run(plan, context, lease)
        return await self._drive(run, graph.name, started_at, lease)

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

        A run that another live process is running (or resuming) is refused
        with :class:`RunInProgressError`: a run has one owner at a time. Its
        owner is gone when its process has died (seen at once on the same
        machine) or its lease ran out (``checkpointer.lease`` seconds after
        its last renewal).
        """
        checkpointer = self._require_checkpointer("resume()")
        if not isinstance(graph, WorkflowGraph):
            raise TypeError(f"resume() needs a WorkflowGraph, got {type(graph).__name__}")
        plan = graph.plan()
        # The classes to read results and the input back as come from the code: each
        # agent's return annotation, and the task annotations of the agents given the input.
        types = recorded_types(graph)
        record = await checkpointer.get_run(workflow_id, input_types=types.input)
        if record is None:
            raise RunNotFoundError(workflow_id, str(_where(checkpointer)))
        fingerprint = graph.fingerprint()
        if fingerprint != record.fingerprint and not force:
            raise GraphMismatchError(workflow_id, record.fingerprint, fingerprint)
        context = ExecutionContext(workflow_id, record.graph_name, record.input)
        if record.status == RunStatus.SUCCEEDED and fingerprint == record.fingerprint:
            recorded = await checkpointer.activation_results(workflow_id, types=types.nodes)
            run = self._new_run(plan, context, None, _successes(recorded), observe=False)
            await run.go()  # replays every node; nothing is left to run
            return self._result(run, record.graph_name, record.started_at, record.finished_at)
        lease = RunLease.take(checkpointer.lease)
        try:
            await checkpointer.claim_run(workflow_id, lease)
            # Read after the claim: everything the previous owner recorded is in.
            recorded = await checkpointer.activation_results(workflow_id, types=types.nodes)
        except BaseException as exc:
            await self._give_up(workflow_id, lease, exc)
            raise
        run = self._new_run(plan, context, lease, _successes(recorded))
        return await self._drive(run, record.graph_name, record.started_at, lease)

    async def _give_up(self, workflow_id: str, lease: RunLease, exc: BaseException) -> None:
        """Let go of a run this process may own, before or after running it.

        Cancelled (Ctrl-C, an outside cancel): the run is recorded ``cancelled``.
        Stopped by an error: its lease ends now, so it reads ``interrupted`` and
        can be resumed at once. Writes are fenced by ``lease``: if this process
        never became the owner, or lost the run, they change nothing.
        """
        assert self.checkpointer is not None
        with contextlib.suppress(Exception):
            if isinstance(exc, Exception):
                ended = RunLease(lease.owner, lease.site, datetime.now(UTC))
                await self.checkpointer.renew_lease(workflow_id, ended)
            else:
                await asyncio.shield(
                    self.checkpointer.finish_run(
                        workflow_id, RunStatus.CANCELLED, datetime.now(UTC), owner=lease.owner
                    )
                )

    async def _drive(
        self, run: Run, graph_name: str, started_at: datetime, lease: RunLease | None
    ) -> WorkflowResult:
        """Run to the end, holding ``lease`` (if any) until the run's end is recorded."""
        if self.checkpointer is None or lease is None:
            return await self._go(run, graph_name, started_at, None)
        wid = run.context.workflow_id
        driver = asyncio.current_task()
        assert driver is not None
        keeper = LeaseKeeper(self.checkpointer, wid, lease)
        run.lease_guard = keeper.guard
        keeping = asyncio.create_task(keeper.keep(driver))
        try:
            return await self._go(run, graph_name, started_at, keeper)
        except asyncio.CancelledError as exc:
            if not keeper.lost or not keeping.done():
                raise
            driver.uncancel()  # the keeper's cancel, turned into this error
            raise LeaseLostError(wid, keeper.lost_to) from exc
        finally:
            keeping.cancel()
            # wait(), not `await keeping` under suppress(CancelledError): that would also
            # swallow a cancel of this task landing here, and return as if never cancelled.
            await asyncio.wait({keeping})

    async def _go(
        self, run: Run, graph_name: str, started_at: datetime, keeper: LeaseKeeper | None
    ) -> WorkflowResult:
        """Run to the end, bracketed by the workflow events and the run's final record.

        How the run's record ends: ``succeeded`` or ``failed`` when the run
        ran to its end; ``cancelled`` when it was cancelled (Ctrl-C, an outside
        cancel); untouched when this process lost the run to another one; and
        when recording it failed (the database is locked or gone), still
        ``running`` with its lease given up, which reads as ``interrupted``:
        resumable, as after a crash.
        """
        wid = run.context.workflow_id
        owner = keeper.owner if keeper is not None else None
        try:
            if run.observers:
                await run.emit(
                    EventType.WORKFLOW_STARTED, graph=graph_name, nodes=len(run.plan.names)
                )
            await run.go()
        except LeaseLostError:
            raise  # the run is another process's now: record nothing
        except Exception as exc:
            await self._interrupted(run, graph_name, started_at, keeper, exc)
            raise
        except BaseException:
            if keeper is not None and keeper.lost:
                raise
            if run.observers:
                with contextlib.suppress(Exception):
                    await run.emit_finished(graph_name, RunStatus.CANCELLED, started_at)
            if keeper is not None:
                await self._give_up(wid, keeper.lease, asyncio.CancelledError())
            raise
        result = self._result(run, graph_name, started_at, None)
        try:
            if run.observers:
                await run.emit_finished(graph_name, result.status, started_at)
            if self.checkpointer is not None:
                await self.checkpointer.finish_run(
                    wid, result.status, result.finished_at, owner=owner
                )
        except LeaseLostError:
            raise
        except Exception as exc:  # every node is recorded: a resume finishes at once
            await self._interrupted(run, graph_name, started_at, keeper, exc)
            raise
        return result

    async def _interrupted(
        self,
        run: Run,
        graph_name: str,
        started_at: datetime,
        keeper: LeaseKeeper | None,
        error: Exception,
    ) -> None:
        """The run stopped because recording it failed: say so, and give up its lease."""
        wid = run.context.workflow_id
        logger.error(
            "workflow %r interrupted: %s; resume it once the cause is fixed",
            wid,
            error_text(error),
            extra={"workflow_id": wid, "error_type": error_type(error)},
        )
        if run.observers:  # the bus may still take it; the failed store will not
            with contextlib.suppress(Exception):
                await run.emit_finished(
                    graph_name, RunStatus.INTERRUPTED, started_at, error=error_text(error)
                )
        if keeper is not None:  # if the store is down, the lease simply runs out
            await self._give_up(wid, keeper.lease, error)

    @staticmethod
    def _result(
        run: Run, graph_name: str, started_at: datetime, finished_at: datetime | None
    ) -> WorkflowResult:
        context = run.context
        results = {name: context.results[name] for name in run.plan.names}
        return WorkflowResult(
            workflow_id=context.workflow_id,
            graph_name=graph_name,
            status=RunStatus.SUCCEEDED if run.succeeded() else RunStatus.FAILED,
            results=results,
            context=context,
            started_at=started_at,
            finished_at=finished_at or datetime.now(UTC),
            history=run.history,
        )

    def _new_run(
        self,
        plan: Plan,
        context: ExecutionContext,
        lease: RunLease | None,
        preloaded: Preloaded | None = None,
        *,
        observe: bool = True,
    ) -> Run:
        """A run of ``plan`` with this executor's settings, as they are now."""
        settings = RunSettings(
            max_concurrent=self.max_concurrent,
            retry=self.retry,
            fail_fast=self.fail_fast,
            rng=self._rng,
            breakers=self.breakers,
            runner=self.runner,
            checkpointer=self.checkpointer,
        )
        owner = lease.owner if lease is not None else None
        observers: list[RunObserver] = []
        if observe:
            wid = context.workflow_id
            if self.bus is not None:
                observers.append(Isolated(BusObserver(self.bus), wid))
            observers += [Isolated(observer, wid) for observer in self.observers]
            if self.checkpointer is not None:
                observers.append(EventLog(self.checkpointer, owner))
        return Run(settings, plan, context, observers=observers, preloaded=preloaded, owner=owner)

    def _require_checkpointer(self, what: str) -> Checkpointer:
        if self.checkpointer is None:
            raise ConfigurationError(
                f"{what} needs a checkpointer: WorkflowExecutor(checkpointer='runs.db')",
                parameter="checkpointer",
            )
        return self.checkpointer

    async def aclose(self) -> None:
        """Close what this executor made itself: the checkpointer it opened from a path,
        and its default runner's thread pool. Idempotent."""
        if self._owns_checkpointer and self.checkpointer is not None:
            await self.checkpointer.aclose()
        if self._owns_runner and isinstance(self.runner, LocalRunner):
            await self.runner.aclose()

    def run(
        self, graph: WorkflowGraph, input: Any = None, *, workflow_id: str | None = None
    ) -> WorkflowResult:
        """Blocking twin of :meth:`execute`, for scripts; not for use inside a running loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop here: the usual case. (Not run inside this handler: every error
            # of the run would then read as raised while handling "no running event loop".)
        else:
            raise TypeError(
                "WorkflowExecutor.run() cannot be called from a running event loop; "
                "use 'await executor.execute(...)' instead"
            )
        return asyncio.run(self.execute(graph, input, workflow_id=workflow_id))
