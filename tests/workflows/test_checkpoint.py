"""Durable runs: checkpoints, resume, and what a checkpointer refuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from old_schemas import UNVERSIONED_SCHEMA, V1_NODE_RESULTS

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.core.errors import (
    CheckpointError,
    ConfigurationError,
    GraphMismatchError,
    ResultNotRestorable,
    ResultNotSerializable,
    RunNotFoundError,
)
from heddle.workflows.checkpoint import (
    SCHEMA_VERSION,
    Checkpointer,
    RunLease,
    RunRecord,
    RunStatus,
    SQLiteCheckpointer,
    default_database_path,
)
from heddle.workflows.context import NodeResult
from heddle.workflows.status import NodeStatus

NO_RETRY = RetryPolicy(max_attempts=1)


class Recorder:
    """Agents that log their calls and can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing: set[str] = set()

    def agent(self, name: str) -> Any:
        async def run(task: Any) -> str:
            self.calls.append(name)
            if name in self.failing:
                raise RuntimeError(f"{name} broke")
            return f"{name}({task})"

        run.__qualname__ = name
        return run


def pipeline(rec: Recorder) -> WorkflowGraph:
    """fetch -> (left, right) -> join -> report."""
    g = WorkflowGraph("pipeline")
    for name in ("fetch", "left", "right", "join", "report"):
        g.add_node(name, rec.agent(name))
    g.add_edge("fetch", "left").add_edge("fetch", "right")
    g.add_edge("left", "join").add_edge("right", "join").add_edge("join", "report")
    return g


async def test_a_durable_run_records_the_run_its_results_and_events(tmp_path: Path) -> None:
    """execute() with a path records the run, every node's result and its events."""
    db = tmp_path / "runs.db"
    rec = Recorder()
    async with WorkflowExecutor(checkpointer=db) as ex:
        result = await ex.execute(pipeline(rec), input="q", workflow_id="run-1")
    async with SQLiteCheckpointer(db) as cp:
        record = await cp.get_run("run-1")
        assert record is not None
        assert record.status == "succeeded" == result.status
        assert record.graph_name == "pipeline"
        assert record.input == "q"
        assert record.nodes == ("fetch", "left", "right", "join", "report")
        assert record.fingerprint == pipeline(Recorder()).fingerprint()
        assert record.duration is not None and record.duration >= 0
        stored = await cp.node_results("run-1")
        assert list(stored) == list(result.results)
        for name, r in stored.items():
            assert r["content"] == result.results[name]["content"]
            assert (r["status"], r["iteration"]) == (NodeStatus.SUCCEEDED, 0)
        events = await cp.events("run-1")
        assert events[0]["event_type"] == "workflow.started"
        assert events[-1]["event_type"] == "workflow.finished"
        assert [r.workflow_id for r in await cp.list_runs()] == ["run-1"]


async def test_results_are_stored_as_json_text(tmp_path: Path) -> None:
    """What lands in the database is plain JSON, never pickle."""
    db = tmp_path / "runs.db"
    async with WorkflowExecutor(checkpointer=db) as ex:
        await ex.execute(pipeline(Recorder()), input="q", workflow_id="run-1")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT result FROM heddle_node_results").fetchall()
        events = conn.execute("SELECT event FROM heddle_events").fetchall()
    assert len(rows) == 5
    for (text,) in rows + events:
        assert isinstance(text, str)
        json.loads(text)


class SlowCheckpointer(SQLiteCheckpointer):
    """Holds every durable save until released, to observe what waits for it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.saved: list[str] = []

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
        if wait:
            self.holding.set()
            await self.release.wait()
        await super().save_node(
            workflow_id, node, result, iteration=iteration, item=item, wait=wait, owner=owner
        )
        self.saved.append(node)


async def test_a_result_is_durable_before_any_dependent_starts(tmp_path: Path) -> None:
    """The dependent does not start while its predecessor's checkpoint is pending."""
    rec = Recorder()
    cp = SlowCheckpointer(tmp_path / "runs.db")
    g = WorkflowGraph("g").add_node("a", rec.agent("a")).add_node("b", rec.agent("b"))
    g.add_edge("a", "b")
    run = asyncio.create_task(WorkflowExecutor(checkpointer=cp).execute(g, input=1))
    await asyncio.wait_for(cp.holding.wait(), 10)
    await asyncio.sleep(0.05)  # give a wrongly released b every chance to start
    assert rec.calls == ["a"]  # a finished; its save is held; b must wait
    cp.release.set()
    result = await run
    assert result.ok
    assert cp.saved == ["a", "b"]
    await cp.aclose()


