"""Durable runs: where the executor records a run and each node's final result.

A :class:`Checkpointer` is a Protocol, so other stores (Postgres, Redis) can
implement it; :class:`SQLiteCheckpointer` is the embedded default.

What the executor relies on:

* Results are kept per activation ``(node, iteration, item)`` (see
  :class:`~heddle.workflows.activation.Activation`): a loop's every pass is
  recorded. ``save_node(..., wait=True)`` returns only once the result is
  durable. The executor calls it for every succeeded activation *before*
  releasing its dependents, so after a crash a resumed run never re-runs an
  activation whose dependents may have seen its result.
* Results and events are JSON, never pickle: a tampered database can hold
  wrong data, but it cannot make heddle run code. A recorded result that
  cannot be read back is an error naming the run and the node, never a node
  taken for not run.
* Writes are group-committed: every result that arrives while a commit is in
  flight goes into the next single transaction. A fan-out of many nodes
  finishing together pays for a few commits, not one each. Each write of the
  group succeeds or fails on its own: one that fails (a constraint, a lost
  lease) fails only its own caller.
* Only a succeeded node's result and the run's start and end are waited for.
  Events and failed or skipped results ride along with the next commit: after
  a crash they may be missing, which costs nothing on resume (a node without
  a recorded success runs again). Events are numbered 1, 2, 3... per run by
  the database, whichever process writes them.
* A running run has one owner, the process driving it, which holds a
  :class:`RunLease` and renews it while it runs. ``claim_run`` hands a run to
  a resuming process only when no live owner holds it, in one transaction, so
  two processes never run the same run. A run whose owner is gone (its lease
  ran out, or its process is dead on this machine) reads as
  :attr:`RunStatus.INTERRUPTED`.
* Every write of a run the executor makes names its owner (``owner=``) and is
  *fenced*: it happens only if that owner still holds the run, checked in the
  same transaction. A process that was paused past its lease and woke up
  after another one claimed the run writes nothing more; it learns so from
  :class:`LeaseLostError`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from heddle.core.paths import heddle_home
from heddle.workflows._checkpoint_schema import SCHEMA_VERSION
from heddle.workflows.activation import Activation
from heddle.workflows.context import NodeResult
from heddle.workflows.status import RunStatus

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_VALUE_BYTES",
    "SCHEMA_VERSION",
    "Checkpointer",
    "RunLease",
    "RunRecord",
    "RunStatus",
    "SQLiteCheckpointer",
    "default_database_path",
]

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024
"""The default limit of one stored result or input, in bytes of its stored text."""

DEFAULT_LEASE = 30.0
"""Seconds a run's owner holds it without renewing; it renews every third of that."""


def default_database_path() -> Path:
    """``$HEDDLE_HOME/heddle.db``, else ``./.heddle/heddle.db`` (read when called)."""
    return heddle_home() / "heddle.db"


