"""Durable runs: where the executor records a run and each node's final result.

A :class:`Checkpointer` is a Protocol, so other stores (Postgres, Redis) can
implement it; :class:`SQLiteCheckpointer` is the embedded default.

What the executor relies on:

* ``save_node(..., wait=True)`` returns only once the result is durable. The
  executor calls it for every succeeded node *before* releasing the node's
  dependents, so after a crash a resumed run never re-runs a node whose
  dependents may have seen its result.
* Results and events are JSON, never pickle: a tampered database can hold
  wrong data, but it cannot make heddle run code.
* Writes are group-committed: every result that arrives while a commit is in
  flight goes into the next single transaction. A fan-out of many nodes
  finishing together pays for a few commits, not one each.
* Only a succeeded node's result and the run's start and end are waited for.
  Events and failed or skipped results ride along with the next commit: after
  a crash they may be missing, which costs nothing on resume (a node without
  a recorded success runs again).
* A running run has one owner, the process driving it, which holds a
  :class:`RunLease` and renews it while it runs. ``claim_run`` hands a run to
  a resuming process only when no live owner holds it, in one transaction, so
  two processes never run the same run. A run whose owner is gone (its lease
  ran out, or its process is dead on this machine) reads as ``"interrupted"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from heddle.core._sqlite import Synchronous, check_synchronous, connect_wal
from heddle.core._threaded import ThreadConfined
from heddle.core.errors import (
    CheckpointError,
    ConfigurationError,
    ResultNotSerializable,
    RunInProgressError,
    RunNotFoundError,
)
from heddle.core.paths import heddle_home
from heddle.workflows.context import NodeResult

__all__ = [
    "DEFAULT_LEASE",
    "Checkpointer",
    "RunLease",
    "RunRecord",
    "RunState",
    "RunStatus",
    "SQLiteCheckpointer",
    "default_database_path",
]

RunStatus = Literal["running", "succeeded", "failed", "cancelled"]
"""A run's status as stored."""

RunState = Literal["running", "interrupted", "succeeded", "failed", "cancelled"]
"""A run's status as seen now: a ``"running"`` run whose owner is gone is ``"interrupted"``."""

DEFAULT_LEASE = 30.0
"""Seconds a run's owner holds it without renewing; it renews every third of that."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS heddle_runs (
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
);
CREATE INDEX IF NOT EXISTS heddle_runs_started ON heddle_runs (started_at);
CREATE TABLE IF NOT EXISTS heddle_node_results (
    workflow_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, node)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heddle_events (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;
"""


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
    """Where durable runs live. Implementations must be safe to use from any event loop."""

    lease: float
    """Seconds a run's owner holds it without renewing (see :class:`RunLease`)."""

    async def create_run(self, record: RunRecord) -> None:
        """Record a new run, owned by ``record.lease``; CheckpointError if its id exists."""

    async def claim_run(self, workflow_id: str, lease: RunLease) -> RunRecord:
        """Make ``lease`` the owner of a recorded run and mark it running, atomically.

        Clears ``finished_at``; returns the record as it was before the claim.
        Raises :class:`RunInProgressError` if another live owner holds it
        (see :meth:`RunLease.alive`) and :class:`RunNotFoundError` if there is
        no such run.
        """

    async def renew_lease(self, workflow_id: str, lease: RunLease) -> bool:
        """Extend the run's lease to ``lease.until``; False if ``lease.owner`` lost it."""

    async def save_node(
        self, workflow_id: str, node: str, result: NodeResult, *, wait: bool = True
    ) -> None:
        """Record a node's final result; with ``wait``, return once it is durable.

        Raises :class:`ResultNotSerializable` (naming the node) when the
        result is not JSON, before anything is written.
        """

    async def add_event(self, workflow_id: str, event: dict[str, Any]) -> None:
        """Keep one event of the run (JSON-ready dict); need not wait for durability."""

    async def finish_run(
        self,
        workflow_id: str,
        status: RunStatus,
        finished_at: datetime,
        *,
        owner: str | None = None,
    ) -> None:
        """Record the run's end and release its lease, durably, after everything before it.

        With ``owner``, only if that owner still holds the run.
        """

    async def get_run(self, workflow_id: str) -> RunRecord | None: ...

    async def node_results(self, workflow_id: str) -> dict[str, NodeResult]: ...

    async def events(self, workflow_id: str) -> list[dict[str, Any]]: ...

    async def list_runs(self, limit: int = 20) -> list[RunRecord]: ...

    async def aclose(self) -> None: ...


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# A write waiting for the next group commit: (sql, params, future or None, loop).
_Write = tuple[str, tuple[Any, ...], "asyncio.Future[None] | None", asyncio.AbstractEventLoop]


