"""A run killed mid-way with SIGKILL is finished by resume() in another process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("crash_workflow.py")
NODES = {"load", "clean", "split", "w0", "w1", "w2", "w3", "merge", "publish"}


def start(mode: str, db: Path, side: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
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


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [2, 5])
def test_sigkilled_run_is_resumed_without_rerunning_checkpointed_nodes(
    tmp_path: Path, kill_after: int
) -> None:
    """Nodes checkpointed before the kill never run again; the resumed run succeeds."""
    db, side = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    first = start("execute", db, side)
    deadline = time.monotonic() + 30
    while len(ran(side)) < kill_after:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run made no progress"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)  # reap it and close its pipes
    assert first.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        checkpointed = {
            node
            for (node,) in conn.execute(
                "SELECT node FROM heddle_node_results WHERE status = 'success'"
            )
        }
        (status,) = conn.execute("SELECT status FROM heddle_runs").fetchone()
    assert status == "running"  # the process died: nobody wrote an end
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
