"""The attempt an agent runs in: ``heddle.current()``.

Agents keep the signature ``arun(task)``: nothing is injected into the call.
What the executor knows about the attempt (run, node, attempt number, ...) is
read with :func:`current` instead, from anywhere the attempt's code runs: the
executor sets it with :func:`attempt_scope` around each call, asyncio copies it
into tasks the agent starts, the local runner runs a sync agent's call in a
copy of it, and ``RayRunner`` ships it to the worker with the call.

It lives in a :class:`contextvars.ContextVar`, so concurrent attempts on one
event loop each see their own.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from heddle.core.errors import NoAttemptContext

__all__ = ["AttemptContext", "attempt_scope", "current"]


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """Which attempt of which node of which run an agent call is.

    ``attempt`` counts from 1 (a retry is 2, ...); ``iteration`` is the
    node's iteration in a loop and ``item`` its item's index in a fan-out
    (None when the node does not fan out). Plain values: it pickles, so it
    travels with a call to another process.

    >>> from heddle.workflows.current import AttemptContext, attempt_scope, current
    >>> ctx = AttemptContext("run-1", "research", node="search", agent="search", attempt=2)
    >>> with attempt_scope(ctx):  # what the executor does around each agent call
    ...     print(current().node, current().attempt)
    search 2
    """

    workflow_id: str
    graph: str
    node: str
    agent: str
    attempt: int
    iteration: int = 0
    item: int | None = None


class AttemptSource(Protocol):
    """What can say which attempt is running (the executor's run, without building it first)."""

    def attempt_context(self, node: int, attempt: int) -> AttemptContext: ...


# An AttemptContext, or (source, node index, attempt): the executor sets the cheap
# tuple around every call and current() builds the context only when it is asked for.
_ATTEMPT: contextvars.ContextVar[AttemptContext | tuple[AttemptSource, int, int] | None] = (
    contextvars.ContextVar("heddle_attempt", default=None)
)


ATTEMPT = _ATTEMPT  # for the executor's hot path: set((run, node, attempt)) per attempt

_OUTSIDE = (
    "heddle.current() is only available inside an agent's attempt (a node's agent called "
    "by a WorkflowExecutor, and the code, tasks and threads it runs); it was called outside one"
)


def current() -> AttemptContext:
    """The context of the attempt the caller runs in.

    Raises :class:`~heddle.core.errors.NoAttemptContext` outside an attempt.

    ::

        async def search(task: str) -> list[str]:
            attempt = heddle.current()
            log.info("searching", extra={"node": attempt.node, "attempt": attempt.attempt})
            ...
    """
    attempt = _ATTEMPT.get()
    if attempt is None:
        raise NoAttemptContext(_OUTSIDE)
    if type(attempt) is tuple:
        source, node, number = attempt
        return source.attempt_context(node, number)
    assert isinstance(attempt, AttemptContext)
    return attempt


class _AttemptScope:
    # A class rather than @contextmanager: it is entered around every agent call, and
    # the generator-based one took 1.1 us per enter and exit against 0.4 us for this.
    __slots__ = ("_attempt", "_token")

    def __init__(self, attempt: AttemptContext) -> None:
        self._attempt = attempt

    def __enter__(self) -> None:
        self._token = _ATTEMPT.set(self._attempt)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _ATTEMPT.reset(self._token)


def attempt_scope(attempt: AttemptContext) -> contextlib.AbstractContextManager[None]:
    """Make ``attempt`` what :func:`current` returns until the block ends (for runners).

    The executor wraps each agent call in it; a runner that moves the call to
    another process sets it there again around the call. Leaving the block,
    by return or by exception, restores what was current before.
    """
    return _AttemptScope(attempt)
