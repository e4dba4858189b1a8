"""The SQLite checkpoint schema: its tables, its version, the migrations to it."""

from __future__ import annotations

import functools
import re
import sqlite3
from typing import Any

__all__ = [
    "MIGRATIONS",
    "NO_ITEM",
    "SCHEMA_VERSION",
    "ForeignSchema",
    "check_unversioned",
    "heddle_tables",
]

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


class ForeignSchema(Exception):
    """Tables named like heddle's, in a shape heddle never made."""


def heddle_tables(conn: sqlite3.Connection) -> set[str]:
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


def check_unversioned(conn: sqlite3.Connection) -> bool:
    """Check that heddle tables without a schema version are heddle's; True if complete.

    Incomplete: a table is missing, or the runs table lacks the lease columns
    (it predates them). Raises :class:`ForeignSchema` for other columns,
    other constraints or triggers: writing into those could fail only after
    agents ran.
    """
    present = heddle_tables(conn)
    complete = present == set(_TABLES)
    for table in sorted(present):
        have, want = _columns(conn, table), _v1_columns()[table]
        short = len(want) - len(have)
        if have != want[: len(have)] or not (
            short == 0 or (table == "heddle_runs" and 0 < short <= len(_LEASE_COLUMNS))
        ):
            raise ForeignSchema(f"table {table} has columns {[c[0] for c in have]}")
        complete = complete and short == 0
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if _STRICTER.search(sql or ""):
            raise ForeignSchema(f"table {table} has constraints of its own")
    triggers = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN (?, ?, ?)", _TABLES
    ).fetchall()
    if triggers:
        raise ForeignSchema(f"triggers {', '.join(name for (name,) in triggers)}")
    return complete


def _to_v1(conn: sqlite3.Connection) -> None:
    """Version 0 (no version: a new file, or one from before versions) to 1."""
    check_unversioned(conn)
    for statement in _TABLES_V1:
        conn.execute(statement)
    have = {column[0] for column in _columns(conn, "heddle_runs")}
    for column in _LEASE_COLUMNS:
        if column not in have:
            conn.execute(f"ALTER TABLE heddle_runs ADD COLUMN {column} TEXT")


# Version 2: one result row per activation (node, iteration, item) instead of one per node,
# and the node status word "succeeded" where version 1 wrote "success". SQLite cannot
# change a primary key in place, so the table is rebuilt (its documented procedure: create
# the new one, copy, drop the old one, rename). An item of None is stored as -1: NULL in
# a primary key would make every such row distinct.
_NODE_RESULTS_V2 = """CREATE TABLE heddle_node_results_v2 (
    workflow_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    iteration   INTEGER NOT NULL,
    item        INTEGER NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, node, iteration, item)
) WITHOUT ROWID"""

NO_ITEM = -1
"""How an activation's item of None is stored."""

# The stored result is the codec's JSON of a dict with str keys, which the codec writes as
# a plain JSON object: its "status" is a plain string at $.status, whatever the content
# holds (tagged values only appear inside it). json_set keeps everything else as it was
# (only the spacing changes). A row whose text is not JSON is copied as it is: reading it
# reports it, naming its run and node, as before.
_COPY_RESULTS_V2 = f"""INSERT INTO heddle_node_results_v2
    (workflow_id, node, iteration, item, status, result, seq)
SELECT workflow_id, node, 0, {NO_ITEM},
    CASE status WHEN 'success' THEN 'succeeded' ELSE status END,
    CASE WHEN json_valid(result) THEN
        CASE WHEN json_extract(result, '$.status') = 'success'
        THEN json_set(result, '$.status', 'succeeded') ELSE result END
    ELSE result END,
    seq
FROM heddle_node_results"""


def _to_v2(conn: sqlite3.Connection) -> None:
    """Version 1 to 2: result rows keyed by activation; "success" becomes "succeeded"."""
    conn.execute(_NODE_RESULTS_V2)
    conn.execute(_COPY_RESULTS_V2)
    conn.execute("DROP TABLE heddle_node_results")
    conn.execute("ALTER TABLE heddle_node_results_v2 RENAME TO heddle_node_results")


MIGRATIONS = (_to_v1, _to_v2)

SCHEMA_VERSION = len(MIGRATIONS)
"""The checkpoint schema this heddle writes (``PRAGMA user_version``); newer files are refused."""
