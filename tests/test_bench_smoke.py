"""Every benchmark runs at a tiny size and prints numbers, so none can rot unnoticed.

No timing thresholds here: the numbers belong to ``make bench`` and
BENCHMARKS.md. LangGraph is an optional extra; without it the engine and
durable benchmarks print "langgraph not installed" rows and still pass.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is a top-level directory, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.__main__ import topics  # noqa: E402

TABLE_ROW_WITH_NUMBER = re.compile(r"^\|.*\|\s*-?\d[\d.,e+-]*\s*\|", re.MULTILINE)


def test_benchmark_topics_are_found() -> None:
    """The runner discovers the engine, durable, bus and memory benchmarks."""
    assert {"engine", "durable", "bus", "memory"} <= set(topics())


@pytest.mark.slow
@pytest.mark.parametrize("topic", topics())
def test_benchmark_runs_at_a_tiny_size_and_reports_numbers(topic: str) -> None:
    """main(quick=True) returns a Markdown table with at least one numeric cell."""
    module = importlib.import_module(f"bench.bench_{topic}")
    report = module.main(quick=True)
    assert isinstance(report, str)
    assert "|---" in report
    assert TABLE_ROW_WITH_NUMBER.search(report), report


@pytest.mark.slow
def test_ab_compares_a_commit_with_this_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    """bench.ab prints one row per workload with both timings and their ratio."""
    from bench import ab

    assert ab.main(["HEAD", "--runs", "1", "chain"]) == 0
    out = capsys.readouterr().out
    assert "| chain |" in out
    assert TABLE_ROW_WITH_NUMBER.search(out), out