class SQLiteCheckpointer(ThreadConfined):
    """Runs, node results and events in one SQLite file (WAL, ``synchronous=NORMAL``).

    ``synchronous=NORMAL`` in WAL mode makes every commit survive a crash of
    the process, which is what resuming after a crash needs; ``"FULL"`` adds
    an fsync per commit so that commits also survive power loss.
    ``max_events_per_run`` bounds the stored events of each run (the latest
    are kept). ``lease`` is how long a run's owner holds it without renewing
    (see :class:`RunLease`): after a crash on another machine, a resume waits
    that long at most; on this machine a dead owner is seen at once.

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
    ) -> None:
        synchronous = check_synchronous(synchronous)
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
        super().__init__(
            Path(path).expanduser().absolute() if path is not None else default_database_path()
        )
        self.lease = float(lease)
        self.synchronous = synchronous
        self.max_events_per_run = max_events_per_run
        self._timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._writing = False
        self._event_seq: dict[str, int] = {}
        self._node_seq = 0

    _thread_name = "heddle-checkpoint"

    def _closed_error(self) -> Exception:
        return CheckpointError(f"{self!r} is closed", path=self.path)

    # -- on the checkpointer's thread ---------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = connect_wal(
                    self.path,
                    synchronous=self.synchronous,
                    timeout=self._timeout,
                    prepare=_prepare,
                )
            except (sqlite3.Error, RuntimeError) as exc:
                raise CheckpointError(
                    f"cannot open checkpoint database {self.path}: {exc}", path=self.path
                ) from exc
        return self._conn

    def _write_sync(self, batch: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in batch:
                    conn.execute(sql, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            raise CheckpointError(
                f"checkpoint database {self.path}: {exc}", path=self.path
            ) from exc
        except sqlite3.Error as exc:
            raise CheckpointError(
                f"checkpoint database {self.path}: {exc}", path=self.path
            ) from exc

    def _read_sync(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise CheckpointError(
                f"checkpoint database {self.path}: {exc}", path=self.path
            ) from exc

    # -- group commit ---------------------------------------------------------------
    #
    # Writes queue in self._pending. When none is in flight, the first writer
    # hands the queue to the thread, which commits it as one transaction and
    # then takes whatever queued meanwhile, until the queue is empty. Waiters
    # are woken on their own loop; the bookkeeping never needs a loop, so a
    # loop that closes mid-write cannot leave the checkpointer stuck.

    def _enqueue(
        self, sql: str, params: tuple[Any, ...], wait: bool
    ) -> asyncio.Future[None] | None:
        if self._closed:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] | None = loop.create_future() if wait else None
        with self._lock:
            self._pending.append((sql, params, future, loop))
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
            error: BaseException | None = None
            try:
                self._write_sync([(sql, params) for sql, params, _, _ in batch])
            except Exception as exc:
                error = exc
            for loop in {loop for _, _, _, loop in batch}:
                waiting = [future for _, _, future, lp in batch if lp is loop and future]
                if waiting:
                    with contextlib.suppress(RuntimeError):  # that loop has closed
                        loop.call_soon_threadsafe(_settle, waiting, error)

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        future = self._enqueue(sql, params, True)
        assert future is not None
        await future

    # -- the Checkpointer protocol ----------------------------------------------------

    async def create_run(self, record: RunRecord) -> None:
        try:
            input_json = json.dumps(record.input)
        except (TypeError, ValueError) as exc:
            raise ResultNotSerializable(
                f"the input of workflow {record.workflow_id!r} is not JSON-serialisable ({exc}); "
                "durable runs store their input to resume it",
                node=None,
            ) from exc
        existing = await self.get_run(record.workflow_id)
        if existing is not None:
            raise CheckpointError(
                f"workflow {record.workflow_id!r} already exists in {self.path} "
                f"(status {existing.status}); resume it or choose another workflow_id",
                path=self.path,
            )
        lease = record.lease
        await self._write(
            "INSERT INTO heddle_runs (workflow_id, graph_name, fingerprint, input, nodes, status, "
            "started_at, finished_at, owner, owner_site, lease_until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (
                record.workflow_id,
                record.graph_name,
                record.fingerprint,
                input_json,
                json.dumps(list(record.nodes)),
                record.status,
                _iso(record.started_at),
                lease.owner if lease else None,
                lease.site if lease else None,
                _iso(lease.until) if lease else None,
            ),
        )

    def _claim_sync(self, workflow_id: str, lease: RunLease) -> RunRecord:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")  # the read and the write see one state
            try:
                rows = conn.execute(f"{_SELECT_RUN} WHERE workflow_id = ?", (workflow_id,))
                row = rows.fetchone()
                if row is None:
                    raise RunNotFoundError(workflow_id, str(self.path))
                record = _record(row)
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
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CheckpointError(
                f"checkpoint database {self.path}: {exc}", path=self.path
            ) from exc
        return record

    async def claim_run(self, workflow_id: str, lease: RunLease) -> RunRecord:
        return await self._call(self._claim_sync, workflow_id, lease)

    def _renew_sync(self, workflow_id: str, lease: RunLease) -> bool:
        try:
            cursor = self._connection().execute(
                "UPDATE heddle_runs SET lease_until = ? "
                "WHERE workflow_id = ? AND owner = ? AND status = 'running'",
                (_iso(lease.until), workflow_id, lease.owner),
            )
        except sqlite3.Error as exc:
            raise CheckpointError(
                f"checkpoint database {self.path}: {exc}", path=self.path
            ) from exc
        return cursor.rowcount == 1

    async def renew_lease(self, workflow_id: str, lease: RunLease) -> bool:
        return await self._call(self._renew_sync, workflow_id, lease)

    async def save_node(
        self, workflow_id: str, node: str, result: NodeResult, *, wait: bool = True
    ) -> None:
        stored = {k: v for k, v in result.items() if k != "resumed"}
        try:
            text = json.dumps(stored)
        except (TypeError, ValueError) as exc:
            raise ResultNotSerializable(
                f"the result of node {node!r} is not JSON-serialisable ({exc}); durable runs "
                "store results as JSON: return str, numbers, bools, None, lists or dicts",
                node=node,
            ) from exc
        self._node_seq += 1
        future = self._enqueue(
            "INSERT OR REPLACE INTO heddle_node_results (workflow_id, node, status, result, seq) "
            "VALUES (?, ?, ?, ?, ?)",
            (workflow_id, node, result["status"], text, self._node_seq),
            wait,
        )
        if future is not None:
            await future

    async def add_event(self, workflow_id: str, event: dict[str, Any]) -> None:
        if self.max_events_per_run == 0:
            return
        seq = self._event_seq.get(workflow_id)
        if seq is None:
            rows = await self._call(
                self._read_sync,
                "SELECT COALESCE(MAX(seq), 0) FROM heddle_events WHERE workflow_id = ?",
                (workflow_id,),
            )
            seq = int(rows[0][0])
        seq += 1
        self._event_seq[workflow_id] = seq
        self._enqueue(
            "INSERT INTO heddle_events (workflow_id, seq, event) VALUES (?, ?, ?)",
            (workflow_id, seq, json.dumps(event)),
            False,
        )
        if seq > self.max_events_per_run:
            self._enqueue(
                "DELETE FROM heddle_events WHERE workflow_id = ? AND seq = ?",
                (workflow_id, seq - self.max_events_per_run),
                False,
            )

    async def finish_run(
        self,
        workflow_id: str,
        status: RunStatus,
        finished_at: datetime,
        *,
        owner: str | None = None,
    ) -> None:
        self._event_seq.pop(workflow_id, None)
        await self._write(
            "UPDATE heddle_runs SET status = ?, finished_at = ?, owner = NULL, owner_site = NULL, "
            "lease_until = NULL WHERE workflow_id = ? AND (? IS NULL OR owner = ?)",
            (status, _iso(finished_at), workflow_id, owner, owner),
        )

    async def get_run(self, workflow_id: str) -> RunRecord | None:
        rows = await self._call(
            self._read_sync, f"{_SELECT_RUN} WHERE workflow_id = ?", (workflow_id,)
        )
        return _record(rows[0]) if rows else None

    async def list_runs(self, limit: int = 20) -> list[RunRecord]:
        rows = await self._call(
            self._read_sync, f"{_SELECT_RUN} ORDER BY started_at DESC LIMIT ?", (int(limit),)
        )
        return [_record(row) for row in rows]

    async def node_results(self, workflow_id: str) -> dict[str, NodeResult]:
        rows = await self._call(
            self._read_sync,
            "SELECT node, result FROM heddle_node_results WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        return {node: json.loads(text) for node, text in rows}

    async def events(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = await self._call(
            self._read_sync,
            "SELECT event FROM heddle_events WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        return [json.loads(text) for (text,) in rows]

    def _close_sync(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def _settle(futures: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its waiter was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _prepare(conn: sqlite3.Connection) -> None:
    """Create the schema; add the lease columns to a database made before they existed."""
    conn.executescript(_SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(heddle_runs)")}
    for column in ("owner", "owner_site", "lease_until"):
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE heddle_runs ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise


_SELECT_RUN = (
    "SELECT workflow_id, graph_name, fingerprint, input, nodes, status, started_at, finished_at, "
    "owner, owner_site, lease_until, (SELECT COUNT(*) FROM heddle_node_results AS r "
    "WHERE r.workflow_id = heddle_runs.workflow_id AND r.status = 'success') "
    "FROM heddle_runs"
)


def _record(row: tuple[Any, ...]) -> RunRecord:
    (wid, graph, fingerprint, input_json, nodes, status, started, finished) = row[:8]
    owner, site, lease_until, done = row[8:]
    started_at = _from_iso(started)
    assert started_at is not None
    until = _from_iso(lease_until)
    return RunRecord(
        workflow_id=wid,
        graph_name=graph,
        fingerprint=fingerprint,
        input=json.loads(input_json),
        nodes=tuple(json.loads(nodes)),
        status=status,
        started_at=started_at,
        finished_at=_from_iso(finished),
        lease=RunLease(owner, site or "", until) if owner and until else None,
        nodes_done=int(done),
    )
