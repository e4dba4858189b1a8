"""Durable runs: where the executor records a run and each node's final result.

A :class:`Checkpointer` is a Protocol, so other stores (Postgres, Redis) can
implement it; :class:`SQLiteCheckpointer` is the embedded default.

What the executor relies on:

* ``save_node(..., wait=True)`` returns only once the result is durable. The
  executor calls it for every succeeded node *before* releasing the node's
  dependents, so after a crash a resumed run never re-runs a node whose
  dependents may have seen its result.
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
  ran out, or its process is dead on this machine) reads as ``"interrupted"``.
* Every write of a run the executor makes names its owner (``owner=``) and is
  *fenced*: it happens only if that owner still holds the run, checked in the
  same transaction. A process that was paused past its lease and woke up
  after another one claimed the run writes nothing more; it learns so from
  :class:`LeaseLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from heddle.core._sqlite import (
    SchemaTooNew,
    Synchronous,
    check_synchronous,
    connect_readonly,
    connect_wal,
    is_busy,
    is_corrupt,
    migrate,
    retry_while_busy,
    user_version,
)
from heddle.core._threaded import ThreadConfined
from heddle.core.errors import (
    CheckpointError,
    ConfigurationError,
    LeaseLostError,
    ResultNotRestorable,
    RunInProgressError,
    RunNotFoundError,
)
from heddle.core.paths import heddle_home
from heddle.workflows import codec
from heddle.workflows.context import NodeResult, NodeStatus

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_MAX_VALUE_BYTES",
    "SCHEMA_VERSION",
    "Checkpointer",
    "RunLease",
    "RunRecord",
    "RunState",
    "RunStatus",
    "SQLiteCheckpointer",
    "default_database_path",
]

logger = logging.getLogger("heddle.checkpoint")

RunStatus = Literal["running", "succeeded", "failed", "cancelled"]
"""A run's status as stored."""

RunState = Literal["running", "interrupted", "succeeded", "failed", "cancelled"]
"""A run's status as seen now: a ``"running"`` run whose owner is gone is ``"interrupted"``."""

DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024
"""The default limit of one stored result or input, in bytes of its stored text."""

DEFAULT_LEASE = 30.0
"""Seconds a run's owner holds it without renewing; it renews every third of that."""

