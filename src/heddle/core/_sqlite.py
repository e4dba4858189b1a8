"""Opening heddle's SQLite files: WAL mode, a synchronous level, a schema, retried while busy.

Also what the files' owners share beyond opening: waiting for a lock that
another process holds (and saying so when it takes long), reading a file
without ever writing it, and bringing a schema up to date with versioned
migrations (``PRAGMA user_version``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal, TypeVar

from heddle.core.errors import ConfigurationError

__all__ = [
    "SQLITE_BUSY",
    "SchemaTooNew",
    "Synchronous",
    "check_synchronous",
    "connect_readonly",
    "connect_wal",
    "is_busy",
    "is_corrupt",
    "migrate",
    "retry_while_busy",
    "user_version",
]

T = TypeVar("T")

Synchronous = Literal["NORMAL", "FULL"]

SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


def check_synchronous(value: object) -> Synchronous:
    """``value`` if it is a synchronous level heddle supports, else a ConfigurationError."""
    if value == "NORMAL":
        return "NORMAL"
    if value == "FULL":
        return "FULL"
    raise ConfigurationError(
        f'synchronous must be "NORMAL" or "FULL", got {value!r}', parameter="synchronous"
    )


def _code(exc: BaseException) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def is_busy(exc: BaseException) -> bool:
    """``exc`` says another connection holds a lock this one needs (busy or locked)."""
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in (SQLITE_BUSY, _SQLITE_LOCKED)


def is_corrupt(exc: BaseException) -> bool:
    """``exc`` says the file is not an SQLite database, or a damaged one."""
    return isinstance(exc, sqlite3.DatabaseError) and _code(exc) in (
        _SQLITE_CORRUPT,
        _SQLITE_NOTADB,
    )


def retry_while_busy(
    attempt: Callable[[], T],
    *,
    timeout: float,
    warn_after: float = 1.0,
    on_wait: Callable[[float], object] | None = None,
) -> T:
    """``attempt()``, called again while it fails because the file is busy, up to ``timeout`` s.

    ``attempt`` must leave nothing half done when it fails busy (a ``BEGIN
    IMMEDIATE``, a single statement, an opening). The connection's own busy
    timeout does the waiting inside each attempt; this loop only bounds the
    total. Once the wait has lasted ``warn_after`` seconds, ``on_wait`` is
    called once with the seconds it may still last, so a caller can say what
    it waits on instead of hanging in silence.
    """
    start = time.monotonic()
    warned = False
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            waited = time.monotonic() - start
            if not is_busy(exc) or waited >= timeout:
                raise
            if on_wait is not None and not warned and waited >= warn_after:
                warned = True
                on_wait(timeout - waited)
        time.sleep(0.01)  # some busy cases return at once, without the busy handler


def connect_wal(
    path: Path,
    *,
    synchronous: Synchronous,
    timeout: float,
    prepare: Callable[[sqlite3.Connection], object],
    check: Callable[[sqlite3.Connection], object] | None = None,
    lock_wait: float | None = None,
    on_wait: Callable[[float], object] | None = None,
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode (autocommit), with ``prepare`` run on it.

    ``check`` runs first, before anything is written (switching to WAL
    writes): it can refuse a file that must stay as it is, by raising.
    ``prepare`` creates the schema; it may find the database busy or locked
    while another process creates the same file (switching a new file to WAL
    reports "busy" without waiting), so the whole opening is retried until
    ``timeout``. Each SQLite call waits ``lock_wait`` seconds for a lock
    (default: ``timeout``); callers that wait longer do so with
    :func:`retry_while_busy`, which also calls ``on_wait``. Raises
    ``RuntimeError`` if WAL cannot be enabled (a network file system) and
    ``sqlite3.Error`` for anything else.
    """
    path.parent.mkdir(parents=True, exist_ok=True)

    def open_once() -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, timeout=timeout if lock_wait is None else lock_wait, isolation_level=None
        )
        try:
            if check is not None:
                check(conn)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise RuntimeError(
                    f"could not enable WAL mode (got {mode!r}); is the file on a network "
                    "file system?"
                )
            conn.execute(f"PRAGMA synchronous={synchronous}")
            prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    return retry_while_busy(
        open_once, timeout=timeout, warn_after=lock_wait or timeout, on_wait=on_wait
    )


def connect_readonly(
    path: Path,
    *,
    timeout: float,
    prepare: Callable[[sqlite3.Connection], object],
    lock_wait: float | None = None,
    on_wait: Callable[[float], object] | None = None,
) -> sqlite3.Connection:
    """A connection that can only read ``path``: it never creates, converts or writes the file.

    Raises ``FileNotFoundError`` if there is no such file (SQLite would
    otherwise report only "unable to open"). ``prepare`` checks the schema;
    busy is retried as in :func:`connect_wal`.
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    uri = f"{path.as_uri()}?mode=ro"

    def open_once() -> sqlite3.Connection:
        conn = sqlite3.connect(
            uri, uri=True, timeout=timeout if lock_wait is None else lock_wait, isolation_level=None
        )
        try:
            prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    return retry_while_busy(
        open_once, timeout=timeout, warn_after=lock_wait or timeout, on_wait=on_wait
    )


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file (``PRAGMA user_version``; 0 if never set)."""
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


class SchemaTooNew(Exception):
    """The file's schema version is newer than the migrations this code knows."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"schema version {found}, newer than {supported}")
        self.found = found
        self.supported = supported


def migrate(
    conn: sqlite3.Connection, steps: Sequence[Callable[[sqlite3.Connection], object]]
) -> int:
    """Bring the schema to version ``len(steps)``; return the version found.

    ``steps[v]`` takes the schema from version ``v`` to ``v + 1``. They run in
    one ``BEGIN IMMEDIATE`` transaction, after reading the version again
    inside it: of two processes opening an old file at once, one migrates and
    the other finds it done. A newer version raises :class:`SchemaTooNew`
    without taking any lock; so does one that appears while waiting.
    """
    current = len(steps)
    found = user_version(conn)
    if found > current:
        raise SchemaTooNew(found, current)
    if found == current:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(conn)
        if found > current:
            raise SchemaTooNew(found, current)
        for step in steps[found:]:
            step(conn)
        conn.execute(f"PRAGMA user_version = {current}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