async def test_resume_reruns_only_what_did_not_succeed(tmp_path: Path) -> None:
    """After a failure, resume() runs the failed and skipped nodes, with recorded inputs."""
    db = tmp_path / "runs.db"
    rec = Recorder()
    rec.failing = {"right"}
    async with WorkflowExecutor(checkpointer=db, retry=NO_RETRY) as ex:
        first = await ex.execute(pipeline(rec), input="q")
        assert first.status == "failed"
        assert rec.calls == ["fetch", "left", "right"]
        rec.failing.clear()
        rec.calls.clear()
        second = await ex.resume(first.workflow_id, pipeline(rec))
    assert second.workflow_id == first.workflow_id
    assert second.status == "succeeded"
    assert sorted(rec.calls) == ["join", "report", "right"]
    assert (
        second.content("report") == "report(join({'left': 'left(fetch(q))', 'right': "
        "'right(fetch(q))'}))"
    )
    assert second.results["fetch"].get("resumed") is True
    assert "resumed" not in second.results["right"]
    assert [m["node"] for m in second.context.messages][:2] == ["fetch", "left"]
    async with SQLiteCheckpointer(db) as cp:
        record = await cp.get_run(first.workflow_id)
        assert record is not None and record.status == "succeeded"


async def test_resuming_a_succeeded_run_runs_nothing(tmp_path: Path) -> None:
    """A finished run comes back as recorded; no agent is called."""
    db = tmp_path / "runs.db"
    rec = Recorder()
    async with WorkflowExecutor(checkpointer=db) as ex:
        first = await ex.execute(pipeline(rec), input="q")
        rec.calls.clear()
        again = await ex.resume(first.workflow_id, pipeline(rec))
    assert rec.calls == []
    assert again.status == "succeeded"
    assert again.content("report") == first.content("report")
    assert again.started_at == first.started_at


async def test_resume_refuses_a_graph_of_another_shape_unless_forced(tmp_path: Path) -> None:
    """A changed structure is a GraphMismatchError; force=True reuses what still fits."""
    db = tmp_path / "runs.db"
    rec = Recorder()
    rec.failing = {"report"}
    async with WorkflowExecutor(checkpointer=db, retry=NO_RETRY) as ex:
        first = await ex.execute(pipeline(rec), input="q")
        changed = pipeline(rec).add_node("extra", rec.agent("extra")).add_edge("report", "extra")
        with pytest.raises(GraphMismatchError, match="force=True") as info:
            await ex.resume(first.workflow_id, changed)
        assert info.value.workflow_id == first.workflow_id
        rec.failing.clear()
        rec.calls.clear()
        forced = await ex.resume(first.workflow_id, changed, force=True)
    assert forced.ok
    assert rec.calls == ["report", "extra"]


async def test_resume_of_an_unknown_run_names_it(tmp_path: Path) -> None:
    """An unknown id is a RunNotFoundError (a KeyError) with the id and the database."""
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        with pytest.raises(RunNotFoundError, match="no run with workflow id 'nope' in ") as info:
            await ex.resume("nope", pipeline(Recorder()))
    assert isinstance(info.value, KeyError)
    assert str(tmp_path) in str(info.value)


async def test_resume_needs_a_checkpointer() -> None:
    """Without a checkpointer, resume() explains what is missing."""
    with pytest.raises(ConfigurationError, match="needs a checkpointer"):
        await WorkflowExecutor().resume("w", pipeline(Recorder()))


async def test_a_non_json_result_fails_its_node_naming_it(tmp_path: Path) -> None:
    """A result the codec cannot store fails its node, which keeps the content in memory."""
    lock = threading.Lock()

    async def returns_a_lock(task: Any) -> dict[str, Any]:
        return {"handle": lock}

    g = WorkflowGraph("g").add_node("bad", returns_a_lock).add_node("after", Recorder().agent("x"))
    g.add_edge("bad", "after").add_node("fine", Recorder().agent("fine"))
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        result = await ex.execute(g, input="q")
        stored = await ex.checkpointer.node_results(result.workflow_id)  # type: ignore[union-attr]
    bad = result.results["bad"]
    assert bad["status"] == "failed"
    assert bad["error"] is not None
    assert bad["error"].startswith("ResultNotSerializable: cannot store the result of node 'bad'")
    assert "result['content']['handle']" in bad["error"]
    assert bad["content"] == {"handle": lock}  # the work is not lost
    assert result.results["after"]["status"] == "skipped"
    assert result.results["fine"]["status"] == "succeeded"
    assert (stored["bad"]["status"], stored["bad"]["content"]) == ("failed", None)