@functools.cache
def _this_site() -> str:
    """Which machine and process-id namespace this is, as 12 hex digits.

    Two processes of one site see each other's process ids, so a dead owner
    can be told at once instead of when its lease runs out. The boot id and
    the pid namespace keep containers that share a host name (and a reboot)
    from passing for one site.
    """
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _process_alive(pid: int) -> bool:
    """True unless process ``pid`` of this site is certainly gone (or a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone too
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


@dataclass(frozen=True, slots=True)
class RunLease:
    """Which process runs a run, and until when it holds it without renewing.

    ``owner`` reads ``host/pid/token`` (a new token for every run it drives);
    ``site`` tells processes that share a machine and a pid namespace.
    """

    owner: str
    site: str
    until: datetime

    @classmethod
    def take(cls, seconds: float, *, owner: str | None = None) -> RunLease:
        """A lease of this process for ``seconds`` from now (a new owner unless given)."""
        if owner is None:
            owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        return cls(owner, _this_site(), datetime.now(UTC) + timedelta(seconds=seconds))

    def renewed(self, seconds: float) -> RunLease:
        """The same owner's lease, running ``seconds`` from now."""
        return replace(self, until=datetime.now(UTC) + timedelta(seconds=seconds))

    def alive(self, now: datetime | None = None) -> bool:
        """The lease has not run out and, on this site, its process still exists."""
        if self.until <= (now or datetime.now(UTC)):
            return False
        if self.site != _this_site():
            return True  # another machine: only the lease can tell
        try:
            pid = int(self.owner.rsplit("/", 2)[-2])
        except (ValueError, IndexError):
            return True
        return _process_alive(pid)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a checkpointer knows about one run.

    ``status`` is as stored (a plain string equal to a member is taken as that
    member); :attr:`state` is how it reads now. ``lease`` is set while a
    process runs it; ``nodes_done`` counts the nodes with at least one
    succeeded activation (filled in when read; ignored by ``create_run``).
    ``input`` is None in the summaries that :meth:`Checkpointer.list_runs`
    and :meth:`Checkpointer.claim_run` return: an input can be large, and
    only :meth:`Checkpointer.get_run` reads it.
    """

    workflow_id: str
    graph_name: str
    fingerprint: str
    input: Any
    nodes: tuple[str, ...]
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    lease: RunLease | None = None
    nodes_done: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))  # a word: its member

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish; None while running (or after a crash)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def state(self) -> RunStatus:
        """``status``, except that a running run with no live owner is ``INTERRUPTED``."""
        if self.status is RunStatus.RUNNING and (self.lease is None or not self.lease.alive()):
            return RunStatus.INTERRUPTED
        return self.status


@runtime_checkable
class Checkpointer(Protocol):
    """Where durable runs live. Implementations must be safe to use from any event loop.

    Writes that take ``owner`` are fenced when it is given: they happen only
    if ``owner`` (a :attr:`RunLease.owner`) still holds the run, checked in
    the same transaction as the write. Without ``owner`` they are not fenced.
    """

    lease: float
    """Seconds a run's owner holds it without renewing (see :class:`RunLease`)."""

    async def create_run(self, record: RunRecord) -> None:
        """Record a new run, owned by ``record.lease``; CheckpointError if its id exists.

        A record whose status is ``INTERRUPTED`` (never stored) is a
        :class:`ConfigurationError`.

        Raises :class:`ResultNotSerializable` (``node`` None) when the input
        cannot be stored and :class:`ResultTooLarge` when it is over the size
        limit, before anything is written.
        """

    async def claim_run(self, workflow_id: str, lease: RunLease) -> RunRecord:
        """Make ``lease`` the owner of a recorded run and mark it running, atomically.

        Clears ``finished_at``; returns the record as it was before the claim
        (a summary: ``input`` is None). Raises :class:`RunInProgressError` if
        another live owner holds it (see :meth:`RunLease.alive`) and
        :class:`RunNotFoundError` if there is no such run.
        """

    async def renew_lease(self, workflow_id: str, lease: RunLease) -> bool:
        """Extend the run's lease to ``lease.until``; False if ``lease.owner`` lost it.

        Checks the owner, not the expiry: an owner that was paused past its
        lease goes on if nobody claimed the run meanwhile.
        """

    async def save_node(
        self,
        workflow_id: str,
        node: str,
        result: NodeResult,
        *,
        iteration: int = 0,
        item: int | None = None,
        wait: bool = True,
        owner: str | None = None,
    ) -> None:
        """Record the final result of activation ``(node, iteration, item)``.

        With ``wait``, return once it is durable. Saving an activation again
        replaces its result, which then counts as recorded last. The stored
        status is the plain word of :class:`~heddle.workflows.status.NodeStatus`.
        The result's ``"iteration"``, ``"item"`` and ``"resumed"`` keys are not
        stored: the arguments say which activation it is.

        Raises :class:`ConfigurationError` for a status that is not a node
        status or a negative iteration or item, :class:`ResultNotSerializable`
        (naming the node) when the result cannot be stored, and
        :class:`ResultTooLarge` when it is over the size limit, before
        anything is written. Fenced by ``owner``: a waited save that is fenced
        out raises :class:`LeaseLostError` (naming the run's current owner, if
        any); a save that is not waited for is dropped.
        """

    async def add_event(
        self, workflow_id: str, event: dict[str, Any], *, owner: str | None = None
    ) -> None:
        """Keep one event of the run (JSON-ready dict); need not wait for durability.

        The store numbers the run's events 1, 2, 3...; fenced by ``owner``
        (fenced out, the event is dropped).
        """

    async def finish_run(
        self,
        workflow_id: str,
        status: RunStatus,
        finished_at: datetime,
        *,
        owner: str | None = None,
    ) -> None:
        """Record the run's end and release its lease, durably, after everything before it.

        ``status`` is ``SUCCEEDED``, ``FAILED`` or ``CANCELLED`` (or its word),
        else :class:`ConfigurationError`. Fenced by ``owner``: raises
        :class:`LeaseLostError` if that owner no longer holds the run (nothing
        is written).
        """

    async def get_run(
        self, workflow_id: str, *, input_types: Iterable[type] = ()
    ) -> RunRecord | None:
        """The run with its input; None if unknown.

        ``input_types`` are the user classes (Enums, dataclasses, pydantic
        models) the input may hold, as the code names them (see
        :mod:`heddle.workflows.codec`). An unreadable input raises
        :class:`ResultNotRestorable` (``node`` None), any other unreadable
        column :class:`CheckpointError`.
        """

    async def node_results(
        self, workflow_id: str, *, types: Mapping[str, Iterable[type]] | None = None
    ) -> dict[str, NodeResult]:
        """Each node's latest result, in the order they were recorded.

        A node's latest result is that of its activation with the highest
        iteration (and no item); its ``"iteration"`` says which. ``types``
        maps a node to the user classes its content may hold, as the code
        names them. One that cannot be read back raises
        :class:`ResultNotRestorable` naming the run and the node.
        """

    async def activation_results(
        self, workflow_id: str, *, types: Mapping[str, Iterable[type]] | None = None
    ) -> dict[Activation, NodeResult]:
        """Every recorded activation's result, in the order they were recorded.

        Each result's ``"iteration"`` is its activation's, and so is its
        ``"item"`` when that is not None. ``types`` and errors are as for
        :meth:`node_results`.
        """

    async def events(self, workflow_id: str) -> list[dict[str, Any]]:
        """The run's kept events, oldest first."""

    async def list_runs(
        self,
        limit: int = 20,
        *,
        status: RunStatus | str | None = None,
        graph: str | None = None,
    ) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first, as summaries (``input`` is None).

        ``status`` (a :class:`RunStatus` or its word) keeps the runs whose
        :attr:`RunRecord.state` it is (``INTERRUPTED`` included), else
        :class:`ConfigurationError` naming the statuses; ``graph`` keeps those
        of that graph name.
        """

    async def aclose(self) -> None: ...


# Imported last: heddle.workflows._sqlite_checkpoint imports the types above from here.
from heddle.workflows._sqlite_checkpoint import SQLiteCheckpointer  # noqa: E402
