"""The checkpoint tables of older schema versions, as heddle made them (for migration tests)."""

V1_NODE_RESULTS = """CREATE TABLE heddle_node_results (
    workflow_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    status      TEXT NOT NULL,
    result      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, node)
) WITHOUT ROWID"""
"""The results table of schema versions 0 and 1: one row per node."""

UNVERSIONED_SCHEMA = f"""
CREATE TABLE heddle_runs (
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
CREATE INDEX heddle_runs_started ON heddle_runs (started_at);
{V1_NODE_RESULTS};
CREATE TABLE heddle_events (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;
"""
"""The tables as heddle made them before schemas had a version."""

V1_SCHEMA = UNVERSIONED_SCHEMA + "PRAGMA user_version = 1;\n"
"""The checkpoint tables of schema version 1, as heddle made them."""