async def test_a_non_json_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Durable runs store their input, so it must be JSON; nothing runs otherwise."""
    rec = Recorder()
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        with pytest.raises(ResultNotSerializable, match="the run's input"):
            await ex.execute(pipeline(rec), input=object())
    assert rec.calls == []


async def test_a_workflow_id_cannot_be_recorded_twice(tmp_path: Path) -> None:
    """execute() with an id already in the database points at resume()."""
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        await ex.execute(pipeline(Recorder()), workflow_id="same")
        with pytest.raises(CheckpointError, match=r"already exists.*resume it"):
            await ex.execute(pipeline(Recorder()), workflow_id="same")


async def test_stored_events_are_bounded_per_run(tmp_path: Path) -> None:
    """Only the latest max_events_per_run events of a run are kept."""
    cp = SQLiteCheckpointer(tmp_path / "runs.db", max_events_per_run=5)
    async with WorkflowExecutor(checkpointer=cp) as ex:
        result = await ex.execute(pipeline(Recorder()), input="q")
    events = await cp.events(result.workflow_id)
    assert len(events) == 5
    assert events[-1]["event_type"] == "workflow.finished"
    await cp.aclose()


async def test_a_cancelled_run_is_recorded_as_cancelled_and_resumable(tmp_path: Path) -> None:
    """Cancelling execute() marks the run cancelled; resume() finishes it."""
    db = tmp_path / "runs.db"
    started = asyncio.Event()
    hang = True

    async def slow(task: Any) -> str:
        started.set()
        if hang:
            await asyncio.sleep(60)
        return "slow done"

    rec = Recorder()
    g = WorkflowGraph("g").add_node("first", rec.agent("first")).add_node("slow", slow)
    g.add_edge("first", "slow")
    async with WorkflowExecutor(checkpointer=db) as ex:
        run = asyncio.create_task(ex.execute(g, input="x", workflow_id="c-1"))
        await started.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        record = await ex.checkpointer.get_run("c-1")  # type: ignore[union-attr]
        assert record is not None and record.status == "cancelled"
        hang = False
        result = await ex.resume("c-1", g)
    assert result.content("slow") == "slow done"
    assert rec.calls == ["first"]


def test_one_durable_executor_serves_several_event_loops(tmp_path: Path) -> None:
    """The checkpointer's thread is not bound to a loop: asyncio.run twice works."""
    ex = WorkflowExecutor(checkpointer=tmp_path / "runs.db")
    first = ex.run(pipeline(Recorder()), input="a")
    second = ex.run(pipeline(Recorder()), input="b")
    assert first.ok and second.ok

    async def count() -> int:
        return len(await ex.checkpointer.list_runs())  # type: ignore[union-attr]

    assert asyncio.run(count()) == 2
    asyncio.run(ex.aclose())


async def test_closed_checkpointer_refuses_writes(tmp_path: Path) -> None:
    """After aclose(), writing is a CheckpointError, and aclose() is idempotent."""
    cp = SQLiteCheckpointer(tmp_path / "runs.db")
    await cp.list_runs()
    await cp.aclose()
    await cp.aclose()
    with pytest.raises(CheckpointError, match="closed"):
        await cp.save_node("w", "n", done(1))


async def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    """Random bytes: a CheckpointError naming the file and what to do; nothing runs or changes."""
    db = tmp_path / "runs.db"
    db.write_bytes(random.Random(0).randbytes(8192))
    before = db.read_bytes()
    rec = Recorder()
    async with WorkflowExecutor(checkpointer=db) as ex:
        with pytest.raises(CheckpointError, match="move it aside") as caught:
            await ex.execute(pipeline(rec), input="q")
    assert str(db) in str(caught.value) and caught.value.path == db
    assert "heddle never modifies" in str(caught.value)
    for readonly in (False, True):
        with pytest.raises(CheckpointError, match="not a readable checkpoint database"):
            async with SQLiteCheckpointer(db, readonly=readonly) as cp:
                await cp.list_runs()
    assert rec.calls == []
    assert db.read_bytes() == before
    assert os.listdir(tmp_path) == ["runs.db"]