_LOCK_WAIT = 1.0  # seconds a checkpointer waits for another process's lock before saying so


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

    ``lease`` is set while a process runs it; ``nodes_done`` counts the nodes
    with a recorded success (filled in when read; ignored by ``create_run``).
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

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish; None while running (or after a crash)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def state(self) -> RunState:
        """``status``, except that a running run with no live owner is ``"interrupted"``."""
        if self.status == "running" and (self.lease is None or not self.lease.alive()):
            return "interrupted"
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
        wait: bool = True,
        owner: str | None = None,
    ) -> None:
        """Record a node's final result; with ``wait``, return once it is durable.

        Raises :class:`ResultNotSerializable` (naming the node) when the
        result cannot be stored, and :class:`ResultTooLarge` when it is over
        the size limit, before anything is written. Fenced by
        ``owner``: a waited save that is fenced out raises
        :class:`LeaseLostError` (naming the run's current owner, if any); a
        save that is not waited for is dropped.
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

        Fenced by ``owner``: raises :class:`LeaseLostError` if that owner no
        longer holds the run (nothing is written).
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
        """The run's recorded results, in the order they were recorded.

        ``types`` maps a node to the user classes its content may hold, as
        the code names them. One that cannot be read back raises
        :class:`ResultNotRestorable` naming the run and the node.
        """

    async def events(self, workflow_id: str) -> list[dict[str, Any]]:
        """The run's kept events, oldest first."""

    async def list_runs(
        self, limit: int = 20, *, status: RunState | None = None, graph: str | None = None
    ) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first, as summaries (``input`` is None).

        ``status`` keeps the runs in that :data:`RunState` (``"interrupted"``
        included), ``graph`` those of that graph name.
        """

    async def aclose(self) -> None: ...


# A write waiting for the next group commit: what it does on the checkpointer's thread
# (inside the commit's transaction), who waits for it, and what it is (for the log).
@dataclass(slots=True)
class _Write:
    apply: Callable[[sqlite3.Connection], None]
    future: asyncio.Future[None] | None
    loop: asyncio.AbstractEventLoop
    what: str


class SQLiteCheckpointer(ThreadConfined):
    """Runs, node results and events in one SQLite file (WAL, ``synchronous=NORMAL``).

    ``synchronous=NORMAL`` in WAL mode makes every commit survive a crash of
    the process, which is what resuming after a crash needs; ``"FULL"`` adds
    an fsync per commit so that commits also survive power loss.
    ``max_events_per_run`` bounds the stored events of each run (the latest
    are kept). ``lease`` is how long a run's owner holds it without renewing
    (see :class:`RunLease`): after a crash on another machine, a resume waits
    that long at most; on this machine a dead owner is seen at once.
    ``timeout`` is how long it waits for a lock another process holds; past
    a second it logs a warning on the ``heddle.checkpoint`` logger.

    Results and inputs are stored through :mod:`heddle.workflows.codec`:
    JSON, plus a tagged form that gives back tuples, sets, datetimes, UUIDs,
    Decimals, bytes, Enums, dataclasses and pydantic models as they were
    (never pickle). ``max_value_bytes`` (16 MiB) bounds one stored result or
    input: a bigger one is refused with :class:`ResultTooLarge` before it is
    stored (a result: its node fails; an input: before anything runs).

    The file's schema is versioned (:data:`SCHEMA_VERSION`): opening brings an
    older one up to date, once, and refuses a newer one. With
    ``readonly=True`` it never writes the file, nor creates or upgrades it
    (for inspecting runs): a file without heddle's tables reads as having no
    runs, a missing file is a :class:`CheckpointError`, every write raises
    :class:`CheckpointError`, and a value holding a class this process
    cannot name is given back in its stored (tagged JSON) form instead of
    raising :class:`ResultNotRestorable`.

    Usable from several event loops one after another; all SQLite work runs on
    one dedicated thread, so the event loop never blocks on disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: Synchronous = "NORMAL",
        max_events_per_run: int = 1000,
        timeout: float = 30.0,
        lease: float = DEFAULT_LEASE,
        readonly: bool = False,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        synchronous = check_synchronous(synchronous)
        if (
            isinstance(max_value_bytes, bool)
            or not isinstance(max_value_bytes, int)
            or max_value_bytes < 1
        ):
            raise ConfigurationError(
                f"max_value_bytes must be an int >= 1, got {max_value_bytes!r}",
                parameter="max_value_bytes",
            )
        if (
            isinstance(max_events_per_run, bool)
            or not isinstance(max_events_per_run, int)
            or max_events_per_run < 0
        ):
            raise ConfigurationError(
                f"max_events_per_run must be an int >= 0, got {max_events_per_run!r}",
                parameter="max_events_per_run",
            )
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease > 0:
            raise ConfigurationError(f"lease must be seconds > 0, got {lease!r}", parameter="lease")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise ConfigurationError(
                f"timeout must be seconds >= 0, got {timeout!r}", parameter="timeout"
            )
        super().__init__(
            Path(path).expanduser().absolute() if path is not None else default_database_path()
        )
        self.lease = float(lease)
        self.synchronous = synchronous
        self.max_events_per_run = max_events_per_run
        self.readonly = bool(readonly)
        self.max_value_bytes = max_value_bytes
        self._timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._has_tables = False  # read-only: whether heddle's tables exist yet
        self._result_seq: dict[str, int] = {}  # per run: its last result's number (thread)
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._writing = False

    _thread_name = "heddle-checkpoint"

    def _closed_error(self) -> Exception:
        return CheckpointError(f"{self!r} is closed", path=self.path)

    def _refuse_writes(self) -> None:
        if self.readonly:
            raise CheckpointError(
                f"{self!r} was opened read-only (readonly=True); it records nothing",
                path=self.path,
            )

    # -- on the checkpointer's thread ---------------------------------------------

    def _open_sync(self) -> None:
        self._connection()  # so that `async with` fails at once on a file it cannot use

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            lock_wait = min(_LOCK_WAIT, self._timeout)
            try:
                if self.readonly:
                    self._conn = connect_readonly(
                        self.path,
                        timeout=self._timeout,
                        prepare=self._check_readable,
                        lock_wait=lock_wait,
                        on_wait=self._warn_locked,
                    )
                else:
                    self._conn = connect_wal(
                        self.path,
                        synchronous=self.synchronous,
                        timeout=self._timeout,
                        prepare=self._migrate,
                        check=self._refuse_newer,
                        lock_wait=lock_wait,
                        on_wait=self._warn_locked,
                    )
            except FileNotFoundError as exc:
                raise CheckpointError(
                    f"no checkpoint database at {self.path}", path=self.path
                ) from exc
            except RuntimeError as exc:  # no WAL
                raise CheckpointError(
                    f"cannot open checkpoint database {self.path}: {exc}", path=self.path
                ) from exc
            except sqlite3.Error as exc:
                raise self._database_error(exc) from exc
        return self._conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            migrate(conn, _MIGRATIONS)
        except SchemaTooNew as exc:
            raise self._too_new(exc) from None
        except _ForeignSchema as exc:
            raise self._foreign(exc) from None

    def _refuse_newer(self, conn: sqlite3.Connection) -> int:
        found = user_version(conn)
        if found > SCHEMA_VERSION:
            raise self._too_new(SchemaTooNew(found, SCHEMA_VERSION))
        return found

    def _check_readable(self, conn: sqlite3.Connection) -> None:
        """Refuse what a read-only open cannot read; note whether heddle's tables exist."""
        found = self._refuse_newer(conn)
        self._has_tables = found > 0 or bool(_heddle_tables(conn))
        if found == 0 and self._has_tables:
            try:
                complete = _check_unversioned(conn)
            except _ForeignSchema as exc:
                raise self._foreign(exc) from None
            if not complete:
                raise CheckpointError(
                    f"{self.path} was written by an older heddle and must be upgraded before "
                    "it can be read; a read-only open does not upgrade it: open it once "
                    "without readonly=True (any heddle run or resume does)",
                    path=self.path,
                )

    def _too_new(self, exc: SchemaTooNew) -> CheckpointError:
        return CheckpointError(
            f"{self.path} has checkpoint schema version {exc.found}, newer than version "
            f"{exc.supported}, the newest this heddle supports: it was written by a newer "
            "heddle; upgrade heddle to use it (heddle left the file unchanged)",
            path=self.path,
        )

    def _foreign(self, exc: _ForeignSchema) -> CheckpointError:
        return CheckpointError(
            f"{self.path} has tables named like heddle's that heddle did not make ({exc}); "
            "heddle will not write into them: use another file",
            path=self.path,
        )

    def _warn_locked(self, remaining: float) -> None:
        logger.warning(
            "checkpoint database %s is locked by another process (a write transaction held "
            "elsewhere); waiting up to %.0f s more for it",
            self.path,
            remaining,
        )

    def _database_error(self, exc: sqlite3.Error) -> CheckpointError:
        if is_corrupt(exc):
            return CheckpointError(
                f"{self.path} is not a readable checkpoint database ({exc}); heddle never "
                "modifies such a file: move it aside (or restore it from a backup), and "
                "heddle starts a new one",
                path=self.path,
            )
        if is_busy(exc):
            return CheckpointError(
                f"checkpoint database {self.path} is still locked by another process after "
                f"waiting {self._timeout:g} s ({exc})",
                path=self.path,
            )
        return CheckpointError(f"checkpoint database {self.path}: {exc}", path=self.path)

    def _patiently(self, conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """``conn.execute(sql, params)``, waiting up to ``timeout`` for another process's lock."""
        return retry_while_busy(
            lambda: conn.execute(sql, params),
            timeout=self._timeout,
            warn_after=min(_LOCK_WAIT, self._timeout),
            on_wait=self._warn_locked,
        )

    def _write_sync(self, batch: Sequence[_Write]) -> list[Exception | None]:
        """Commit ``batch`` in one transaction; return each write's error (None: written).

        A write that fails is undone alone and the others are committed: each
        write changes the database with one statement (an event's trimming of
        older events aside), and SQLite undoes a failing statement by itself.
        Fences and other checks raise before that statement. Raises if the
        transaction as a whole fails (SQLite then rolls all of it back).
        """
        conn = self._connection()
        errors: list[Exception | None] = [None] * len(batch)
        try:
            self._patiently(conn, "BEGIN IMMEDIATE")
            try:
                for k, write in enumerate(batch):
                    try:
                        write.apply(conn)
                    except (CheckpointError, LeaseLostError) as exc:
                        errors[k] = exc
                    except sqlite3.Error as exc:  # a constraint, a trigger: this write only
                        if not conn.in_transaction:  # ... unless it ended the transaction
                            raise
                        error = self._database_error(exc)
                        error.__cause__ = exc
                        errors[k] = error
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._database_error(exc) from exc
        return errors

    def _read_sync(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            if self.readonly and not self._has_tables:
                self._check_readable(conn)  # a writer may have made them since
                if not self._has_tables:
                    return []
            rows: list[tuple[Any, ...]] = self._patiently(conn, sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._database_error(exc) from exc
        return rows

    def _next_result_seq(self, conn: sqlite3.Connection, workflow_id: str) -> int:
        """The number of the run's next result, in the order results are recorded.

        Read from the database at this checkpointer's first write of the run
        (in the write's transaction), then counted here: results are fenced,
        so no other process records any while this one owns the run, and
        :meth:`create_run`, :meth:`claim_run` and :meth:`finish_run` forget
        the count. Counting saves an index on the hot path of every save.
        """
        last = self._result_seq.get(workflow_id)
        if last is None:
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM heddle_node_results WHERE workflow_id = ?",
                (workflow_id,),
            ).fetchone()
        self._result_seq[workflow_id] = seq = int(last) + 1
        return seq

    # -- group commit ---------------------------------------------------------------
    #
    # Writes queue in self._pending. When none is in flight, the first waited
    # writer hands the queue to the thread, which commits it as one transaction
    # and then takes whatever queued meanwhile, until the queue is empty.
    # Waiters are woken on their own loop; the bookkeeping never needs a loop,
    # so a loop that closes mid-write cannot leave the checkpointer stuck.

    def _enqueue(
        self, apply: Callable[[sqlite3.Connection], None], wait: bool, what: str
    ) -> asyncio.Future[None] | None:
        if self._closed:
            raise self._closed_error()
        self._refuse_writes()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] | None = loop.create_future() if wait else None
        with self._lock:
            self._pending.append(_Write(apply, future, loop, what))
            if self._writing or not wait:  # lazy writes ride along with the next commit
                return future
            self._writing = True
        try:
            self._submit(self._drain_sync)
        except BaseException:
            with self._lock:
                self._writing = False
            raise
        return future

    def _drain_sync(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._writing = False
                    return
            errors: list[Exception | None]
            try:
                errors = self._write_sync(batch)
            except Exception as exc:
                errors = [exc] * len(batch)
            self._log_lost_lazy_writes(batch, errors)
            settle: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Any]]] = {}
            for write, error in zip(batch, errors, strict=True):
                if write.future is not None:
                    settle.setdefault(write.loop, []).append((write.future, error))
            for loop, outcomes in settle.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(_settle, outcomes)

    def _log_lost_lazy_writes(
        self, batch: Sequence[_Write], errors: Sequence[Exception | None]
    ) -> None:
        """Say once per commit that writes nobody waits for failed (a lost lease is expected)."""
        lost = [
            (write, error)
            for write, error in zip(batch, errors, strict=True)
            if error is not None and write.future is None and not isinstance(error, LeaseLostError)
        ]
        if lost:
            write, error = lost[0]
            logger.warning(
                "checkpoint database %s: %d write(s) not waited for were not recorded, "
                "the first: %s (%s)",
                self.path,
                len(lost),
                write.what,
                error,
            )

    async def _write(self, apply: Callable[[sqlite3.Connection], None], what: str) -> None:
        future = self._enqueue(apply, True, what)
        assert future is not None
        await future

    # -- the Checkpointer protocol ----------------------------------------------------

    async def create_run(self, record: RunRecord) -> None:
        wid, lease = record.workflow_id, record.lease
        input_text = _encode(record.input, node=None, max_bytes=self.max_value_bytes)
        row = (
            wid,
            record.graph_name,
            record.fingerprint,
            input_text,
            json.dumps(list(record.nodes)),
            record.status,
            _iso(record.started_at),
            lease.owner if lease else None,
            lease.site if lease else None,
            _iso(lease.until) if lease else None,
        )
        path = self.path

        def insert(conn: sqlite3.Connection) -> None:
            self._result_seq.pop(wid, None)
            found = conn.execute(
                "SELECT status FROM heddle_runs WHERE workflow_id = ?", (wid,)
            ).fetchone()
            if found is not None:
                raise CheckpointError(
                    f"workflow {wid!r} already exists in {path} (status {found[0]}); "
                    "resume it or choose another workflow_id",
                    path=path,
                )
            conn.execute(
                "INSERT INTO heddle_runs (workflow_id, graph_name, fingerprint, input, nodes, "
                "status, started_at, finished_at, owner, owner_site, lease_until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                row,
            )

        await self._write(insert, f"the start of run {wid!r}")

    def _claim_sync(self, workflow_id: str, lease: RunLease) -> RunRecord:
        self._refuse_writes()
        conn = self._connection()
        self._result_seq.pop(workflow_id, None)
        try:
            self._patiently(conn, "BEGIN IMMEDIATE")  # the read and the write see one state
            try:
                rows = conn.execute(f"{_SELECT_SUMMARY} WHERE workflow_id = ?", (workflow_id,))
                row = rows.fetchone()
                if row is None:
                    raise RunNotFoundError(workflow_id, str(self.path))
                record = _record(row, self.path)
                held = record.lease
                if (
                    record.status == "running"
                    and held is not None
                    and held.owner != lease.owner
                    and held.alive()
                ):
                    raise RunInProgressError(workflow_id, held.owner, held.until)
                conn.execute(
                    "UPDATE heddle_runs SET status = 'running', finished_at = NULL, owner = ?, "
                    "owner_site = ?, lease_until = ? WHERE workflow_id = ?",
                    (lease.owner, lease.site, _iso(lease.until), workflow_id),
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._database_error(exc) from exc
        return record

    async def claim_run(self, workflow_id: str, lease: RunLease) -> RunRecord:
        return await self._call(self._claim_sync, workflow_id, lease)

    def _renew_sync(self, workflow_id: str, lease: RunLease) -> bool:
        self._refuse_writes()
        conn = self._connection()
        try:
            cursor = self._patiently(
                conn,
                "UPDATE heddle_runs SET lease_until = ? "
                "WHERE workflow_id = ? AND owner = ? AND status = 'running'",
                (_iso(lease.until), workflow_id, lease.owner),
            )
        except sqlite3.Error as exc:
            raise self._database_error(exc) from exc
        return bool(cursor.rowcount == 1)

    async def renew_lease(self, workflow_id: str, lease: RunLease) -> bool:
        return await self._call(self._renew_sync, workflow_id, lease)

    async def save_node(
        self,
        workflow_id: str,
        node: str,
        result: NodeResult,
        *,
        wait: bool = True,
        owner: str | None = None,
    ) -> None:
        stored = {k: v for k, v in result.items() if k != "resumed"}
        text = _encode(stored, node=node, max_bytes=self.max_value_bytes)
        status = result["status"]

        def insert(conn: sqlite3.Connection) -> None:
            seq = self._next_result_seq(conn, workflow_id)
            cursor = conn.execute(_SAVE_RESULT, (workflow_id, owner, node, status, text, seq))
            if cursor.rowcount == 0:
                raise _lost(conn, workflow_id)

        future = self._enqueue(insert, wait, f"the result of node {node!r} of run {workflow_id!r}")
        if future is not None:
            await future

    async def add_event(
        self, workflow_id: str, event: dict[str, Any], *, owner: str | None = None
    ) -> None:
        keep = self.max_events_per_run
        if keep == 0:
            return
        text = json.dumps(event)

        def insert(conn: sqlite3.Connection) -> None:
            # The primary key's index finds the run's last event in O(log n).
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM heddle_events WHERE workflow_id = ?",
                (workflow_id,),
            ).fetchone()
            seq = int(last) + 1
            cursor = conn.execute(_ADD_EVENT, (workflow_id, owner, seq, text))
            if cursor.rowcount == 0:
                raise _lost(conn, workflow_id)
            if seq > keep:
                conn.execute(
                    "DELETE FROM heddle_events WHERE workflow_id = ? AND seq <= ?",
                    (workflow_id, seq - keep),
                )

        self._enqueue(insert, False, f"an event of run {workflow_id!r}")

    async def finish_run(
        self,
        workflow_id: str,
        status: RunStatus,
        finished_at: datetime,
        *,
        owner: str | None = None,
    ) -> None:
        at = _iso(finished_at)

        def update(conn: sqlite3.Connection) -> None:
            self._result_seq.pop(workflow_id, None)
            cursor = conn.execute(_FINISH_RUN, (workflow_id, owner, status, at))
            if cursor.rowcount == 0 and owner is not None:
                raise _lost(conn, workflow_id)

        await self._write(update, f"the end of run {workflow_id!r}")

    async def get_run(
        self, workflow_id: str, *, input_types: Iterable[type] = ()
    ) -> RunRecord | None:
        rows = await self._call(
            self._read_sync, f"{_SELECT_RUN} WHERE workflow_id = ?", (workflow_id,)
        )
        if not rows:
            return None
        return _record(rows[0], self.path, input_types=input_types, lenient=self.readonly)

    def _list_sync(self, limit: int, status: RunState | None, graph: str | None) -> list[RunRecord]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append("running" if status == "interrupted" else status)
        if graph is not None:
            where.append("graph_name = ?")
            params.append(graph)
        sql = f"{_SELECT_SUMMARY} {'WHERE ' + ' AND '.join(where) if where else ''} "
        if status not in ("running", "interrupted"):  # the state is the stored status
            rows = self._read_sync(f"{sql}ORDER BY started_at DESC LIMIT ?", (*params, limit))
            return [_record(row, self.path) for row in rows]
        # Whether a running run's owner is alive is only known here: read until enough are.
        found: list[RunRecord] = []
        offset, page = 0, max(limit, 50)
        while len(found) < limit:
            rows = self._read_sync(
                f"{sql}ORDER BY started_at DESC LIMIT ? OFFSET ?", (*params, page, offset)
            )
            found += [r for r in (_record(row, self.path) for row in rows) if r.state == status]
            if len(rows) < page:
                break
            offset += page
        return found[:limit]

    async def list_runs(
        self, limit: int = 20, *, status: RunState | None = None, graph: str | None = None
    ) -> list[RunRecord]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an int >= 0, got {limit!r}", parameter="limit")
        if status is not None and status not in _RUN_STATES:
            raise ConfigurationError(
                f"status must be one of {', '.join(_RUN_STATES)}, got {status!r}",
                parameter="status",
            )
        return await self._call(self._list_sync, limit, status, graph)

    async def node_results(
        self, workflow_id: str, *, types: Mapping[str, Iterable[type]] | None = None
    ) -> dict[str, NodeResult]:
        rows = await self._call(
            self._read_sync,
            "SELECT node, status, result FROM heddle_node_results WHERE workflow_id = ? "
            "ORDER BY seq",
            (workflow_id,),
        )
        types = types or {}
        return {
            node: _node_result(
                workflow_id, node, status, text, types.get(node, ()), lenient=self.readonly
            )
            for node, status, text in rows
        }

    async def events(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = await self._call(
            self._read_sync,
            "SELECT seq, event FROM heddle_events WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        return [_event(workflow_id, seq, text, self.path) for seq, text in rows]

    def _close_sync(self) -> None:
        self._drain_sync()  # writes nobody waited for are recorded on a clean close too
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def _settle(outcomes: Sequence[tuple[asyncio.Future[None], Exception | None]]) -> None:
    for future, error in outcomes:
        if future.done():  # its waiter was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


# Writes of a run are fenced by its owner's token (?2) in the same statement, so in the
# same transaction: no claim can come between the check and the write. Without an owner
# (?2 NULL) a write is not fenced.
_OWNED = "(?2 IS NULL OR EXISTS (SELECT 1 FROM heddle_runs WHERE workflow_id = ?1 AND owner = ?2))"
_SAVE_RESULT = (
    "INSERT OR REPLACE INTO heddle_node_results (workflow_id, node, status, result, seq) "
    f"SELECT ?1, ?3, ?4, ?5, ?6 WHERE {_OWNED}"
)
_ADD_EVENT = f"INSERT INTO heddle_events (workflow_id, seq, event) SELECT ?1, ?3, ?4 WHERE {_OWNED}"
_FINISH_RUN = (
    "UPDATE heddle_runs SET status = ?3, finished_at = ?4, owner = NULL, owner_site = NULL, "
    "lease_until = NULL WHERE workflow_id = ?1 AND (?2 IS NULL OR owner = ?2)"
)


def _lost(conn: sqlite3.Connection, workflow_id: str) -> LeaseLostError:
    """The error for a write fenced out of ``workflow_id``, naming who holds it now."""
    row = conn.execute(
        "SELECT owner FROM heddle_runs WHERE workflow_id = ?", (workflow_id,)
    ).fetchone()
    return LeaseLostError(workflow_id, None if row is None else row[0])


# -- the schema ---------------------------------------------------------------------------

# Version 1: the tables as heddle made them before the schema had a version, with the
# lease columns (databases made before leases gain them).
_TABLES_V1 = (
    """CREATE TABLE IF NOT EXISTS heddle_runs (
    workflow_id TEXT PRIMARY KEY,
    graph_name  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    input       TEXT NOT NULL,
    nodes       TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    owner       TEXT,
    owner_site  TEXT,
    lease_until TEXT
)""",
    "CREATE INDEX IF NOT EXISTS heddle_runs_started ON heddle_runs (started_at)",
    """CREATE TABLE IF NOT EXISTS heddle_node_results (
    workflow_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, node)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS heddle_events (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID""",
)
_TABLES = ("heddle_runs", "heddle_node_results", "heddle_events")
_LEASE_COLUMNS = ("owner", "owner_site", "lease_until")


class _ForeignSchema(Exception):
    """Tables named like heddle's, in a shape heddle never made."""


def _heddle_tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)", _TABLES
    )
    return {name for (name,) in rows}


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """(name, type, notnull, default, pk) of each column, in order."""
    return [tuple(row[1:]) for row in conn.execute(f"PRAGMA table_info({table})")]


