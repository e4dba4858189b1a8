"""Opening heddle's SQLite files: WAL mode, a synchronous level, a schema, retried while busy."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

from heddle.core.errors import ConfigurationError

__all__ = ["SQLITE_BUSY", "Synchronous", "check_synchronous", "connect_wal"]

Synchronous = Literal["NORMAL", "FULL"]

SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


def check_synchronous(value: object) -> Synchronous:
    """``value`` if it is a synchronous level heddle supports, else a ConfigurationError."""
    if value == "NORMAL":
        return "NORMAL"
    if value == "FULL":
        return "FULL"
    raise ConfigurationError(
        f'synchronous must be "NORMAL" or "FULL", got {value!r}', parameter="synchronous"
    )


def connect_wal(
    path: Path,
    *,
    synchronous: Synchronous,
    timeout: float,
    prepare: Callable[[sqlite3.Connection], object],
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode (autocommit), with ``prepare`` run on it.

    ``prepare`` creates the schema; it may find the database busy or locked
    while another process creates the same file (switching a new file to WAL
    reports "busy" without waiting), so the whole opening is retried until
    ``timeout``. Raises ``RuntimeError`` if WAL cannot be enabled (a network
    file system) and ``sqlite3.Error`` for anything else.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise RuntimeError(
                    f"could not enable WAL mode (got {mode!r}); is the file on a network "
                    "file system?"
                )
            conn.execute(f"PRAGMA synchronous={synchronous}")
            prepare(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (SQLITE_BUSY, _SQLITE_LOCKED) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise
        except BaseException:
            conn.close()
            raise
        return conn