def test_bad_checkpointer_arguments_are_rejected() -> None:
    """Wrong kinds and ranges fail at construction, naming the parameter."""
    with pytest.raises(ConfigurationError, match="checkpointer must be"):
        WorkflowExecutor(checkpointer=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="synchronous"):
        SQLiteCheckpointer("x.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_events_per_run"):
        SQLiteCheckpointer("x.db", max_events_per_run=-1)


def test_default_database_lives_under_heddle_home(heddle_home: Path) -> None:
    """Without a path the database is $HEDDLE_HOME/heddle.db."""
    assert default_database_path() == heddle_home / "heddle.db"
    assert SQLiteCheckpointer().path == heddle_home / "heddle.db"


def test_sqlite_checkpointer_satisfies_the_protocol(tmp_path: Path) -> None:
    """The embedded checkpointer is a Checkpointer."""
    assert isinstance(SQLiteCheckpointer(tmp_path / "x.db"), Checkpointer)


async def test_many_concurrent_saves_share_commits(tmp_path: Path) -> None:
    """Saves that arrive while a commit is in flight are committed together (group commit)."""
    cp = SQLiteCheckpointer(tmp_path / "runs.db")
    commits = 0
    original = cp._write_sync

    def counting(batch: Any) -> Any:
        nonlocal commits
        commits += 1
        return original(batch)

    cp._write_sync = counting  # type: ignore[method-assign]
    await asyncio.gather(*(cp.save_node("w", f"n{i}", done(1)) for i in range(200)))
    assert len(await cp.node_results("w")) == 200
    assert commits < 50
    await cp.aclose()


def done(content: Any) -> NodeResult:
    return NodeResult(
        content=content,
        status=NodeStatus.SUCCEEDED,
        error=None,
        attempts=1,
        duration=0.0,
    )


def sql(db: Path, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on ``db`` as another program would, and close the connection."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(statement, params).fetchall()


# -- one commit, many writes --------------------------------------------------------------


async def test_a_write_that_fails_fails_only_itself_not_the_rest_of_its_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A result refused by the database fails its own caller; the others of the commit land."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        sql(
            db,
            "CREATE TRIGGER refuse BEFORE INSERT ON heddle_node_results WHEN NEW.node LIKE 'bad%' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END",
        )
        await cp.save_node("w", "good1", done(1), wait=False)  # rides along with bad1
        with pytest.raises(CheckpointError, match="refused by a trigger"):
            await cp.save_node("w", "bad1", done(2))
        await cp.save_node("w", "bad2", done(3), wait=False)  # rides along with good2
        await cp.save_node("w", "good2", done(4))
        assert list(await cp.node_results("w")) == ["good1", "good2"]
    assert "1 write(s) not waited for were not recorded" in caplog.text
    assert "the result of node 'bad2'" in caplog.text