@functools.cache
def _v1_columns() -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(":memory:")
    try:
        for statement in _TABLES_V1:
            conn.execute(statement)
        return {table: _columns(conn, table) for table in _TABLES}
    finally:
        conn.close()


_STRICTER = re.compile(r"\b(CHECK|REFERENCES|UNIQUE|COLLATE|GENERATED)\b", re.IGNORECASE)


def _check_unversioned(conn: sqlite3.Connection) -> bool:
    """Check that heddle tables without a schema version are heddle's; True if complete.

    Incomplete: a table is missing, or the runs table lacks the lease columns
    (it predates them). Raises :class:`_ForeignSchema` for other columns,
    other constraints or triggers: writing into those could fail only after
    agents ran.
    """
    present = _heddle_tables(conn)
    complete = present == set(_TABLES)
    for table in sorted(present):
        have, want = _columns(conn, table), _v1_columns()[table]
        short = len(want) - len(have)
        if have != want[: len(have)] or not (
            short == 0 or (table == "heddle_runs" and 0 < short <= len(_LEASE_COLUMNS))
        ):
            raise _ForeignSchema(f"table {table} has columns {[c[0] for c in have]}")
        complete = complete and short == 0
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if _STRICTER.search(sql or ""):
            raise _ForeignSchema(f"table {table} has constraints of its own")
    triggers = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN (?, ?, ?)", _TABLES
    ).fetchall()
    if triggers:
        raise _ForeignSchema(f"triggers {', '.join(name for (name,) in triggers)}")
    return complete


