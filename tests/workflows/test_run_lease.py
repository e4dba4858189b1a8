"""Run leases: one owner per running run, renewed while it runs, taken over only when gone."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.core.errors import (
    CheckpointError,
    ConfigurationError,
    LeaseLostError,
    RunInProgressError,
    RunNotFoundError,
)
from heddle.workflows.checkpoint import RunLease, RunRecord, SQLiteCheckpointer, _this_site
from heddle.workflows.context import NodeResult

NO_RETRY = RetryPolicy(max_attempts=1)


def gated(started: asyncio.Event, release: asyncio.Event) -> Any:
    async def wait(task: Any) -> str:
        started.set()
        await release.wait()
        return "released"

    return wait


async def held_run(
    db: Path, lease: float = 30.0
) -> tuple[asyncio.Task[Any], asyncio.Event, WorkflowExecutor]:
    """A durable run started in the background, blocked in its only node until released."""
    started, release = asyncio.Event(), asyncio.Event()
    graph = WorkflowGraph("held").add_node("gate", gated(started, release))
    ex = WorkflowExecutor(checkpointer=SQLiteCheckpointer(db, lease=lease), retry=NO_RETRY)
    task = asyncio.create_task(ex.execute(graph, workflow_id="held-1"))
    await started.wait()
    return task, release, ex


def graph_of_held() -> WorkflowGraph:
    return WorkflowGraph("held").add_node("gate", gated(asyncio.Event(), asyncio.Event()))


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


UPPER = WorkflowGraph("held").add_node("gate", str.upper)


def record(workflow_id: str, lease: RunLease | None) -> RunRecord:
    return RunRecord(
        workflow_id,
        "held",
        UPPER.fingerprint(),
        "x",
        ("gate",),
        "running",
        datetime.now(UTC),
        lease=lease,
    )


async def test_a_running_run_is_owned_by_its_process_and_released_at_the_end(
    tmp_path: Path,
) -> None:
    """While running: state running, owner host/pid/token; afterwards: no lease, state = status."""
    db = tmp_path / "runs.db"
    task, release, ex = await held_run(db)
    async with SQLiteCheckpointer(db) as other:
        during = await other.get_run("held-1")
        assert during is not None and during.lease is not None
        host, pid, token = during.lease.owner.split("/")
        assert (host, int(pid), len(token)) == (socket.gethostname(), os.getpid(), 8)
        assert during.state == "running" and during.lease.alive()
        release.set()
        assert (await task).ok
        after = await other.get_run("held-1")
        assert after is not None
        assert (after.lease, after.state, after.nodes_done) == (None, "succeeded", 1)
    await ex.aclose()


async def test_resume_is_refused_while_the_owner_runs_it(tmp_path: Path) -> None:
    """A second executor cannot resume a live run; once it has finished, resume replays it."""
    db = tmp_path / "runs.db"
    task, release, ex = await held_run(db)
    async with WorkflowExecutor(checkpointer=db) as second:
        with pytest.raises(RunInProgressError, match="'held-1' is being run by") as caught:
            await second.resume("held-1", graph_of_held())
        assert caught.value.workflow_id == "held-1"
        assert caught.value.owner.split("/")[1] == str(os.getpid())
        release.set()
        assert (await task).ok
        replayed = await second.resume("held-1", graph_of_held())
        assert replayed.ok and replayed.content("gate") == "released"
    await ex.aclose()


async def test_the_owner_renews_its_lease_while_the_run_goes_on(tmp_path: Path) -> None:
    """With a 0.3 s lease, a node that runs on keeps the run owned: the lease moves forward."""
    db = tmp_path / "runs.db"
    task, release, ex = await held_run(db, lease=0.3)
    async with SQLiteCheckpointer(db) as other:
        first = await other.get_run("held-1")
        assert first is not None and first.lease is not None
        later = first
        async with asyncio.timeout(30):  # renewed every 0.1 s: wait for one, not for a time
            while later.lease is not None and later.lease.until <= first.lease.until:
                await asyncio.sleep(0.05)
                found = await other.get_run("held-1")
                assert found is not None
                later = found
        assert later.lease is not None
        assert later.lease.owner == first.lease.owner
        assert later.lease.until > first.lease.until
        assert later.state == "running"
    release.set()
    assert (await task).ok
    await ex.aclose()


async def test_an_owner_that_lost_its_run_stops_and_records_nothing_more(
    tmp_path: Path,
) -> None:
    """Another process took the run over: the run raises LeaseLostError, the record stays theirs."""
    db = tmp_path / "runs.db"
    task, _release, ex = await held_run(db, lease=0.3)
    with sqlite3.connect(db) as conn:  # what a claim from another machine writes
        conn.execute(
            "UPDATE heddle_runs SET owner = 'elsewhere/7/abcd0123', owner_site = 'x', "
            "lease_until = ? WHERE workflow_id = 'held-1'",
            ((datetime.now(UTC) + timedelta(minutes=5)).isoformat(),),
        )
    with pytest.raises(LeaseLostError, match="taken over by elsewhere/7/abcd0123") as caught:
        await asyncio.wait_for(task, timeout=10)
    assert caught.value.owner == "elsewhere/7/abcd0123"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    async with SQLiteCheckpointer(db) as other:
        after = await other.get_run("held-1")
        assert after is not None and after.lease is not None
        assert (after.status, after.lease.owner) == ("running", "elsewhere/7/abcd0123")
        assert await other.node_results("held-1") == {}
    await ex.aclose()


async def test_a_run_taken_over_then_ended_reports_no_owner(tmp_path: Path) -> None:
    """If the run is no longer running at all, LeaseLostError says so."""
    db = tmp_path / "runs.db"
    task, _release, ex = await held_run(db, lease=0.3)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE heddle_runs SET status = 'failed', owner = NULL, owner_site = NULL, "
            "lease_until = NULL WHERE workflow_id = 'held-1'"
        )
    with pytest.raises(LeaseLostError, match="no longer marked running") as caught:
        await asyncio.wait_for(task, timeout=10)
    assert caught.value.owner is None
    await ex.aclose()


async def test_cancelling_an_owned_run_is_still_a_cancellation(tmp_path: Path) -> None:
    """A caller's cancel is not mistaken for a lost lease; the run ends cancelled, unowned."""
    db = tmp_path / "runs.db"
    task, _release, ex = await held_run(db)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with SQLiteCheckpointer(db) as other:
        after = await other.get_run("held-1")
        assert after is not None and (after.status, after.lease) == ("cancelled", None)
    await ex.aclose()


