"""SQLiteStore: the default memory store, one SQLite file (WAL mode) for all agents.

Why SQLite: a save is one indexed upsert, so its cost does not grow with the
number of keys an agent holds (a JSON file per agent must be rewritten whole
on every save); several processes can read and write the same file at once;
and a crash at any moment leaves a readable database.

Durability: ``synchronous=NORMAL`` by default. In WAL mode a commit is written
to the WAL file before ``put()`` returns, so a save that returned survives
the process being killed (SIGKILL, OOM killer, segfault) and the database is
never corrupted, even by a power cut. What NORMAL gives up: after an OS crash
or power loss, the last commits not yet checkpointed may be rolled back
(SQLite fsyncs the WAL only at checkpoints). ``synchronous="FULL"`` fsyncs
the WAL on every commit and also keeps those, at the price of one disk flush
per save.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from heddle.core._checks import check_seconds
from heddle.core._sqlite import Synchronous, check_synchronous, connect_wal
from heddle.memory._threaded import ThreadedStore
from heddle.memory.errors import CorruptStoreError, MemoryStoreError
from heddle.memory.store import Lookup, StoredEntry, default_store_path, utc_from_micros

__all__ = ["SQLiteStore", "Synchronous"]

_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26

_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'heddle_memory'"
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS heddle_memory (
    agent_id   TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,     -- JSON text
    metadata   TEXT,              -- JSON text of an object, or NULL
    created_at INTEGER NOT NULL,  -- microseconds since the Unix epoch (UTC)
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, key)
)
"""
# One statement per save: an upsert through the primary key index, O(log n)
# page reads and a handful of page writes, whatever the agent's key count. It
# also returns the connection's data_version, read inside the write
# transaction: nobody else can commit until ours does, so it labels exactly
# the state our commit creates.
UPSERT_SQL: Final = """
INSERT INTO heddle_memory (agent_id, key, value, metadata, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?5)
ON CONFLICT (agent_id, key) DO UPDATE
    SET value = excluded.value, metadata = excluded.metadata, updated_at = excluded.updated_at
RETURNING created_at, (SELECT data_version FROM pragma_data_version)
"""
# The version and the row in one statement, hence from one snapshot.
SELECT_SQL: Final = """
SELECT data_version, value, metadata, created_at, updated_at
FROM pragma_data_version LEFT JOIN heddle_memory ON agent_id = ?1 AND key = ?2
"""
DELETE_SQL: Final = "DELETE FROM heddle_memory WHERE agent_id = ?1 AND key = ?2"
KEYS_SQL: Final = "SELECT key FROM heddle_memory WHERE agent_id = ?1 ORDER BY key"
KEYS_FROM_SQL: Final = (
    "SELECT key FROM heddle_memory WHERE agent_id = ?1 AND key >= ?2 ORDER BY key"
)
KEYS_RANGE_SQL: Final = (
    "SELECT key FROM heddle_memory WHERE agent_id = ?1 AND key >= ?2 AND key < ?3 ORDER BY key"
)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so
    ``prefix <= key < bound`` selects exactly the keys starting with the prefix,
    through the index.

    >>> prefix_upper_bound("run-1/")
    'run-10'
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip over them
                code = 0xE000
            return "".join(chars) + chr(code)
    return None


class SQLiteStore(ThreadedStore):
    """Agent memory in one SQLite file, in WAL mode, shared by all agents and processes.

    ``path`` defaults to :func:`~heddle.memory.default_store_path`
    (``$HEDDLE_HOME/memory.db`` or ``./.heddle/memory.db``); its directory is
    created on first use. ``synchronous`` is ``"NORMAL"`` (a returned save
    survives a process crash) or ``"FULL"`` (it also survives power loss; one
    fsync per save). ``timeout`` is how long, in seconds, a write waits for
    another process's write to finish before failing with
    :class:`~heddle.memory.MemoryStoreError`.

    The connection lives on one dedicated thread; no call blocks the event loop.
    """

    _thread_name = "heddle-sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: Synchronous = "NORMAL",
        timeout: float = 30.0,
    ) -> None:
        synchronous = check_synchronous(synchronous)
        check_seconds(timeout, "timeout")
        super().__init__(Path(path).absolute() if path is not None else default_store_path())
        self._synchronous: Synchronous = synchronous
        self._timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        # Commits by *this* connection do not change PRAGMA data_version, so
        # versions pair it with a count of our own writes.
        self._writes = 0

    @property
    def synchronous(self) -> Synchronous:
        """The ``PRAGMA synchronous`` setting of this store's connection."""
        return self._synchronous

    # -- on the store's thread -------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise CorruptStoreError(
                    f"{self._path} is not a readable SQLite memory store ({exc}); "
                    "heddle leaves it untouched: move it aside or restore it",
                    path=self._path,
                ) from exc
            raise MemoryStoreError(f"SQLite store {self._path}: {exc}", path=self._path) from exc
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"SQLite store {self._path}: {exc}", path=self._path) from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            return connect_wal(
                self._path,
                synchronous=self._synchronous,
                timeout=self._timeout,
                prepare=self._prepare,
            )
        except RuntimeError as exc:  # no WAL
            raise MemoryStoreError(f"SQLite store {self._path}: {exc}", path=self._path) from exc

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        if not conn.execute(_TABLE_EXISTS).fetchall():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_CREATE_TABLE)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _open_sync(self) -> None:
        with self._errors():
            self._connection()

    def _close_sync(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _get_sync(self, agent_id: str, key: str, known: Hashable) -> Lookup:
        with self._errors():
            # fetchall() steps the statement to its end: no read transaction
            # (and no stale snapshot) outlives the call.
            rows = self._connection().execute(SELECT_SQL, (agent_id, key)).fetchall()
        data_version, value, metadata, created, updated = rows[0]
        version = (data_version, self._writes)
        if version == known:
            return Lookup(None, version, unchanged=True)
        if value is None:
            return Lookup(None, version)
        entry = StoredEntry(value, metadata, utc_from_micros(created), utc_from_micros(updated))
        return Lookup(entry, version)

    def _put_sync(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        now = time.time_ns() // 1000
        with self._errors():
            conn = self._connection()
            self._writes += 1  # before the write: a failed write may only cost a cache miss
            rows = conn.execute(UPSERT_SQL, (agent_id, key, value, metadata, now)).fetchall()
        created, data_version = rows[0]
        entry = StoredEntry(value, metadata, utc_from_micros(created), utc_from_micros(now))
        return Lookup(entry, (data_version, self._writes))

    def _delete_sync(self, agent_id: str, key: str) -> bool:
        with self._errors():
            conn = self._connection()
            self._writes += 1
            return conn.execute(DELETE_SQL, (agent_id, key)).rowcount > 0

    def _keys_sync(self, agent_id: str, prefix: str | None) -> list[str]:
        with self._errors():
            conn = self._connection()
            params: tuple[Any, ...]
            if not prefix:
                sql, params = KEYS_SQL, (agent_id,)
            elif (upper := prefix_upper_bound(prefix)) is None:
                sql, params = KEYS_FROM_SQL, (agent_id, prefix)
            else:
                sql, params = KEYS_RANGE_SQL, (agent_id, prefix, upper)
            return [row[0] for row in conn.execute(sql, params).fetchall()]