def _to_v1(conn: sqlite3.Connection) -> None:
    """Version 0 (no version: a new file, or one from before versions) to 1."""
    _check_unversioned(conn)
    for statement in _TABLES_V1:
        conn.execute(statement)
    have = {column[0] for column in _columns(conn, "heddle_runs")}
    for column in _LEASE_COLUMNS:
        if column not in have:
            conn.execute(f"ALTER TABLE heddle_runs ADD COLUMN {column} TEXT")


_MIGRATIONS = (_to_v1,)

SCHEMA_VERSION = len(_MIGRATIONS)
"""The checkpoint schema this heddle writes (``PRAGMA user_version``); newer files are refused."""


# -- stored values ------------------------------------------------------------------------
#
# Results and inputs pass through _encode and _decode only, so that how they are stored
# can change in one place.


# The user classes (Enums, dataclasses, pydantic models) this process has stored. Its own
# code made them, so reading them back may rebuild them: the type to restore always comes
# from the code (this set, or the classes the caller names), never from the database.
_STORED_CLASSES: set[type] = set()


def _encode(value: Any, *, node: str | None, max_bytes: int) -> str:
    """The stored text of ``node``'s result (None: the run's input).

    Raises ResultNotSerializable or ResultTooLarge, naming the node.
    """
    seen: set[type] = set()
    text = codec.encode(value, node=node, max_bytes=max_bytes, seen=seen)
    if seen:
        _STORED_CLASSES.update(seen)
    return text


