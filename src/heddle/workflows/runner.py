"""Where agent calls run: on this event loop and its threads, or on a cluster.

The executor decides *what* runs *when* (scheduling, retries, breakers,
timeouts, events, checkpoints); a :class:`Runner` only performs one attempt
of one agent call. :class:`LocalRunner` (the default) awaits async agents on
the loop and runs sync ones in one bounded thread pool that serves all its
runs; ``heddle.distributed.RayRunner`` runs them on a Ray cluster.

A runner opens one :class:`RunnerSession` per execution, for what lives
exactly as long as the run; what outlives runs (threads, actors) is the
runner's.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from heddle.agents import AgentSpec, await_if_needed
from heddle.core._checks import check_int
from heddle.core._resource import AsyncResource

__all__ = ["LocalRunner", "Runner", "RunnerSession"]


@runtime_checkable
class RunnerSession(Protocol):
    """Agent calls of one execution."""

    async def start(self) -> None:
        """Get ready before the first attempt (connect, start workers), outside any timeout."""

    async def call(self, spec: AgentSpec, task: Any) -> Any:
        """Run one attempt of ``spec`` on ``task``; cancellable; raises what the agent raised."""

    async def aclose(self) -> None:
        """Release the session's resources (the run is over). Idempotent."""


@runtime_checkable
class Runner(Protocol):
    """Opens a session per execution."""

    def open(self, max_concurrent: int) -> RunnerSession: ...


class LocalRunner(AsyncResource):
    """Async agents on the event loop, sync agents in one thread pool shared by every run.

    What bounds what:

    * ``max_concurrent`` (the executor's) bounds the agent calls in flight of
      *one* run, async and sync alike.
    * The runner's threads bound the sync agent calls in flight of *every*
      run of the executor together: ``max_threads`` of them, or by default
      as many as the largest ``max_concurrent`` a session was opened with
      (the executor's). A thousand concurrent runs share those threads; their
      further sync calls queue for one. Async agents never wait for a thread.
    * A sync call cannot be interrupted: on timeout or cancellation the
      executor stops waiting, and the thread finishes the call alone, keeping
      its place in the pool until then.

    A retry never overlaps the call it retries. When an attempt of a sync
    agent timed out (or was cancelled) and its thread still runs, the next
    attempt of that node in that run waits for that call, within its own
    timeout, instead of calling the agent again beside it: if the call
    returns meanwhile, its result is the retry's; if it raises, the retry
    calls the agent afresh. So a node's side effects never run twice at once,
    and a hung agent holds one thread, not one per attempt.

    The pool starts with the first sync call and serves event loops one after
    another. :meth:`aclose` shuts it down without waiting for threads still in
    an agent; a later sync call starts a new pool.

    >>> LocalRunner(max_threads=8)
    LocalRunner(max_threads=8)
    """

    def __init__(self, max_threads: int | None = None) -> None:
        check_int(max_threads, "max_threads", minimum=1, none_ok=True)
        self.max_threads = max_threads
        self._lock = threading.Lock()  # runs on loops in other threads may share this runner
        self._largest = 1  # the largest max_concurrent of a session so far
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def __repr__(self) -> str:
        return f"LocalRunner(max_threads={self.max_threads!r})"

    def open(self, max_concurrent: int) -> _LocalSession:
        """A session for one execution; the threads are the runner's and outlive it."""
        if max_concurrent > self._largest:
            with self._lock:
                self._largest = max(self._largest, max_concurrent)
        return _LocalSession(self._submit)

    def _submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on a thread of the pool, starting the pool if needed."""
        with self._lock:
            size = self.max_threads or self._largest
            pool = self._pool
            if pool is None or self._pool_size < size:
                if pool is not None:
                    # A session with a larger max_concurrent opened: a bigger pool takes
                    # the calls from now on; the old one finishes its own, then its threads end.
                    pool.shutdown(wait=False)
                pool = self._pool = ThreadPoolExecutor(size, "heddle-agent")
                self._pool_size = size
            return pool.submit(fn, *args)

    async def aclose(self) -> None:
        """Shut the thread pool down; calls still in an agent finish alone. Idempotent."""
        with self._lock:
            pool, self._pool, self._pool_size = self._pool, None, 0
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _Abandoned:
    """A sync call the run stopped waiting for while its thread ran on.

    ``spec`` and ``task`` are held so that their ids, the key of the entry,
    are not reused by other objects while it exists.
    """

    spec: AgentSpec
    task: Any
    future: Future[Any]


class _LocalSession:
    """One run's agent calls, on the loop or on the runner's threads."""

    __slots__ = ("_abandoned", "_submit")

    def __init__(self, submit: Callable[..., Future[Any]]) -> None:
        self._submit = submit
        # Sync calls the run stopped waiting for, by (spec, task) identity: the executor
        # retries a node with the same spec and the same task object. Made on first need.
        self._abandoned: dict[tuple[int, int], _Abandoned] | None = None

    async def start(self) -> None:
        pass  # the runner's pool starts with the first sync call, if any

    async def call(self, spec: AgentSpec, task: Any) -> Any:
        if spec.is_async:
            return await await_if_needed(spec.call(task))
        return await self._call_in_thread(spec, task)

    async def _call_in_thread(self, spec: AgentSpec, task: Any) -> Any:
        key = (id(spec), id(task))
        abandoned = self._abandoned.pop(key, None) if self._abandoned else None
        if abandoned is not None:
            late = await self._outlive(key, abandoned)
            if late.exception() is None:
                return await await_if_needed(late.result())
        future = self._submit(contextvars.copy_context().run, spec.call, task)
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():  # a thread has the call: it runs on, and a retry waits
                if self._abandoned is None:
                    self._abandoned = {}
                self._abandoned[key] = _Abandoned(spec, task, future)
            raise
        return await await_if_needed(result)

    async def _outlive(self, key: tuple[int, int], abandoned: _Abandoned) -> asyncio.Future[Any]:
        """Wait until an abandoned call ends; if this wait is cancelled, the next one waits."""
        late = asyncio.wrap_future(abandoned.future)
        try:
            await asyncio.wait((late,))
        except asyncio.CancelledError:
            late.cancel()  # the thread cannot be stopped; this only drops the late delivery
            if self._abandoned is not None:
                self._abandoned[key] = abandoned
            raise
        return late

    async def aclose(self) -> None:
        self._abandoned = None  # their threads finish alone; nothing of this run waits for them