async def test_writes_nobody_waited_for_are_recorded_when_the_checkpointer_closes(
    tmp_path: Path,
) -> None:
    """An event or a failed result still queued at aclose() is committed, not dropped."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        await cp.add_event("w", {"n": 1})
        failed = NodeResult(content=None, status="failed", error="E", attempts=1, duration=0.0)
        await cp.save_node("w", "n", failed, wait=False)
    async with SQLiteCheckpointer(db) as cp:
        assert await cp.events("w") == [{"n": 1}]
        assert list(await cp.node_results("w")) == ["n"]


# -- the schema's version -----------------------------------------------------------------


def downgrade(db: Path, version: int) -> None:
    """Make ``db`` what heddle wrote at schema ``version`` (1, or 0: before versions).

    One result row per node (iteration 0), whose status reads "success" where it
    says "succeeded" now, in the column and in the stored result.
    """
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("ALTER TABLE heddle_node_results RENAME TO heddle_node_results_v2")
        conn.execute(V1_NODE_RESULTS)
        conn.execute(
            "INSERT INTO heddle_node_results SELECT workflow_id, node, "
            "CASE status WHEN 'succeeded' THEN 'success' ELSE status END, "
            "CASE json_extract(result, '$.status') WHEN 'succeeded' "
            "THEN json_set(result, '$.status', 'success') ELSE result END, seq "
            "FROM heddle_node_results_v2 WHERE iteration = 0 AND item = -1"
        )
        conn.execute("DROP TABLE heddle_node_results_v2")
        conn.execute(f"PRAGMA user_version = {version}")


def unversion(db: Path) -> None:
    """Make ``db`` what heddle wrote before schemas had a version."""
    downgrade(db, 0)


def before_leases(db: Path) -> None:
    """Make ``db`` what heddle wrote before runs had leases (and schemas a version)."""
    unversion(db)
    for column in ("owner", "owner_site", "lease_until"):
        sql(db, f"ALTER TABLE heddle_runs DROP COLUMN {column}")


async def failed_run(db: Path, rec: Recorder) -> str:
    """A recorded pipeline run in which "right" failed; returns its workflow id."""
    rec.failing = {"right"}
    async with WorkflowExecutor(checkpointer=db, retry=NO_RETRY) as ex:
        result = await ex.execute(pipeline(rec), input="q")
    rec.failing.clear()
    rec.calls.clear()
    return result.workflow_id


async def test_a_new_database_records_its_schema_version(tmp_path: Path) -> None:
    """PRAGMA user_version is the version this heddle writes."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        await cp.list_runs()
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_database_from_before_schema_versions_is_migrated(tmp_path: Path) -> None:
    """Version 0 with heddle's tables: brought up to date; its results read as before."""
    db = tmp_path / "runs.db"
    workflow_id = await failed_run(db, Recorder())
    unversion(db)
    assert sql(db, "SELECT DISTINCT status FROM heddle_node_results ORDER BY 1") == [
        ("failed",),
        ("skipped",),
        ("success",),
    ]
    async with SQLiteCheckpointer(db) as cp:
        results = await cp.node_results(workflow_id)
        (record,) = await cp.list_runs()
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert {n: r["status"] for n, r in results.items() if n in ("fetch", "left")} == {
        "fetch": NodeStatus.SUCCEEDED,
        "left": NodeStatus.SUCCEEDED,
    }
    assert results["left"]["content"] == "left(fetch(q))"
    assert record.nodes_done == 2


async def test_a_database_from_before_schema_versions_is_migrated_and_resumes(
    tmp_path: Path,
) -> None:
    """Version 0 with heddle's tables: brought up to date; its run resumes where it stopped."""
    db, rec = tmp_path / "runs.db", Recorder()
    workflow_id = await failed_run(db, rec)
    unversion(db)
    async with WorkflowExecutor(checkpointer=db) as ex:
        result = await ex.resume(workflow_id, pipeline(rec))
    assert result.ok and sorted(rec.calls) == ["join", "report", "right"]
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_database_of_a_newer_heddle_is_refused_before_any_agent_runs(
    tmp_path: Path,
) -> None:
    """user_version above ours: a CheckpointError naming file and versions; file untouched."""
    db, rec = tmp_path / "runs.db", Recorder()
    workflow_id = await failed_run(db, rec)
    sql(db, "PRAGMA user_version = 99")
    before = db.read_bytes()
    expected = (
        rf"{db} has checkpoint schema version 99, newer than version {SCHEMA_VERSION}.*"
        "upgrade heddle"
    )
    async with WorkflowExecutor(checkpointer=db) as ex:
        with pytest.raises(CheckpointError, match=expected):
            await ex.execute(pipeline(rec), input="q")
        with pytest.raises(CheckpointError, match=expected):
            await ex.resume(workflow_id, pipeline(rec))
    with pytest.raises(CheckpointError, match=expected):
        async with SQLiteCheckpointer(db, readonly=True):
            pass
    assert rec.calls == []
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("result      TEXT NOT NULL,", "result TEXT NOT NULL CHECK (length(result) < 10),"),
        ("finished_at TEXT,", "finished_at TEXT NOT NULL,"),
        ("event       TEXT NOT NULL,", "event TEXT NOT NULL, source TEXT NOT NULL,"),
    ],
)
async def test_tables_heddle_did_not_make_are_refused_before_any_agent_runs(
    tmp_path: Path, old: str, new: str
) -> None:
    """Unversioned tables of another shape would fail mid-run: refused when opened instead."""
    db, rec = tmp_path / "runs.db", Recorder()
    assert old in UNVERSIONED_SCHEMA
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(UNVERSIONED_SCHEMA.replace(old, new))
    async with WorkflowExecutor(checkpointer=db) as ex:
        with pytest.raises(CheckpointError, match=r"heddle did not make.*use another file"):
            await ex.execute(pipeline(rec), input="q")
    assert rec.calls == []
    assert sql(db, "PRAGMA user_version") == [(0,)]


