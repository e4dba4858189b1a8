"""The one exception tree of heddle.

Every error heddle raises on purpose is a :class:`HeddleError`. Where the
meaning matches a builtin, the error subclasses it too, so ``except ValueError``
keeps working for code that does not know heddle::

    HeddleError
    ├── ConfigurationError (ValueError)      bad argument to a heddle object
    ├── GraphValidationError (ValueError)    the graph cannot run as built
    ├── InvalidAgentError (TypeError)        add_node() got something that is not an agent
    ├── AgentNotSerializable (TypeError)     an agent or task cannot travel to a Ray worker
    ├── NoAttemptContext (RuntimeError)      heddle.current() was called outside an attempt
    ├── NodeTimeoutError (TimeoutError)      one attempt of a node overran its timeout
    ├── TaskBuildError                       a node's task could not be built from its inputs
    ├── MapError                             a map node's task was no list, or items failed
    ├── RoutingError                         a when= or a branch raised, or chose no target
    ├── CircuitBreakerOpen                   the agent's breaker rejected the call
    ├── CheckpointError                      a durable run could not be recorded or read
    │   ├── ResultNotSerializable (TypeError)  a node's result (or the input) cannot be stored
    │   ├── ResultTooLarge (ValueError)      ... or is over the size limit
    │   └── ResultNotRestorable              a recorded result cannot be read back as it was
    ├── RunNotFoundError (KeyError)          no recorded run has that workflow id
    ├── GraphMismatchError (ValueError)      resume() got a graph unlike the recorded one
    ├── RunInProgressError                   another live process holds the run's lease
    ├── LeaseLostError                       another process took the run over mid-run
    ├── BackendError                         a backend (Redis, a database) failed or hung
    │   └── BackendTimeout (TimeoutError)    it did not answer within its deadline
    ├── InvalidAgentId (ValueError)          an agent id fails ^[A-Za-z0-9_-]{1,128}$
    └── MemoryStoreError                     a memory store could not do what was asked
        ├── CorruptStoreError                its file is not a readable store (left untouched)
        └── StoreClosedError (RuntimeError)  the store was used after aclose()

Exceptions carry the context a user needs to act on them (the node, the graph,
the agent) as attributes, not only inside the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "AgentNotSerializable",
    "BackendError",
    "BackendTimeout",
    "CheckpointError",
    "CircuitBreakerOpen",
    "ConfigurationError",
    "CorruptStoreError",
    "GraphMismatchError",
    "GraphValidationError",
    "HeddleError",
    "InvalidAgentError",
    "InvalidAgentId",
    "LeaseLostError",
    "MapError",
    "MemoryStoreError",
    "NoAttemptContext",
    "NodeTimeoutError",
    "ResultNotRestorable",
    "ResultNotSerializable",
    "ResultTooLarge",
    "RoutingError",
    "RunInProgressError",
    "RunNotFoundError",
    "StoreClosedError",
    "TaskBuildError",
]


class HeddleError(Exception):
    """Base class of every error heddle raises on purpose."""


class ConfigurationError(HeddleError, ValueError):
    """An argument given to a heddle object is out of range or of the wrong kind.

    ``parameter`` names the argument at fault.
    """

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class GraphValidationError(HeddleError, ValueError):
    """The workflow graph cannot be executed as built.

    ``graph`` is the graph's name and ``nodes`` the node names involved (for a
    cycle: the nodes of the cycle in order).
    """

    def __init__(self, message: str, *, graph: str, nodes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.graph = graph
        self.nodes = tuple(nodes)


class InvalidAgentError(HeddleError, TypeError):
    """``add_node`` was given an object that heddle cannot call as an agent."""

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message)
        self.node = node


class NodeTimeoutError(HeddleError, TimeoutError):
    """One attempt of a node ran longer than the node's ``timeout`` and was cancelled.

    ``detail`` adds what happens to the call (a sync agent's call cannot be
    interrupted: it runs on in its thread).
    """

    def __init__(self, node: str, timeout: float, attempt: int, detail: str = "") -> None:
        message = f"node {node!r} attempt {attempt} timed out after {timeout:g}s"
        super().__init__(f"{message}; {detail}" if detail else message)
        self.node = node
        self.timeout = timeout
        self.attempt = attempt


class TaskBuildError(HeddleError):
    """Building a node's task failed: its task callable raised, or its template did.

    The agent was not called. The original exception is ``__cause__``.
    """

    def __init__(self, node: str, cause: BaseException) -> None:
        super().__init__(f"building the task of node {node!r} failed: {_describe(cause)}")
        self.node = node


class MapError(HeddleError):
    """A map node failed as a whole: its task was not a list, or some items failed.

    ``node`` names the map node; ``failed`` lists the indices of the items
    that failed (empty when the task was not a list).
    """

    def __init__(self, node: str, detail: str, *, failed: Sequence[int] = ()) -> None:
        super().__init__(f"map node {node!r}: {detail}")
        self.node = node
        self.failed = tuple(failed)


class RoutingError(HeddleError):
    """A node succeeded but where its result goes could not be decided.

    A ``when=`` condition or a branch's chooser raised, or a chooser returned
    something other than one of its targets, a list of them, or None. The
    node fails; ``value`` is what the chooser returned (None when it raised)
    and ``targets`` the names it may choose from.
    """

    def __init__(
        self, node: str, detail: str, *, value: object = None, targets: Sequence[str] = ()
    ) -> None:
        super().__init__(f"node {node!r}: {detail}")
        self.node = node
        self.value = value
        self.targets = tuple(targets)


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # a hostile __str__
        return type(exc).__name__


class CircuitBreakerOpen(HeddleError):
    """The circuit breaker of ``agent`` is open (or its one trial call is in flight).

    The agent was not called. ``retry_after`` is how many seconds remain until
    the breaker lets a trial call through (0.0 while a trial is in flight).
    """

    def __init__(self, agent: str, retry_after: float) -> None:
        if retry_after > 0:
            detail = f"next trial call in {retry_after:.3g}s"
        else:
            detail = "a trial call is in flight"
        super().__init__(f"circuit breaker for agent {agent!r} is open; {detail}")
        self.agent = agent
        self.retry_after = retry_after


class CheckpointError(HeddleError):
    """A durable run could not be recorded or read; ``path`` is the database, if any."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class ResultNotSerializable(CheckpointError, TypeError):
    """A node's result (``node``) or a run's input (``node`` is None) is not JSON.

    Durable runs never pickle: a tampered database must not be able to run code.
    """

    def __init__(self, message: str, *, node: str | None) -> None:
        super().__init__(message)
        self.node = node


