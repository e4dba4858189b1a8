"""Checkpoint rows keyed by activation, the status words, and schema version 2."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from old_schemas import V1_SCHEMA

from heddle.core.errors import CheckpointError, ConfigurationError, LeaseLostError
from heddle.workflows import codec
from heddle.workflows.activation import Activation
from heddle.workflows.checkpoint import (
    SCHEMA_VERSION,
    RunLease,
    RunRecord,
    RunStatus,
    SQLiteCheckpointer,
)
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus

STARTED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)

# What a version-1 heddle recorded for run "old": its results as the codec encoded them
# (the content of "fetch" is tagged: a tuple holding a datetime), "success" for a success.
V1_RESULTS: dict[str, dict[str, Any]] = {
    "fetch": {
        "content": ("été", STARTED, 123456789012345678901234567890),
        "status": "success",
        "error": None,
        "attempts": 2,
        "duration": 0.25,
        "usage": {"input_tokens": 7},
    },
    "left": {"content": {"n": 1.5}, "status": "success", "error": None, "attempts": 1},
    "right": {
        "content": None,
        "status": "failed",
        "error": "RuntimeError: right broke",
        "attempts": 1,
        "duration": 0.5,
        "error_type": "RuntimeError",
        "traceback": "Traceback ...",
    },
}
V1_RESULTS["left"]["duration"] = 0.125


def v1_database(db: Path) -> None:
    """A version-1 file holding run "old": fetch and left succeeded, right failed."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(V1_SCHEMA)
        with conn:
            conn.execute(
                "INSERT INTO heddle_runs VALUES ('old', 'pipeline', 'f', '\"q\"', ?, 'failed', "
                "?, ?, NULL, NULL, NULL)",
                (
                    json.dumps(["fetch", "left", "right"]),
                    STARTED.isoformat(),
                    (STARTED + timedelta(seconds=1)).isoformat(),
                ),
            )
            for seq, (node, result) in enumerate(V1_RESULTS.items(), 1):
                conn.execute(
                    "INSERT INTO heddle_node_results VALUES ('old', ?, ?, ?, ?)",
                    (node, result["status"], codec.encode(result, node=node), seq),
                )