async def test_two_checkpointers_opening_an_old_database_at_once_migrate_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both read version 0, then wait on one lock; the lease columns are added once."""
    db = tmp_path / "runs.db"
    workflow_id = await failed_run(db, Recorder())
    before_leases(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    first, second = SQLiteCheckpointer(db), SQLiteCheckpointer(db)
    with Warnings(2) as both_waiting:
        opening = asyncio.gather(first.list_runs(), second.list_runs())
        await asyncio.wait_for(both_waiting.wait(), 30)
    holder.execute("ROLLBACK")
    holder.close()
    listed = await opening
    assert [[r.workflow_id for r in runs] for runs in listed] == [[workflow_id]] * 2
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    columns = [row[1] for row in sql(db, "PRAGMA table_info(heddle_runs)")]
    assert columns[-3:] == ["owner", "owner_site", "lease_until"]
    await first.aclose()
    await second.aclose()


# -- rows that cannot be read -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text", "problem"),
    [
        ("succeeded", "{not json", "not valid JSON"),
        ("succeeded", "[1, 2]", "holds list, not a result"),
        ("succeeded", '{"content": "x", "status": "succeeded"}', "lacks error, attempts, duration"),
        (
            "done",
            '{"content": 1, "status": "done", "error": null, "attempts": 1, "duration": 0.1}',
            "its status is 'done'",
        ),
        (
            "succeeded",
            '{"content": 1, "status": "failed", "error": null, "attempts": 1, "duration": 0.1}',
            "status column says 'succeeded'",
        ),
        (
            "succeeded",
            '{"content": 1, "status": "succeeded", "error": null, "attempts": "1", '
            '"duration": 0.1}',
            "attempts",
        ),
    ],
)
async def test_an_unreadable_recorded_result_stops_resume_naming_the_run_and_node(
    tmp_path: Path, status: str, text: str, problem: str
) -> None:
    """A recorded success that cannot be read back is an error, never a node to run again."""
    db, rec = tmp_path / "runs.db", Recorder()
    workflow_id = await failed_run(db, rec)
    sql(
        db,
        "UPDATE heddle_node_results SET status = ?, result = ? WHERE node = 'left'",
        (status, text),
    )
    async with WorkflowExecutor(checkpointer=db) as ex:
        with pytest.raises(ResultNotRestorable, match=problem) as caught:
            await ex.resume(workflow_id, pipeline(rec))
    assert (caught.value.workflow_id, caught.value.node) == (workflow_id, "left")
    assert f"node 'left' of run '{workflow_id}'" in str(caught.value)
    assert rec.calls == []


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("started_at", "yesterday"),
        ("finished_at", "2024-13-45"),
        ("lease_until", 5),
        ("status", "paused"),
        ("nodes", "fetch,left"),
        ("graph_name", b"\xff"),
    ],
)
async def test_an_unreadable_run_column_is_a_checkpoint_error_naming_the_run_and_column(
    tmp_path: Path, column: str, value: object
) -> None:
    """Listing, showing or resuming a run with a damaged column names the run and column."""
    db, rec = tmp_path / "runs.db", Recorder()
    workflow_id = await failed_run(db, rec)
    sql(db, f"UPDATE heddle_runs SET {column} = ?", (value,))
    expected = f"run '{workflow_id}' in {db}: its {column} column holds"
    async with SQLiteCheckpointer(db) as cp:
        with pytest.raises(CheckpointError, match=expected):
            await cp.get_run(workflow_id)
        with pytest.raises(CheckpointError, match=expected):
            await cp.list_runs()
    async with WorkflowExecutor(checkpointer=db) as ex:
        with pytest.raises(CheckpointError, match=expected):
            await ex.resume(workflow_id, pipeline(rec))
    assert rec.calls == []


async def test_a_timestamp_without_an_offset_is_read_as_utc(tmp_path: Path) -> None:
    """A naive ISO timestamp (another writer's) reads as UTC instead of failing comparisons."""
    db = tmp_path / "runs.db"
    workflow_id = await failed_run(db, Recorder())
    sql(db, "UPDATE heddle_runs SET started_at = '2024-05-01T09:30:00'")
    async with SQLiteCheckpointer(db) as cp:
        record = await cp.get_run(workflow_id)
    assert record is not None and record.started_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


# -- reading without writing --------------------------------------------------------------


async def test_a_readonly_checkpointer_never_makes_a_database_of_a_file(tmp_path: Path) -> None:
    """Missing: an error, and still missing. Empty: no runs, still 0 bytes, until a writer comes."""
    missing, empty = tmp_path / "missing.db", tmp_path / "empty.db"
    with pytest.raises(CheckpointError, match=f"no checkpoint database at {missing}"):
        async with SQLiteCheckpointer(missing, readonly=True):
            pass
    assert not missing.exists()
    empty.touch()
    async with SQLiteCheckpointer(empty, readonly=True) as reader:
        assert await reader.list_runs() == []
        assert await reader.get_run("w") is None
        assert await reader.node_results("w") == {}
        assert await reader.events("w") == []
        assert empty.stat().st_size == 0
        async with WorkflowExecutor(checkpointer=empty) as ex:
            result = await ex.execute(pipeline(Recorder()), input="q")
        assert [r.workflow_id for r in await reader.list_runs()] == [result.workflow_id]


async def test_a_readonly_checkpointer_reads_runs_and_refuses_to_write(tmp_path: Path) -> None:
    """Everything reads as usual; every write is a CheckpointError; the file is unchanged."""
    db, rec = tmp_path / "runs.db", Recorder()
    workflow_id = await failed_run(db, rec)
    unversion(db)  # an older version is read as it is, not upgraded
    before = db.read_bytes()
    async with SQLiteCheckpointer(db, readonly=True) as reader:
        record = await reader.get_run(workflow_id)
        assert record is not None and (record.input, record.status) == ("q", "failed")
        assert (await reader.node_results(workflow_id))["left"]["content"] == "left(fetch(q))"
        assert (await reader.events(workflow_id))[-1]["event_type"] == "workflow.finished"
        lease = RunLease.take(30)
        for write in (
            reader.create_run(replace(record, workflow_id="other")),
            reader.save_node(workflow_id, "left", done(1)),
            reader.add_event(workflow_id, {}),
            reader.finish_run(workflow_id, "failed", datetime.now(UTC)),
            reader.claim_run(workflow_id, lease),
            reader.renew_lease(workflow_id, lease),
        ):
            with pytest.raises(CheckpointError, match="read-only"):
                await write
    assert db.read_bytes() == before
    assert sql(db, "PRAGMA user_version") == [(0,)]


async def test_a_readonly_checkpointer_asks_for_an_upgrade_of_a_database_from_before_leases(
    tmp_path: Path,
) -> None:
    """Tables without the lease columns cannot be read as they are: a clear error, no change."""
    db = tmp_path / "runs.db"
    workflow_id = await failed_run(db, Recorder())
    before_leases(db)
    before = db.read_bytes()
    with pytest.raises(CheckpointError, match="older heddle and must be upgraded"):
        async with SQLiteCheckpointer(db, readonly=True):
            pass
    assert db.read_bytes() == before
    async with SQLiteCheckpointer(db) as writer:  # a writer upgrades it
        assert [r.workflow_id for r in await writer.list_runs()] == [workflow_id]


# -- listing runs -------------------------------------------------------------------------


async def test_listed_runs_are_summaries_whose_input_is_not_read(tmp_path: Path) -> None:
    """list_runs() leaves the input unread (None); get_run() reads it, naming a bad one."""
    db = tmp_path / "runs.db"
    workflow_id = await failed_run(db, Recorder())
    sql(db, "UPDATE heddle_runs SET input = '{broken'")
    async with SQLiteCheckpointer(db) as cp:
        (listed,) = await cp.list_runs()
        assert (listed.workflow_id, listed.input, listed.nodes_done) == (workflow_id, None, 2)
        with pytest.raises(ResultNotRestorable, match="input of run") as caught:
            await cp.get_run(workflow_id)
    assert (caught.value.workflow_id, caught.value.node) == (workflow_id, None)


async def test_runs_are_listed_by_state_and_graph(tmp_path: Path) -> None:
    """status= takes any RunStatus or its word, interrupted included; graph= a graph name."""
    gone = RunLease("host/1/dead", "another-site", datetime.now(UTC) - timedelta(seconds=1))
    runs = [  # oldest first
        ("ok", "a", None, "succeeded"),
        ("bad", "b", None, "failed"),
        ("live", "a", RunLease.take(30), None),
        ("gone", "b", gone, None),
        ("ok2", "b", None, "succeeded"),
    ]
    async with SQLiteCheckpointer(tmp_path / "runs.db") as cp:
        start = datetime.now(UTC)
        for n, (workflow_id, graph, lease, end) in enumerate(runs):
            at = start + timedelta(seconds=n)
            await cp.create_run(
                RunRecord(workflow_id, graph, "f", None, ("x",), RunStatus.RUNNING, at, lease=lease)
            )
            if end is not None:
                await cp.finish_run(workflow_id, end, at)

        async def ids(*args: Any, **kwargs: Any) -> list[str]:
            return [r.workflow_id for r in await cp.list_runs(*args, **kwargs)]

        assert await ids() == ["ok2", "gone", "live", "bad", "ok"]
        assert await ids(status="succeeded") == ["ok2", "ok"]
        assert await ids(status="running") == ["live"]
        assert await ids(status=RunStatus.INTERRUPTED) == ["gone"]
        assert await ids(graph="b") == ["ok2", "gone", "bad"]
        assert await ids(status="succeeded", graph="a") == ["ok"]
        assert await ids(1, status="succeeded") == ["ok2"]
        allowed = "running, succeeded, failed, cancelled, interrupted, got 'paused'"
        with pytest.raises(ConfigurationError, match=f"status must be one of {allowed}"):
            await cp.list_runs(status="paused")  # type: ignore[arg-type]


# -- locks held by others -----------------------------------------------------------------


class Warnings(logging.Handler):
    """Counts the warnings of heddle.checkpoint; ``wait()`` returns once ``count`` came."""

    def __init__(self, count: int) -> None:
        super().__init__(logging.WARNING)
        self.count = count
        self.loop = asyncio.get_running_loop()
        self.enough = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:  # on the checkpointer's thread
        self.count -= 1
        if self.count == 0:
            self.loop.call_soon_threadsafe(self.enough.set)

    async def wait(self) -> None:
        await self.enough.wait()

    def __enter__(self) -> Warnings:
        logging.getLogger("heddle.checkpoint").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("heddle.checkpoint").removeHandler(self)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "heddle.checkpoint"]


