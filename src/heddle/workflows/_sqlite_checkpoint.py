"""The embedded checkpointer: durable runs in one SQLite file.

What it promises is :mod:`heddle.workflows.checkpoint`'s contract; users import
:class:`SQLiteCheckpointer` from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heddle.core._checks import check_int, check_seconds
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
    LeaseLostError,
    RunInProgressError,
    RunNotFoundError,
)
from heddle.workflows._checkpoint_rows import (
    END_STATUSES,
    SELECT_RUN,
    SELECT_SUMMARY,
    STORED_STATUSES,
    encode,
    encode_result,
    read_event,
    read_node_result,
    read_record,
    recorded,
    run_status,
)
from heddle.workflows._checkpoint_schema import (
    MIGRATIONS,
    NO_ITEM,
    SCHEMA_VERSION,
    ForeignSchema,
    check_unversioned,
    heddle_tables,
)
from heddle.workflows.activation import Activation
from heddle.workflows.checkpoint import (
    DEFAULT_LEASE,
    DEFAULT_MAX_VALUE_BYTES,
    RunLease,
    RunRecord,
    RunStatus,
    default_database_path,
)
from heddle.workflows.context import NodeResult

__all__ = ["SQLiteCheckpointer"]

logger = logging.getLogger("heddle.checkpoint")

_LOCK_WAIT = 1.0  # seconds a checkpointer waits for another process's lock before saying so

# The results of a run as (node, iteration, item, status, result) rows, oldest first: every
# activation's, or each node's latest (highest iteration, no item). Schema version 1 had one
# row per node, and no iteration or item: a read-only open reads such a file as it is.
_ACTIVATION_ROWS = (
    "SELECT node, iteration, item, status, result FROM heddle_node_results "
    "WHERE workflow_id = ?1 ORDER BY seq"
)
_LATEST_ROWS = (
    "SELECT node, iteration, item, status, result FROM heddle_node_results AS r "
    f"WHERE workflow_id = ?1 AND item = {NO_ITEM} AND iteration = (SELECT MAX(iteration) "
    "FROM heddle_node_results WHERE workflow_id = ?1 AND node = r.node "
    f"AND item = {NO_ITEM}) ORDER BY seq"
)
_ACTIVATIONS_SINCE = 2  # the schema version that keys results by activation
_V1_ROWS = (
    f"SELECT node, 0, {NO_ITEM}, status, result FROM heddle_node_results "
    "WHERE workflow_id = ?1 ORDER BY seq"
)


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
    raising :class:`ResultNotRestorable`. A file of an older schema reads as
    if it were upgraded: its nodes' results as their iteration 0, their
    status ``"success"`` as ``"succeeded"``.

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
        check_int(max_value_bytes, "max_value_bytes", minimum=1)
        check_int(max_events_per_run, "max_events_per_run", minimum=0)
        check_seconds(lease, "lease", exclusive=True)
        check_seconds(timeout, "timeout")
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
        # Per run this checkpointer owns: the number of its last result and of its last
        # event (on the checkpointer's thread; see _next_seq).
        self._result_seq: dict[str, int] = {}
        self._event_seq: dict[str, int] = {}
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
            migrate(conn, MIGRATIONS)
        except SchemaTooNew as exc:
            raise self._too_new(exc) from None
        except ForeignSchema as exc:
            raise self._foreign(exc) from None

    def _refuse_newer(self, conn: sqlite3.Connection) -> int:
        found = user_version(conn)
        if found > SCHEMA_VERSION:
            raise self._too_new(SchemaTooNew(found, SCHEMA_VERSION))
        return found

    def _check_readable(self, conn: sqlite3.Connection) -> None:
        """Refuse what a read-only open cannot read; note whether heddle's tables exist."""
        found = self._refuse_newer(conn)
        self._has_tables = found > 0 or bool(heddle_tables(conn))
        if found == 0 and self._has_tables:
            try:
                complete = check_unversioned(conn)
            except ForeignSchema as exc:
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

    def _foreign(self, exc: ForeignSchema) -> CheckpointError:
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

    def _next_seq(
        self, conn: sqlite3.Connection, workflow_id: str, counts: dict[str, int], table: str
    ) -> int:
        """The number of the run's next result (or event), in the order they are recorded.

        Read from the database at this checkpointer's first fenced write of the
        run (in the write's transaction), then counted here: writes are fenced,
        so no other process records any while this one owns the run, and
        :meth:`create_run`, :meth:`claim_run` and :meth:`finish_run` forget
        the counts. Counting saves a read on the hot path of every write.
        """
        last = counts.get(workflow_id)
        if last is None:
            (last,) = conn.execute(
                f"SELECT COALESCE(MAX(seq), 0) FROM {table} WHERE workflow_id = ?",
                (workflow_id,),
            ).fetchone()
        counts[workflow_id] = seq = int(last) + 1
        return seq

    def _forget_counts(self, workflow_id: str) -> None:
        self._result_seq.pop(workflow_id, None)
        self._event_seq.pop(workflow_id, None)

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
        input_text = encode(record.input, node=None, max_bytes=self.max_value_bytes)
        row = (
            wid,
            record.graph_name,
            record.fingerprint,
            input_text,
            json.dumps(list(record.nodes)),
            run_status(record.status, parameter="record.status", allowed=STORED_STATUSES).value,
            _iso(record.started_at),
            lease.owner if lease else None,
            lease.site if lease else None,
            _iso(lease.until) if lease else None,
        )
        path = self.path

        def insert(conn: sqlite3.Connection) -> None:
            self._forget_counts(wid)
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
        self._forget_counts(workflow_id)
        try:
            self._patiently(conn, "BEGIN IMMEDIATE")  # the read and the write see one state
            try:
                rows = conn.execute(f"{SELECT_SUMMARY} WHERE workflow_id = ?", (workflow_id,))
                row = rows.fetchone()
                if row is None:
                    raise RunNotFoundError(workflow_id, str(self.path))
                record = read_record(row, self.path)
                held = record.lease
                if (
                    record.status is RunStatus.RUNNING
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
        iteration: int = 0,
        item: int | None = None,
        wait: bool = True,
        owner: str | None = None,
    ) -> None:
        check_int(iteration, "iteration", minimum=0)
        stored_item = NO_ITEM if item is None else check_int(item, "item", minimum=0)
        status, text = encode_result(result, node=node, max_bytes=self.max_value_bytes)
        row = (workflow_id, owner, node, iteration, stored_item, status, text)

        def insert(conn: sqlite3.Connection) -> None:
            seq = self._next_seq(conn, workflow_id, self._result_seq, "heddle_node_results")
            cursor = conn.execute(_SAVE_RESULT, (*row, seq))
            if cursor.rowcount == 0:
                raise _lost(conn, workflow_id)

        what = recorded(node, workflow_id, Activation(node, iteration, item))
        future = self._enqueue(insert, wait, what)
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
            # Unfenced writes (no owner) read the last number each time.
            counts = self._event_seq if owner is not None else {}
            seq = self._next_seq(conn, workflow_id, counts, "heddle_events")
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
        ended = run_status(status, parameter="status", allowed=END_STATUSES).value
        at = _iso(finished_at)

        def update(conn: sqlite3.Connection) -> None:
            self._forget_counts(workflow_id)
            cursor = conn.execute(_FINISH_RUN, (workflow_id, owner, ended, at))
            if cursor.rowcount == 0 and owner is not None:
                raise _lost(conn, workflow_id)

        await self._write(update, f"the end of run {workflow_id!r}")

    async def get_run(
        self, workflow_id: str, *, input_types: Iterable[type] = ()
    ) -> RunRecord | None:
        rows = await self._call(
            self._read_sync, f"{SELECT_RUN} WHERE workflow_id = ?", (workflow_id,)
        )
        if not rows:
            return None
        return read_record(rows[0], self.path, input_types=input_types, lenient=self.readonly)

    def _list_sync(
        self, limit: int, status: RunStatus | None, graph: str | None
    ) -> list[RunRecord]:
        where: list[str] = []
        params: list[Any] = []
        live = (RunStatus.RUNNING, RunStatus.INTERRUPTED)
        if status is not None:
            where.append("status = ?")
            params.append(RunStatus.RUNNING.value if status in live else status.value)
        if graph is not None:
            where.append("graph_name = ?")
            params.append(graph)
        sql = f"{SELECT_SUMMARY} {'WHERE ' + ' AND '.join(where) if where else ''} "
        if status not in live:  # the state is the stored status
            rows = self._read_sync(f"{sql}ORDER BY started_at DESC LIMIT ?", (*params, limit))
            return [read_record(row, self.path) for row in rows]
        # Whether a running run's owner is alive is only known here: read until enough are.
        found: list[RunRecord] = []
        offset, page = 0, max(limit, 50)
        while len(found) < limit:
            rows = self._read_sync(
                f"{sql}ORDER BY started_at DESC LIMIT ? OFFSET ?", (*params, page, offset)
            )
            found += [r for r in (read_record(row, self.path) for row in rows) if r.state == status]
            if len(rows) < page:
                break
            offset += page
        return found[:limit]

    async def list_runs(
        self,
        limit: int = 20,
        *,
        status: RunStatus | str | None = None,
        graph: str | None = None,
    ) -> list[RunRecord]:
        check_int(limit, "limit", minimum=0)
        wanted = None if status is None else run_status(status, parameter="status")
        return await self._call(self._list_sync, limit, wanted, graph)

    def _results_sync(self, workflow_id: str, latest: bool) -> list[tuple[Any, ...]]:
        sql = _LATEST_ROWS if latest else _ACTIVATION_ROWS
        if self.readonly:
            # Read the version each time: a writer may upgrade the file meanwhile. The
            # version-1 query also reads a file upgraded between the two statements.
            try:
                old = user_version(self._connection()) < _ACTIVATIONS_SINCE
            except sqlite3.Error as exc:
                raise self._database_error(exc) from exc
            sql = _V1_ROWS if old else sql
        return self._read_sync(sql, (workflow_id,))

    def _read_results(
        self,
        workflow_id: str,
        rows: list[tuple[Any, ...]],
        types: Mapping[str, Iterable[type]] | None,
    ) -> dict[Activation, NodeResult]:
        types = types or {}
        results: dict[Activation, NodeResult] = {}
        for node, iteration, item, status, text in rows:
            activation = Activation(node, iteration, None if item == NO_ITEM else item)
            results[activation] = read_node_result(
                workflow_id, activation, status, text, types.get(node, ()), lenient=self.readonly
            )
        return results

    async def node_results(
        self, workflow_id: str, *, types: Mapping[str, Iterable[type]] | None = None
    ) -> dict[str, NodeResult]:
        rows = await self._call(self._results_sync, workflow_id, True)
        return {a.node: r for a, r in self._read_results(workflow_id, rows, types).items()}

    async def activation_results(
        self, workflow_id: str, *, types: Mapping[str, Iterable[type]] | None = None
    ) -> dict[Activation, NodeResult]:
        rows = await self._call(self._results_sync, workflow_id, False)
        return self._read_results(workflow_id, rows, types)

    async def events(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = await self._call(
            self._read_sync,
            "SELECT seq, event FROM heddle_events WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        return [read_event(workflow_id, seq, text, self.path) for seq, text in rows]

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
    "INSERT OR REPLACE INTO heddle_node_results "
    "(workflow_id, node, iteration, item, status, result, seq) "
    f"SELECT ?1, ?3, ?4, ?5, ?6, ?7, ?8 WHERE {_OWNED}"
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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
