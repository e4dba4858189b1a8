"""A 1,000-item map SIGKILLed half-way resumes and runs only the items not committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from children import SRC, start_child, wait_until

SCRIPT = Path(__file__).with_name("map_workflow.py")
ITEMS = 1_000


def start(mode: str, db: Path, side: Path) -> subprocess.Popen[str]:
    return start_child(SCRIPT, mode, db, "map-1", side)


def ran(side: Path) -> list[tuple[int, int]]:
    if not side.exists():
        return []
    return [
        (int(pid), int(k)) for pid, k in (line.split() for line in side.read_text().splitlines())
    ]


@pytest.mark.slow
def test_a_map_killed_half_way_runs_only_the_items_not_committed(tmp_path: Path) -> None:
    """Items committed before the kill are replayed; the rest run once more; the sum is right."""
    db, side = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    first = start("execute", db, side)
    wait_until(first, lambda: len(ran(side)) >= ITEMS // 2, seconds=60)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        committed = {
            item
            for (item,) in conn.execute(
                "SELECT item FROM heddle_node_results "
                "WHERE node = 'square' AND item >= 0 AND status = 'succeeded'"
            )
        }
    assert ITEMS // 4 < len(committed) < ITEMS

    second = start("resume", db, side)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert out.split() == ["succeeded", str(sum(k * k for k in range(ITEMS)))]
    by_second = {k for pid, k in ran(side) if pid == second.pid}
    assert not (by_second & committed)  # nothing committed ran again
    assert by_second | committed == set(range(ITEMS))


def test_a_map_result_is_read_back_by_another_process(tmp_path: Path) -> None:
    """The items' statuses are stored as plain words: a fresh process reads the row back."""
    db = tmp_path / "runs.db"
    code = (
        "import asyncio\n"
        "from heddle import WorkflowExecutor, WorkflowGraph\n"
        "async def three(t): return [1, 2, 3]\n"
        "async def double(k): return 2 * k\n"
        "g = WorkflowGraph('g').add_node('find', three).add_map('each', double)\n"
        "g.add_edge('find', 'each')\n"
        "async def main():\n"
        f"    async with WorkflowExecutor(checkpointer={str(db)!r}) as ex:\n"
        "        await ex.execute(g, workflow_id='r-1')\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    read = (
        "import asyncio\n"
        "from heddle.workflows import SQLiteCheckpointer\n"
        "async def main():\n"
        f"    async with SQLiteCheckpointer({str(db)!r}) as cp:\n"
        "        r = (await cp.node_results('r-1'))['each']\n"
        "        print(r['content'], [e['status'] for e in r['items']])\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", read],
        check=True,
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == "[2, 4, 6] ['succeeded', 'succeeded', 'succeeded']"