def _decode(
    text: Any,
    *,
    node: str | None,
    workflow_id: str,
    types: Iterable[type] = (),
    lenient: bool = False,
) -> Any:
    """The value stored as ``text`` for ``node`` (None: the input); ResultNotRestorable.

    ``lenient`` (for inspecting runs): a value holding a class this process
    cannot name comes back in its stored form, tags and all.
    """
    if not isinstance(text, str):
        raise ResultNotRestorable(
            f"cannot read back {_recorded(node, workflow_id)}: it is stored as "
            f"{type(text).__name__}, not text",
            workflow_id=workflow_id,
            node=node,
        )
    candidates = [*types, *_STORED_CLASSES]
    try:
        return codec.decode(text, types=candidates, node=node, workflow_id=workflow_id)
    except ResultNotRestorable:
        if not lenient:
            raise
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
        raise


def _recorded(node: str | None, workflow_id: str) -> str:
    what = "the input" if node is None else f"the result of node {node!r}"
    return f"{what} of run {workflow_id!r}"


_NODE_STATUSES: tuple[str, ...] = get_args(NodeStatus)
_RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
_RUN_STATES: tuple[str, ...] = get_args(RunState)


def _node_result(
    workflow_id: str,
    node: str,
    status: Any,
    text: Any,
    types: Iterable[type] = (),
    *,
    lenient: bool = False,
) -> NodeResult:
    """A recorded result, checked: ResultNotRestorable rather than a node taken for not run."""
    result = _decode(text, node=node, workflow_id=workflow_id, types=types, lenient=lenient)
    problem = _result_problem(result, status)
    if problem:
        raise ResultNotRestorable(
            f"cannot read back {_recorded(node, workflow_id)}: {problem}; heddle does not "
            "treat it as not run: restore the row, or delete it to have the node run again",
            workflow_id=workflow_id,
            node=node,
        )
    return result  # type: ignore[no-any-return]


