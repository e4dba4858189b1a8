"""Child processes for the crash tests: start a workflow script, wait for its side effects."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SRC = str(Path(__file__).parents[2] / "src")


def start_child(script: Path, *args: object, **env: str) -> subprocess.Popen[str]:
    """Run ``script`` with ``args`` in a fresh interpreter that imports this checkout."""
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, **env},
    )


def wait_until(
    process: subprocess.Popen[str], done: Callable[[], bool], seconds: float = 30
) -> None:
    """Poll ``done`` until it holds; fail if the child exits first or makes no progress."""
    deadline = time.monotonic() + seconds
    while not done():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)