async def test_a_dead_owner_on_this_machine_is_seen_at_once(tmp_path: Path) -> None:
    """A lease still valid for an hour, but its process is gone: interrupted, and claimable."""
    db = tmp_path / "runs.db"
    gone = RunLease(
        f"{socket.gethostname()}/{dead_pid()}/00000000",
        _this_site(),
        datetime.now(UTC) + timedelta(hours=1),
    )
    assert not gone.alive()
    async with SQLiteCheckpointer(db) as checkpointer:
        await checkpointer.create_run(record("held-1", gone))
        found = await checkpointer.get_run("held-1")
        assert found is not None and found.state == "interrupted"
    async with WorkflowExecutor(checkpointer=db) as ex:
        result = await ex.resume("held-1", UPPER)
    assert result.ok and result.content("gate") == "X"


def test_a_zombie_owner_is_gone() -> None:
    """A killed child its parent has not reaped yet does not hold its run."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease = RunLease(f"h/{child.pid}/t", _this_site(), datetime.now(UTC) + timedelta(hours=1))
        assert lease.alive()
        child.kill()
        for _ in range(200):
            if not lease.alive():
                break
            time.sleep(0.05)
        assert not lease.alive()
    finally:
        child.kill()
        child.wait()


async def test_an_owner_on_another_machine_holds_the_run_until_its_lease_runs_out(
    tmp_path: Path,
) -> None:
    """Another site: only the lease counts. Live: refused; run out: claimable."""
    db = tmp_path / "runs.db"
    pid = dead_pid()  # dead here, but this pid means nothing on another machine
    remote = RunLease(f"far/{pid}/t", "another-site", datetime.now(UTC) + timedelta(hours=1))
    assert remote.alive()
    expired = RunLease(f"far/{pid}/t", "another-site", datetime.now(UTC) - timedelta(seconds=1))
    assert not expired.alive()
    async with SQLiteCheckpointer(db) as checkpointer:
        await checkpointer.create_run(record("live", remote))
        await checkpointer.create_run(record("expired", expired))
        mine = RunLease.take(30)
        with pytest.raises(RunInProgressError, match="far/"):
            await checkpointer.claim_run("live", mine)
        before = await checkpointer.claim_run("expired", mine)
        assert before.lease == expired and before.state == "interrupted"
        now = await checkpointer.get_run("expired")
        assert now is not None and now.lease == mine and now.state == "running"
        assert await checkpointer.claim_run("expired", mine)  # the owner may claim again
        with pytest.raises(RunNotFoundError, match="'ghost'"):
            await checkpointer.claim_run("ghost", mine)


async def test_renewal_and_finish_apply_only_to_the_owner(tmp_path: Path) -> None:
    """renew_lease() is False for anyone else; finish_run(owner=...) by another raises."""
    db = tmp_path / "runs.db"
    mine, theirs = RunLease.take(30), RunLease.take(30)
    async with SQLiteCheckpointer(db) as checkpointer:
        await checkpointer.create_run(record("r", mine))
        assert await checkpointer.renew_lease("r", mine.renewed(60))
        assert not await checkpointer.renew_lease("r", theirs)
        assert not await checkpointer.renew_lease("ghost", mine)
        with pytest.raises(LeaseLostError, match=f"taken over by {mine.owner}") as lost:
            await checkpointer.finish_run("r", "failed", datetime.now(UTC), owner=theirs.owner)
        assert (lost.value.workflow_id, lost.value.owner) == ("r", mine.owner)
        still = await checkpointer.get_run("r")
        assert still is not None and still.status == "running"
        await checkpointer.finish_run("r", "failed", datetime.now(UTC), owner=mine.owner)
        done = await checkpointer.get_run("r")
        assert done is not None and (done.status, done.lease) == ("failed", None)
        assert not await checkpointer.renew_lease("r", mine)  # ended runs are not renewed


def success(content: Any) -> NodeResult:
    return NodeResult(content=content, status="succeeded", error=None, attempts=1, duration=0.0)


async def taken_over(checkpointer: SQLiteCheckpointer) -> tuple[RunLease, RunLease]:
    """Run "r" created by one owner, then claimed by another once the first one's lease ran out."""
    old = RunLease.take(30)
    await checkpointer.create_run(record("r", replace(old, until=datetime.now(UTC))))
    new = RunLease.take(30)
    await checkpointer.claim_run("r", new)
    return old, new