def _result_problem(result: Any, status: Any) -> str | None:
    if not isinstance(result, dict):
        return f"it holds {type(result).__name__}, not a result"
    missing = [k for k in ("content", "status", "error", "attempts", "duration") if k not in result]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if result["status"] not in _NODE_STATUSES:
        return f"its status is {_preview(result['status'])}"
    if result["status"] != status:
        return f"its status column says {_preview(status)} but the result {result['status']!r}"
    if result["error"] is not None and not isinstance(result["error"], str):
        return f"its error is {_preview(result['error'])}"
    if isinstance(result["attempts"], bool) or not isinstance(result["attempts"], int):
        return f"its attempts are {_preview(result['attempts'])}"
    if isinstance(result["duration"], bool) or not isinstance(result["duration"], int | float):
        return f"its duration is {_preview(result['duration'])}"
    return None


def _event(workflow_id: str, seq: int, text: Any, path: Path) -> dict[str, Any]:
    try:
        event = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        event = None
    if not isinstance(event, dict):
        raise CheckpointError(
            f"run {workflow_id!r} in {path}: its event {seq} is not a JSON object "
            f"({_preview(text)})",
            path=path,
        )
    return event


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


_SUMMARY_COLUMNS = (
    "workflow_id, graph_name, fingerprint, {input}, nodes, status, started_at, finished_at, "
    "owner, owner_site, lease_until, (SELECT COUNT(*) FROM heddle_node_results AS r "
    "WHERE r.workflow_id = heddle_runs.workflow_id AND r.status = 'success')"
)
_SELECT_RUN = f"SELECT {_SUMMARY_COLUMNS.format(input='input')} FROM heddle_runs"
_SELECT_SUMMARY = f"SELECT {_SUMMARY_COLUMNS.format(input='NULL')} FROM heddle_runs"


