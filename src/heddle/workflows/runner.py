"""Where agent calls run: on this event loop and its threads, or on a cluster.

The executor decides *what* runs *when* (scheduling, retries, breakers,
timeouts, events, checkpoints); a :class:`Runner` only performs one attempt
of one agent call. :class:`LocalRunner` (the default) awaits async agents on
the loop and runs sync ones in a thread pool sized to ``max_concurrent``;
``heddle.distributed.RayRunner`` runs them on a Ray cluster.

A runner opens one :class:`RunnerSession` per execution, for resources that
live exactly as long as the run (the local thread pool).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from heddle.agents import AgentSpec, await_if_needed

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


class LocalRunner:
    """Async agents on the event loop, sync agents in a per-run thread pool.

    The pool has ``max_concurrent`` threads, so the executor's bound holds and
    is reached for sync agents too (asyncio's default pool has
    ``min(32, cpus + 4)``). A sync call cannot be interrupted: on timeout or
    cancellation the executor stops waiting and the thread finishes alone.
    """

    def __repr__(self) -> str:
        return "LocalRunner()"

    def open(self, max_concurrent: int) -> _LocalSession:
        return _LocalSession(max_concurrent)


class _LocalSession:
    __slots__ = ("_max", "_pool")

    def __init__(self, max_concurrent: int) -> None:
        self._max = max_concurrent
        self._pool: ThreadPoolExecutor | None = None  # only if a sync agent runs

    async def start(self) -> None:
        pass  # the pool starts with the first sync call, if any

    async def call(self, spec: AgentSpec, task: Any) -> Any:
        if spec.is_async:
            return await await_if_needed(spec.call(task))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max, "heddle-agent")
        call = functools.partial(contextvars.copy_context().run, spec.call, task)
        result = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        return await await_if_needed(result)

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)