class ResultTooLarge(CheckpointError, ValueError):
    """A node's result (``node``) or a run's input (``node`` is None) is over the size limit.

    ``size`` is its encoded size in bytes, ``limit`` the limit. Nothing was stored.
    """

    def __init__(self, message: str, *, node: str | None, size: int, limit: int) -> None:
        super().__init__(message)
        self.node = node
        self.size = size
        self.limit = limit


class ResultNotRestorable(CheckpointError):
    """A recorded result (``node``) or input (``node`` is None) of run ``workflow_id``
    cannot be read back as the value it was.

    Its row is unreadable, or it holds a type this process cannot name from its
    own code (heddle never imports a class because a database names it). The
    run is not resumed as if the node had not run: fix the cause and resume again.
    """

    def __init__(self, message: str, *, workflow_id: str | None, node: str | None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.node = node


class RunNotFoundError(HeddleError, KeyError):
    """No recorded run has ``workflow_id``."""

    def __init__(self, workflow_id: str, where: str) -> None:
        super().__init__(workflow_id)
        self.workflow_id = workflow_id
        self.message = f"no run with workflow id {workflow_id!r} in {where}"

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return self.message


class GraphMismatchError(HeddleError, ValueError):
    """``resume()`` was given a graph whose structure differs from the recorded run's.

    ``recorded`` and ``given`` are the two structural fingerprints.
    """

    def __init__(self, workflow_id: str, recorded: str, given: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} was recorded with a graph of another structure "
            f"(fingerprint {recorded}, this graph's is {given}); nodes or edges changed. "
            "Pass force=True to resume anyway: recorded results of nodes that still exist "
            "are reused, every other node runs"
        )
        self.workflow_id = workflow_id
        self.recorded = recorded
        self.given = given