async def test_waiting_for_another_process_lock_is_logged_once_then_the_write_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After about a second of waiting: one WARNING naming the file and the longest wait."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as cp:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a long write transaction elsewhere
        with Warnings(1) as waiting:
            save = asyncio.create_task(cp.save_node("w", "n", done(1)))
            await asyncio.wait_for(waiting.wait(), 30)
        assert not save.done()
        holder.execute("ROLLBACK")
        holder.close()
        await save
        assert list(await cp.node_results("w")) == ["n"]
    (warning,) = warnings_of(caplog)
    assert warning.startswith(f"checkpoint database {db} is locked by another process")
    assert "waiting up to 29 s more" in warning
    assert caplog.records[0].levelname == "WARNING"


async def test_a_lock_held_past_the_timeout_is_a_checkpoint_error_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """timeout= bounds the wait; the error says the file is still locked by another process."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db, timeout=1.5) as cp:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(CheckpointError, match="still locked by another process"):
                await cp.save_node("w", "n", done(1))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert len(warnings_of(caplog)) == 1


# -- values nested too deeply -------------------------------------------------------------


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


async def test_a_deeply_nested_result_fails_its_node_naming_it(tmp_path: Path) -> None:
    """A result nested 1,000 levels fails its node (not the run) with ResultNotSerializable."""

    async def deep(task: Any) -> list[Any]:
        return nested(1000)

    g = WorkflowGraph("g").add_node("deep", deep).add_node("fine", Recorder().agent("fine"))
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        result = await ex.execute(g, input="q")
        stored = await ex.checkpointer.node_results(result.workflow_id)  # type: ignore[union-attr]
    error = result.results["deep"]["error"]
    assert error is not None
    assert error.startswith("ResultNotSerializable: cannot store the result of node 'deep'")
    assert "nested more than 200 levels deep" in error
    assert result.results["fine"]["status"] == "succeeded"
    assert (stored["deep"]["status"], stored["deep"]["content"]) == ("failed", None)


async def test_a_deeply_nested_input_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """An input nested 1,000 levels: ResultNotSerializable for the input; no run recorded."""
    rec = Recorder()
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        with pytest.raises(ResultNotSerializable, match=r"the run's input.* nested") as caught:
            await ex.execute(pipeline(rec), input=nested(1000))
        assert await ex.checkpointer.list_runs() == []  # type: ignore[union-attr]
    assert caught.value.node is None
    assert rec.calls == []