def sql(db: Path, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on ``db`` as another program would, and close the connection."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(statement, params).fetchall()


def result(content: Any, status: NodeStatus | str = NodeStatus.SUCCEEDED) -> NodeResult:
    """A result of ``content``; ``status`` may be a word that is no NodeStatus, to refuse."""
    return NodeResult(content=content, status=status, error=None, attempts=1, duration=0.0)  # type: ignore[typeddict-item]


def contents(results: dict[Any, NodeResult]) -> dict[Any, Any]:
    return {key: r["content"] for key, r in results.items()}


def assert_v1_results_read_back(results: dict[str, NodeResult]) -> None:
    """``results`` are run "old"'s, in the new words, each of iteration 0."""
    assert list(results) == ["fetch", "left", "right"]
    for node, r in results.items():
        expected = dict(V1_RESULTS[node])
        expected["status"] = "succeeded" if expected["status"] == "success" else "failed"
        assert r == {**expected, "iteration": 0}
        assert type(r["status"]) is NodeStatus
    assert results["fetch"]["content"] == ("été", STARTED, 123456789012345678901234567890)


# -- activations ----------------------------------------------------------------------------


async def test_every_iteration_of_a_node_is_read_back_by_activation_in_recorded_order(
    tmp_path: Path,
) -> None:
    """activation_results gives each saved activation, keyed by it, in the order saved."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        await cp.save_node("w", "plan", result("p0"))
        await cp.save_node("w", "draft", result("d0"))
        await cp.save_node("w", "draft", result("d1"), iteration=1)
        await cp.save_node("w", "draft", result("d2"), iteration=2)
        stored = await cp.activation_results("w")
    assert contents(stored) == {
        Activation("plan"): "p0",
        Activation("draft", 0): "d0",
        Activation("draft", 1): "d1",
        Activation("draft", 2): "d2",
    }
    assert [tuple(a) for a in stored] == [
        ("plan", 0, None),
        ("draft", 0, None),
        ("draft", 1, None),
        ("draft", 2, None),
    ]
    assert [r["iteration"] for r in stored.values()] == [0, 0, 1, 2]
    assert all("item" not in r for r in stored.values())


async def test_node_results_give_each_node_its_highest_iteration(tmp_path: Path) -> None:
    """node_results keeps a node's highest iteration, even when a lower one was saved later."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        await cp.save_node("w", "draft", result("d0"))
        await cp.save_node("w", "plan", result("p0"))
        await cp.save_node("w", "draft", result("d1"), iteration=1)
        assert contents(await cp.node_results("w")) == {"plan": "p0", "draft": "d1"}
        assert (await cp.node_results("w"))["draft"]["iteration"] == 1
        await cp.save_node("w", "draft", result("d0 again"))
        latest = await cp.node_results("w")
    assert contents(latest) == {"plan": "p0", "draft": "d1"}
    assert list(latest) == ["plan", "draft"]


async def test_saving_an_activation_again_replaces_its_row(tmp_path: Path) -> None:
    """The same (node, iteration, item) saved twice: one row, the new result, recorded last."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        await cp.save_node("w", "draft", result(None, NodeStatus.FAILED), iteration=1)
        await cp.save_node("w", "plan", result("p0"))
        await cp.save_node("w", "draft", result("d1"), iteration=1)
        stored = await cp.activation_results("w")
    assert list(stored) == [Activation("plan"), Activation("draft", 1)]
    assert stored[Activation("draft", 1)]["status"] is NodeStatus.SUCCEEDED
    assert sql(db, "SELECT COUNT(*) FROM heddle_node_results WHERE node = 'draft'") == [(1,)]


async def test_an_item_is_part_of_the_activation_and_only_set_when_there_is_one(
    tmp_path: Path,
) -> None:
    """Items are distinct activations with "item" set; node_results ignores them."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        await cp.save_node("w", "each", result("a"), item=0)
        await cp.save_node("w", "each", result("b"), item=1)
        stored = await cp.activation_results("w")
        latest = await cp.node_results("w")
    assert contents(stored) == {Activation("each", 0, 0): "a", Activation("each", 0, 1): "b"}
    assert [r["item"] for r in stored.values()] == [0, 1]
    assert latest == {}


async def test_a_bad_iteration_item_or_status_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A negative iteration or item, or a status that is no NodeStatus: ConfigurationError."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        with pytest.raises(ConfigurationError, match="iteration must be an int >= 0"):
            await cp.save_node("w", "n", result(1), iteration=-1)
        with pytest.raises(ConfigurationError, match="item must be an int >= 0"):
            await cp.save_node("w", "n", result(1), item=-1)
        with pytest.raises(ConfigurationError, match="'done', not one of succeeded, failed"):
            await cp.save_node("w", "n", result(1, "done"))
        assert await cp.activation_results("w") == {}


async def test_fencing_applies_to_every_activation_row(tmp_path: Path) -> None:
    """A save of a later iteration by an owner that lost the run: LeaseLostError, no row."""
    mine = RunLease("host/1/mine", "another-site", datetime.now(UTC) - timedelta(seconds=1))
    theirs = RunLease.take(30)
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        await cp.create_run(
            RunRecord("r", "g", "f", None, ("n",), RunStatus.RUNNING, STARTED, lease=mine)
        )
        await cp.save_node("r", "n", result("mine"), owner=mine.owner)
        await cp.claim_run("r", theirs)
        with pytest.raises(LeaseLostError):
            await cp.save_node("r", "n", result("late"), iteration=1, owner=mine.owner)
        await cp.save_node("r", "n", result("theirs"), iteration=1, owner=theirs.owner)
        stored = await cp.activation_results("r")
    assert contents(stored) == {Activation("n", 0): "mine", Activation("n", 1): "theirs"}


# -- the status words -----------------------------------------------------------------------


async def test_a_node_status_is_stored_as_its_plain_word_and_read_back_as_a_member(
    tmp_path: Path,
) -> None:
    """The column and the stored JSON say "succeeded", untagged; reading gives NodeStatus."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        await cp.save_node("w", "n", result({"x": 1}))
        (stored,) = (await cp.node_results("w")).values()
    ((status, text),) = sql(db, "SELECT status, result FROM heddle_node_results")
    assert status == "succeeded"
    assert json.loads(text)["status"] == "succeeded"
    assert "__heddle__" not in text and "iteration" not in text
    assert stored["status"] is NodeStatus.SUCCEEDED


async def test_the_old_word_success_is_stored_as_succeeded(tmp_path: Path) -> None:
    """A caller still saying "success" is recorded in the new word, column and result."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        await cp.save_node("w", "n", result(1, "success"))
        assert (await cp.node_results("w"))["n"]["status"] is NodeStatus.SUCCEEDED
    ((status, text),) = sql(db, "SELECT status, result FROM heddle_node_results")
    assert (status, json.loads(text)["status"]) == ("succeeded", "succeeded")


async def test_run_records_carry_run_status_members(tmp_path: Path) -> None:
    """status and state are RunStatus members; a running run whose owner is gone is INTERRUPTED."""
    gone = RunLease("host/1/dead", "another-site", datetime.now(UTC) - timedelta(seconds=1))
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        for workflow_id, lease in (("live", RunLease.take(30)), ("gone", gone), ("done", None)):
            await cp.create_run(
                RunRecord(workflow_id, "g", "f", None, ("n",), "running", STARTED, lease=lease)
            )
        await cp.finish_run("done", RunStatus.SUCCEEDED, STARTED)
        records = {r.workflow_id: r for r in await cp.list_runs()}
    assert {k: r.state for k, r in records.items()} == {
        "live": RunStatus.RUNNING,
        "gone": RunStatus.INTERRUPTED,
        "done": RunStatus.SUCCEEDED,
    }
    for record in records.values():
        assert type(record.status) is RunStatus and type(record.state) is RunStatus
    assert records["gone"].status is RunStatus.RUNNING


def test_a_run_record_made_with_a_word_holds_the_member() -> None:
    """RunRecord(status="failed") holds RunStatus.FAILED; a word that is no status fails."""
    record = RunRecord("w", "g", "f", None, (), "failed", STARTED)  # type: ignore[arg-type]
    assert record.status is RunStatus.FAILED and record.state is RunStatus.FAILED
    with pytest.raises(ValueError, match="'paused' is not a valid RunStatus"):
        RunRecord("w", "g", "f", None, (), "paused", STARTED)  # type: ignore[arg-type]


async def test_list_runs_with_an_unknown_status_names_the_statuses(tmp_path: Path) -> None:
    """list_runs(status=...) of no RunStatus is a ConfigurationError naming them all."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        for bad in ("success", "paused", 3):
            with pytest.raises(ConfigurationError) as caught:
                await cp.list_runs(status=bad)  # type: ignore[arg-type]
            assert str(caught.value) == (
                "status must be one of running, succeeded, failed, cancelled, interrupted, "
                f"got {bad!r}"
            )
            assert caught.value.parameter == "status"


async def test_finish_run_takes_an_end_status_or_its_word(tmp_path: Path) -> None:
    """SUCCEEDED, "failed" or CANCELLED end a run; running or interrupted are refused."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        for workflow_id in ("a", "b"):
            await cp.create_run(RunRecord(workflow_id, "g", "f", None, (), "running", STARTED))
        await cp.finish_run("a", "failed", STARTED)
        await cp.finish_run("b", RunStatus.CANCELLED, STARTED)
        for bad in (RunStatus.INTERRUPTED, "running"):
            with pytest.raises(ConfigurationError, match="one of succeeded, failed, cancelled"):
                await cp.finish_run("a", bad, STARTED)
        records = {r.workflow_id: r.status for r in await cp.list_runs()}
    assert records == {"a": RunStatus.FAILED, "b": RunStatus.CANCELLED}


async def test_a_run_cannot_be_created_interrupted(tmp_path: Path) -> None:
    """INTERRUPTED is how a running run reads, never stored: create_run refuses it."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        record = RunRecord("w", "g", "f", None, (), RunStatus.INTERRUPTED, STARTED)
        with pytest.raises(ConfigurationError, match=r"record\.status must be one of running,"):
            await cp.create_run(record)
        assert await cp.list_runs() == []


# -- schema version 2 -----------------------------------------------------------------------


async def test_a_version_1_database_is_migrated_when_opened_keeping_every_result(
    tmp_path: Path,
) -> None:
    """Opened for writing: results read as iteration 0 and "succeeded"; user_version is 2."""
    db = tmp_path / "runs.db"
    v1_database(db)
    before = sql(db, "SELECT node, result FROM heddle_node_results ORDER BY seq")
    async with SQLiteCheckpointer(db) as cp:
        results = await cp.node_results("old", types={})
        activations = await cp.activation_results("old")
        (record,) = await cp.list_runs()
    assert sql(db, "PRAGMA user_version") == [(2,)] == [(SCHEMA_VERSION,)]
    assert_v1_results_read_back(results)
    assert list(activations) == [Activation("fetch"), Activation("left"), Activation("right")]
    assert (record.status, record.nodes_done) == (RunStatus.FAILED, 2)
    rows = sql(db, "SELECT node, iteration, item, status, result FROM heddle_node_results")
    assert [row[:4] for row in rows] == [
        ("fetch", 0, -1, "succeeded"),
        ("left", 0, -1, "succeeded"),
        ("right", 0, -1, "failed"),
    ]
    for (node, old), (_, _, _, _, new) in zip(before, rows, strict=True):
        assert json.loads(new) == {**json.loads(old), "status": json.loads(new)["status"]}
        assert json.loads(new)["status"] == ("failed" if node == "right" else "succeeded")


async def test_a_migrated_run_takes_new_activations(tmp_path: Path) -> None:
    """After the migration a recorded node gets its next iteration beside its old row."""
    db = tmp_path / "runs.db"
    v1_database(db)
    async with SQLiteCheckpointer(db) as cp:
        await cp.save_node("old", "right", result("fixed"), iteration=1)
        latest = await cp.node_results("old")
    assert latest["right"]["content"] == "fixed"
    assert list(latest) == ["fetch", "left", "right"]


async def test_a_version_1_database_opened_read_only_reads_as_migrated_and_stays_as_it_is(
    tmp_path: Path,
) -> None:
    """readonly=True does not migrate: it reads "success" as "succeeded", iteration 0."""
    db = tmp_path / "runs.db"
    v1_database(db)
    before = db.read_bytes()
    async with SQLiteCheckpointer(db, readonly=True) as reader:
        results = await reader.node_results("old")
        activations = await reader.activation_results("old")
        (record,) = await reader.list_runs(status="failed")
        again = await reader.get_run("old")
    assert_v1_results_read_back(results)
    assert list(activations) == [Activation("fetch"), Activation("left"), Activation("right")]
    assert (record.nodes_done, again is not None and again.input) == (2, "q")
    assert db.read_bytes() == before
    assert sql(db, "PRAGMA user_version") == [(1,)]


async def test_a_migration_that_fails_midway_leaves_the_version_1_file_as_it_was(
    tmp_path: Path,
) -> None:
    """A view on the results table fails the rename after the copy: all of it rolls back."""
    db = tmp_path / "runs.db"
    v1_database(db)
    sql(db, "CREATE VIEW their_view AS SELECT node FROM heddle_node_results")
    before = sql(db, "SELECT * FROM heddle_node_results ORDER BY seq")
    schema = sql(db, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with pytest.raises(CheckpointError, match="their_view") as caught:
        async with SQLiteCheckpointer(db):
            pass
    assert caught.value.path == db
    assert sql(db, "PRAGMA user_version") == [(1,)]
    assert sql(db, "SELECT * FROM heddle_node_results ORDER BY seq") == before
    assert sql(db, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema
    sql(db, "DROP VIEW their_view")
    async with SQLiteCheckpointer(db) as cp:  # nothing half done stands in the way
        assert_v1_results_read_back(await cp.node_results("old"))


async def test_a_file_newer_than_version_2_is_still_refused(tmp_path: Path) -> None:
    """user_version 3: a CheckpointError, for writing and for reading; the file is unchanged."""
    db = tmp_path / "runs.db"
    v1_database(db)
    sql(db, "PRAGMA user_version = 3")
    before = db.read_bytes()
    for readonly in (False, True):
        with pytest.raises(CheckpointError, match="schema version 3, newer than version 2"):
            async with SQLiteCheckpointer(db, readonly=readonly):
                pass
    assert db.read_bytes() == before