async def test_a_waited_save_by_an_owner_that_lost_the_run_raises_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """save_node(owner=old) after a takeover: LeaseLostError naming the new owner, no result."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as checkpointer:
        old, new = await taken_over(checkpointer)
        with pytest.raises(LeaseLostError, match=f"taken over by {new.owner}") as lost:
            await checkpointer.save_node("r", "gate", success("old"), owner=old.owner)
        assert (lost.value.workflow_id, lost.value.owner) == ("r", new.owner)
        await checkpointer.save_node("r", "gate", success("new"), owner=new.owner)
        assert (await checkpointer.node_results("r"))["gate"]["content"] == "new"


async def test_lazy_writes_by_an_owner_that_lost_the_run_are_dropped(tmp_path: Path) -> None:
    """Events and unwaited results of the old owner vanish; the new owner's land."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as checkpointer:
        old, new = await taken_over(checkpointer)
        await checkpointer.add_event("r", {"by": "old"}, owner=old.owner)
        await checkpointer.save_node("r", "other", success("old"), wait=False, owner=old.owner)
        await checkpointer.add_event("r", {"by": "new"}, owner=new.owner)
        await checkpointer.save_node("r", "gate", success("new"), owner=new.owner)  # flushes
        assert await checkpointer.events("r") == [{"by": "new"}]
        assert list(await checkpointer.node_results("r")) == ["gate"]


async def test_a_run_ended_by_its_new_owner_fences_out_the_old_one(tmp_path: Path) -> None:
    """Once the run is finished, the old owner learns it has no owner at all."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as checkpointer:
        old, new = await taken_over(checkpointer)
        await checkpointer.finish_run("r", "succeeded", datetime.now(UTC), owner=new.owner)
        with pytest.raises(LeaseLostError, match="no longer marked running") as lost:
            await checkpointer.save_node("r", "gate", success("old"), owner=old.owner)
        assert lost.value.owner is None
        with pytest.raises(LeaseLostError):
            await checkpointer.finish_run("r", "failed", datetime.now(UTC), owner=old.owner)
        done = await checkpointer.get_run("r")
        assert done is not None and done.status == "succeeded"


async def test_a_paused_owner_nobody_claimed_from_renews_and_goes_on(tmp_path: Path) -> None:
    """Renewal checks the owner, not the expiry: a lease that ran out unclaimed is renewed."""
    async with SQLiteCheckpointer(tmp_path / "runs.db") as checkpointer:
        mine = RunLease.take(30)
        await checkpointer.create_run(record("r", replace(mine, until=datetime.now(UTC))))
        assert await checkpointer.renew_lease("r", mine.renewed(30))
        await checkpointer.save_node("r", "gate", success("X"), owner=mine.owner)
        assert (await checkpointer.node_results("r"))["gate"]["content"] == "X"


async def test_event_numbers_come_from_the_database_whoever_writes(tmp_path: Path) -> None:
    """Two checkpointers (two processes) adding events to one run number them 1, 2, 3..."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as first, SQLiteCheckpointer(db) as second:
        await first.create_run(record("r", None))
        for n, writer in enumerate([first, first, second, first, second, second, first]):
            await writer.add_event("r", {"n": n})
            await writer.save_node("r", f"n{n}", success(n))  # commits the event
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, event FROM heddle_events ORDER BY seq").fetchall()
    assert rows == [(n + 1, f'{{"n": {n}}}') for n in range(7)]


