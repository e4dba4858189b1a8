"""A loop killed mid-iteration resumes in that iteration and re-runs nothing committed."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from children import start_child, wait_until

SCRIPT = Path(__file__).with_name("loop_workflow.py")
APPROVE_AT = 4
EVERY = {("write", i) for i in range(APPROVE_AT + 1)}
EVERY |= {("review", i) for i in range(APPROVE_AT + 1)} | {("publish", 0)}


def start(mode: str, db: Path, side: Path) -> subprocess.Popen[str]:
    return start_child(SCRIPT, mode, db, "loop-1", side)


def ran(side: Path) -> list[tuple[int, str, int]]:
    if not side.exists():
        return []
    lines = [line.split() for line in side.read_text().split("\n") if line]
    return [(int(pid), name, int(iteration)) for pid, name, iteration in lines]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [4, 7])
def test_a_loop_killed_in_iteration_k_resumes_in_iteration_k(
    tmp_path: Path, kill_after: int
) -> None:
    """Committed iterations are replayed, never re-run; the loop goes on where it was."""
    db, side = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    first = start("execute", db, side)
    wait_until(first, lambda: len(ran(side)) >= kill_after)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        committed = set(
            conn.execute(
                "SELECT node, iteration FROM heddle_node_results WHERE status = 'succeeded'"
            )
        )
    assert committed, "nothing was committed before the kill"
    assert committed < EVERY
    # Every iteration is its own row. An agent writes its side effect before its result
    # is committed, so all but the last of the side effects seen are committed.
    assert max(iteration for _, iteration in committed) >= (kill_after - 2) // 2

    second = start("resume", db, side)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out.split() == ["succeeded", "draft", str(APPROVE_AT)]

    by_second = {(name, i) for pid, name, i in ran(side) if pid == second.pid}
    assert not (by_second & committed)  # nothing committed runs again
    assert {(name, i) for _, name, i in ran(side)} == EVERY
    # The resume starts in the iteration the kill interrupted, not from the top.
    first_resumed = (
        min(i for name, i in by_second if name == "write")
        if any(name == "write" for name, _ in by_second)
        else None
    )
    last_committed_write = max(i for name, i in committed if name == "write")
    if first_resumed is not None:
        assert first_resumed > last_committed_write
