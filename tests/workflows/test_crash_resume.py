"""Runs whose process dies or stalls are finished by resume() in another process, once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from heddle.workflows import SQLiteCheckpointer

SCRIPT = Path(__file__).with_name("crash_workflow.py")
NODES = {"load", "clean", "split", "w0", "w1", "w2", "w3", "merge", "publish"}


def start(mode: str, db: Path, side: Path, node_seconds: float = 0.15) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
        "CRASH_NODE_SECONDS": str(node_seconds),
    }
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(db), "crash-1", str(side)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def ran(side: Path) -> list[tuple[int, str]]:
    if not side.exists():
        return []
    return [
        (int(pid), name)
        for pid, name in (line.split() for line in side.read_text().split("\n") if line)
    ]


def state_of(db: Path) -> str:
    async def read() -> str:
        async with SQLiteCheckpointer(db) as checkpointer:
            record = await checkpointer.get_run("crash-1")
            assert record is not None
            return record.state

    return asyncio.run(read())


def wait_for_nodes(process: subprocess.Popen[str], side: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(ran(side)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [2, 5])
def test_sigkilled_run_is_resumed_without_rerunning_checkpointed_nodes(
    tmp_path: Path, kill_after: int
) -> None:
    """Nodes checkpointed before the kill never run again; the resumed run succeeds."""
    db, side = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    first = start("execute", db, side)
    wait_for_nodes(first, side, kill_after)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)  # reap it and close its pipes
    assert first.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        checkpointed = {
            node
            for (node,) in conn.execute(
                "SELECT node FROM heddle_node_results WHERE status = 'succeeded'"
            )
        }
        (status,) = conn.execute("SELECT status FROM heddle_runs").fetchone()
    assert status == "running"  # the process died: nobody wrote an end
    assert state_of(db) == "interrupted"  # ... and its lease is seen to be dead
    assert checkpointed, "nothing was checkpointed before the kill"
    assert checkpointed < NODES

    second = start("resume", db, side)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out.strip() == "succeeded"

    by_second = {name for pid, name in ran(side) if pid == second.pid}
    assert not (by_second & checkpointed)
    assert {name for _, name in ran(side)} == NODES
    assert by_second >= NODES - {name for pid, name in ran(side) if pid == first.pid}


@pytest.mark.slow
def test_a_live_run_is_not_resumed_and_a_dead_one_is_resumed_once(tmp_path: Path) -> None:
    """Resumes are refused while the owner lives; after its death, racing resumers run it once."""
    db, side = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    first = start("execute", db, side, node_seconds=2.0)  # about 12 s if left alone
    wait_for_nodes(first, side, 1)
    refused = start("resume", db, side)
    out, err = refused.communicate(timeout=60)
    assert (refused.returncode, out.strip()) == (3, "in-progress"), err
    assert first.poll() is None, "the first run ended before the test could race it"
    assert state_of(db) == "running"

    first.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while state_of(db) != "interrupted":  # dead but not reaped yet: a zombie is gone too
        assert time.monotonic() < deadline, "the killed owner still reads as alive"
        time.sleep(0.05)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL

    # Slow nodes keep the winner running long after the loser has started.
    racers = [start("resume", db, side, node_seconds=1.0) for _ in range(2)]
    outcomes = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert sorted(outcomes) == ["in-progress", "succeeded"]  # exactly one of them ran it
    winner, loser = racers if outcomes[0] == "succeeded" else racers[::-1]
    by_pid = {pid for pid, _ in ran(side)}
    assert loser.pid not in by_pid and winner.pid in by_pid
    assert {name for _, name in ran(side)} == NODES
    assert state_of(db) == "succeeded"


LEASED = Path(__file__).with_name("lease_workflow.py")


def start_leased(mode: str, db: Path, side: Path, marker: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
        "LEASE_SLOW_SECONDS": "1.5",
    }
    return subprocess.Popen(
        [sys.executable, str(LEASED), mode, str(db), "leased-1", str(side), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] == "T"


def pause_outside_a_write(process: subprocess.Popen[str], db: Path) -> None:
    """SIGSTOP ``process`` at a moment it holds no write lock on ``db`` (else the resume hangs)."""
    deadline = time.monotonic() + 30
    while True:
        process.send_signal(signal.SIGSTOP)
        while not stopped(process.pid):
            assert time.monotonic() < deadline, "the process did not stop"
        probe = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)  # caught mid-commit: let it finish, try again
            assert time.monotonic() < deadline, "the process never let go of the database"
            time.sleep(0.01)
        finally:
            probe.close()


def database(db: Path) -> tuple[list[Any], ...]:
    """Everything recorded in ``db``, for comparing before and after."""
    with sqlite3.connect(db) as conn:
        return tuple(
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("heddle_runs", "heddle_node_results", "heddle_events")
        )


@pytest.mark.slow
def test_an_owner_paused_past_its_lease_writes_nothing_after_another_took_the_run(
    tmp_path: Path,
) -> None:
    """A paused mid-node past its lease, B resumes and finishes: A wakes, stops, writes nothing."""
    db, side, marker = tmp_path / "runs.db", tmp_path / "side-effects.txt", tmp_path / "in-flight"
    first = start_leased("execute", db, side, marker)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():  # slow is in flight
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the run never reached its slow node"
            time.sleep(0.01)
        pause_outside_a_write(first, db)
        while True:  # until A's lease has run out
            with sqlite3.connect(db) as conn:
                (until,) = conn.execute("SELECT lease_until FROM heddle_runs").fetchone()
            if datetime.fromisoformat(until) < datetime.now(UTC):
                break
            assert time.monotonic() < deadline, "the paused owner's lease never ran out"
            time.sleep(0.05)

        second = start_leased("resume", db, side, marker)
        out, err = second.communicate(timeout=60)
        assert (second.returncode, out.strip()) == (0, "succeeded"), err
        recorded = database(db)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=60)

    assert first.returncode == 4 and out.startswith("lease-lost: "), (out, err)
    assert "Traceback" not in err and "sqlite3" not in err, err
    assert database(db) == recorded  # A wrote nothing once it woke up
    lines = [line.split() for line in side.read_text().splitlines()]
    by_a = [node for pid, _, node in lines if int(pid) == first.pid]
    by_b = [node for pid, _, node in lines if int(pid) == second.pid]
    assert by_a == ["first", "slow"]  # nothing started after the pause
    assert [pid for pid, _, _ in lines] == sorted(  # ... so all of A's lines come first
        (pid for pid, _, _ in lines), key=lambda pid: int(pid) != first.pid
    )
    assert sorted(by_b) == ["after", "side1", "side2", "slow"]
    runs, results, events = recorded
    assert [row[5] for row in runs] == ["succeeded"]
    stored = {
        row[1]: json.loads(row[5]) for row in results
    }  # (wid, node, iteration, item, status, result, seq)
    assert stored["slow"]["content"] == f"slow by {second.pid}"
    seqs = [row[1] for row in events]
    assert seqs == list(range(1, len(seqs) + 1))