class _Row:
    """Reads the columns of one heddle_runs row, naming the run and column it cannot read."""

    def __init__(self, workflow_id: Any, path: Path) -> None:
        self.workflow_id = workflow_id
        self.path = path

    def bad(self, column: str, value: Any, expected: str) -> CheckpointError:
        return CheckpointError(
            f"run {self.workflow_id!r} in {self.path}: its {column} column holds "
            f"{_preview(value)}, not {expected}; heddle cannot read this run (fix or delete "
            "its row in heddle_runs)",
            path=self.path,
        )

    def text(self, column: str, value: Any, *, optional: bool = False) -> Any:
        if isinstance(value, str) or (optional and value is None):
            return value
        raise self.bad(column, value, "text")

    def moment(self, column: str, value: Any, *, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.bad(column, value, "an ISO 8601 timestamp") from None
        # heddle writes UTC with its offset; a time without one is read as UTC too.
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _record(
    row: tuple[Any, ...],
    path: Path,
    *,
    input_types: Iterable[type] = (),
    lenient: bool = False,
) -> RunRecord:
    (wid, graph, fingerprint, input_text, nodes_text, status, started, finished) = row[:8]
    owner, site, lease_until, done = row[8:]
    read = _Row(wid, path)
    read.text("workflow_id", wid)
    try:
        nodes = json.loads(nodes_text)
    except (TypeError, ValueError, RecursionError):
        nodes = None
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise read.bad("nodes", nodes_text, "a JSON list of node names")
    if status not in _RUN_STATUSES:
        raise read.bad("status", status, f"one of {', '.join(_RUN_STATUSES)}")
    owner = read.text("owner", owner, optional=True)
    until = read.moment("lease_until", lease_until, optional=True)
    return RunRecord(
        workflow_id=wid,
        graph_name=read.text("graph_name", graph),
        fingerprint=read.text("fingerprint", fingerprint),
        input=None
        if input_text is None
        else _decode(input_text, node=None, workflow_id=wid, types=input_types, lenient=lenient),
        nodes=tuple(nodes),
        status=status,
        started_at=read.moment("started_at", started),
        finished_at=read.moment("finished_at", finished, optional=True),
        lease=RunLease(owner, read.text("owner_site", site, optional=True) or "", until)
        if owner and until
        else None,
        nodes_done=int(done),
    )
