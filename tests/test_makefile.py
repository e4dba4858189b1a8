"""The quick start's two commands: what they install."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(target: str, tmp_path: Path) -> str:
    """The commands `make TARGET` would run on a fresh clone (nothing is executed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_make_demo_installs_heddle_alone(tmp_path: Path) -> None:
    """`make demo` on a fresh clone installs heddle without the test, Redis or Ray extras."""
    commands = _dry_run("demo", tmp_path)
    installs = [line for line in commands.splitlines() if "pip install" in line]
    assert installs and all(line.rstrip().endswith("-e .") for line in installs), installs
    assert "heddle demo" in commands


def test_make_test_installs_the_test_extras(tmp_path: Path) -> None:
    """`make test` installs the test extras before running the linters and pytest."""
    commands = _dry_run("test", tmp_path)
    assert "-e '.[test,redis,ray]'" in commands
    assert "pytest" in commands