async def test_a_failing_renewal_is_logged_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpointer that cannot renew for a while does not end the run."""
    db = tmp_path / "runs.db"
    checkpointer = SQLiteCheckpointer(db, lease=0.15)
    real = checkpointer.renew_lease
    failures = 0

    async def flaky(workflow_id: str, lease: RunLease) -> bool:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise OSError("disk hiccup")
        return await real(workflow_id, lease)

    checkpointer.renew_lease = flaky  # type: ignore[method-assign]

    async def slow(task: Any) -> str:
        await asyncio.sleep(0.5)
        return "done"

    async with WorkflowExecutor(checkpointer=checkpointer) as ex:
        result = await ex.execute(WorkflowGraph("slow").add_node("n", slow))
    await checkpointer.aclose()
    assert result.ok and failures == 2
    assert "could not renew its lease: disk hiccup" in caplog.text


async def test_a_database_from_before_leases_is_upgraded_in_place(tmp_path: Path) -> None:
    """Opening adds the lease columns; the old running run reads interrupted and resumes."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            """
            CREATE TABLE heddle_runs (
                workflow_id TEXT PRIMARY KEY, graph_name TEXT NOT NULL,
                fingerprint TEXT NOT NULL, input TEXT NOT NULL, nodes TEXT NOT NULL,
                status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT
            );
            """
        )
        graph = UPPER
        conn.execute(
            "INSERT INTO heddle_runs VALUES ('old-1', 'held', ?, '\"x\"', '[\"gate\"]', "
            "'running', ?, NULL)",
            (graph.fingerprint(), datetime.now(UTC).isoformat()),
        )
    async with WorkflowExecutor(checkpointer=db) as ex:
        assert ex.checkpointer is not None
        (old,) = await ex.checkpointer.list_runs()
        assert (old.workflow_id, old.state, old.lease) == ("old-1", "interrupted", None)
        result = await ex.resume("old-1", graph)
    assert result.ok and result.content("gate") == "X"
    with sqlite3.connect(db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(heddle_runs)")}
    assert {"owner", "owner_site", "lease_until"} <= columns


@pytest.mark.parametrize("bad", [0, -1.0, True, "30", float("nan")])
def test_a_bad_lease_is_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="lease must be seconds > 0") as caught:
        SQLiteCheckpointer(tmp_path / "x.db", lease=bad)  # type: ignore[arg-type]
    assert caught.value.parameter == "lease"


def test_an_owner_not_written_as_host_pid_token_counts_by_its_lease() -> None:
    """A lease written by some other implementation is trusted until it runs out."""
    later = datetime.now(UTC) + timedelta(hours=1)
    assert RunLease("worker-7", _this_site(), later).alive()
    assert not RunLease("worker-7", _this_site(), datetime.now(UTC)).alive()


def test_a_process_of_another_user_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.kill(pid, 0) refused with EPERM means the process exists."""

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    lease = RunLease(f"h/{dead_pid()}/t", _this_site(), datetime.now(UTC) + timedelta(hours=1))
    assert lease.alive()


async def test_a_damaged_database_fails_claims_and_renewals_naming_it(tmp_path: Path) -> None:
    """With its runs table gone, claim_run and renew_lease raise CheckpointError with the path."""
    db = tmp_path / "runs.db"
    async with SQLiteCheckpointer(db) as checkpointer:
        await checkpointer.list_runs()
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE heddle_runs")
        lease = RunLease.take(30)
        with pytest.raises(CheckpointError, match=str(db)):
            await checkpointer.claim_run("r", lease)
        with pytest.raises(CheckpointError, match=str(db)):
            await checkpointer.renew_lease("r", lease)
