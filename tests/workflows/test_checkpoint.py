"""Durable runs: checkpoints, resume, and what a checkpointer refuses."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.core.errors import (
    CheckpointError,
    ConfigurationError,
    GraphMismatchError,
    ResultNotSerializable,
    RunNotFoundError,
)
from heddle.workflows.checkpoint import (
    Checkpointer,
    SQLiteCheckpointer,
    default_database_path,
)
from heddle.workflows.context import NodeResult

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
        assert stored == {name: dict(r) for name, r in result.results.items()}
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
        wait: bool = True,
        owner: str | None = None,
    ) -> None:
        if wait:
            self.holding.set()
            await self.release.wait()
        await super().save_node(workflow_id, node, result, wait=wait, owner=owner)
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
    """A result that is not JSON is refused: the node fails, its dependents are skipped."""

    async def returns_a_set(task: Any) -> set[int]:
        return {1, 2}

    g = WorkflowGraph("g").add_node("bad", returns_a_set).add_node("after", Recorder().agent("x"))
    g.add_edge("bad", "after").add_node("fine", Recorder().agent("fine"))
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        result = await ex.execute(g, input="q")
        stored = await ex.checkpointer.node_results(result.workflow_id)  # type: ignore[union-attr]
    bad = result.results["bad"]
    assert bad["status"] == "failed"
    assert bad["error"] is not None
    assert bad["error"].startswith("ResultNotSerializable: the result of node 'bad'")
    assert result.results["after"]["status"] == "skipped"
    assert result.results["fine"]["status"] == "success"
    assert (stored["bad"]["status"], stored["bad"]["content"]) == ("failed", None)


async def test_a_non_json_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Durable runs store their input, so it must be JSON; nothing runs otherwise."""
    rec = Recorder()
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        with pytest.raises(ResultNotSerializable, match="input of workflow"):
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
    result = NodeResult(content=1, status="success", error=None, attempts=1, duration=0.0)
    with pytest.raises(CheckpointError, match="closed"):
        await cp.save_node("w", "n", result)


async def test_an_unreadable_database_is_a_checkpoint_error_naming_it(tmp_path: Path) -> None:
    """A file that is not SQLite gives a CheckpointError with its path, and is left as is."""
    db = tmp_path / "runs.db"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    cp = SQLiteCheckpointer(db)
    with pytest.raises(CheckpointError, match=str(db)):
        await cp.list_runs()
    await cp.aclose()
    assert db.read_bytes() == before


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
    result = NodeResult(content=1, status="success", error=None, attempts=1, duration=0.0)
    await asyncio.gather(*(cp.save_node("w", f"n{i}", result) for i in range(200)))
    assert len(await cp.node_results("w")) == 200
    assert commits < 50
    await cp.aclose()