class RunInProgressError(HeddleError):
    """``resume()`` found the run held by a process that is still running it.

    ``owner`` is that process (``host/pid/token``) and ``lease_until`` when
    its lease runs out unless renewed.
    """

    def __init__(self, workflow_id: str, owner: str, lease_until: datetime) -> None:
        super().__init__(
            f"run {workflow_id!r} is being run by {owner} (its lease runs until "
            f"{lease_until.isoformat(timespec='seconds')} and is renewed while that process "
            "lives); wait for it to finish, or, if that process is gone, for the lease to run out"
        )
        self.workflow_id = workflow_id
        self.owner = owner
        self.lease_until = lease_until


class LeaseLostError(HeddleError):
    """This process stopped owning a run while running it; it stopped at once.

    Another process claimed the run after this one failed to renew its lease
    in time (it was paused, or could not reach the checkpointer). Nothing more
    is recorded by this process; the new owner finishes the run.
    """

    def __init__(self, workflow_id: str, owner: str | None) -> None:
        taker = f"by {owner}" if owner else "(the run is no longer marked running)"
        super().__init__(
            f"run {workflow_id!r} was taken over {taker} while this process ran it: its "
            "lease was not renewed in time; this process stopped running it"
        )
        self.workflow_id = workflow_id
        self.owner = owner


class BackendError(HeddleError):
    """A backend heddle relies on (a Redis server, a database) failed an operation.

    ``backend`` names it as a user would find it (``"Redis at redis://host:6379/0"``);
    the driver's error, if any, is the ``__cause__``. Raised for the shared
    circuit breakers and buses; memory stores raise their own
    :class:`MemoryStoreError` and checkpointers :class:`CheckpointError`.
    """

    def __init__(self, message: str, *, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


class BackendTimeout(BackendError, TimeoutError):
    """A backend did not answer within its deadline (it may be hung, not down).

    ``timeout`` is the deadline in seconds.
    """

    def __init__(self, message: str, *, backend: str, timeout: float) -> None:
        super().__init__(message, backend=backend)
        self.timeout = timeout


class InvalidAgentId(HeddleError, ValueError):
    """An agent id does not match ``^[A-Za-z0-9_-]{1,128}$`` (or its file would leave the base).

    Raised before any file is touched. ``agent_id`` is the rejected value.
    """

    def __init__(self, message: str, *, agent_id: object) -> None:
        super().__init__(message)
        self.agent_id = agent_id


class MemoryStoreError(HeddleError):
    """A memory store could not complete an operation.

    ``path`` is the file involved (``None`` for stores without one). The
    underlying error, if any, is the ``__cause__``.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class CorruptStoreError(MemoryStoreError):
    """The store's file cannot be read as a store.

    heddle never overwrites or truncates such a file: move it aside (or restore
    it from a backup) and the store works again. ``path`` names the file.
    """


class StoreClosedError(MemoryStoreError, RuntimeError):
    """A store or an :class:`~heddle.memory.AgentMemory` was used after ``aclose()``."""


class AgentNotSerializable(HeddleError, TypeError):
    """An agent, or a node's task, could not be pickled to or loaded on a Ray worker.

    ``agent`` is the agent's name. The usual causes: the agent holds a lock, a
    socket or an open file; or its module is not importable on the cluster
    (ship it with ``init_kwargs={"runtime_env": {"py_modules": [...]}}``).
    """

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(message)
        self.agent = agent

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised inside actors too: it must survive the trip back to the driver.
        return (type(self), (self.agent, str(self)))


class NoAttemptContext(HeddleError, RuntimeError):
    """``heddle.current()`` was called outside an agent's attempt.

    Only code that a :class:`~heddle.workflows.WorkflowExecutor` calls as a
    node's agent (and what that code calls, in its task or threads) has an
    attempt to read.
    """
