"""The Redis examples of docs/scale-out.md run against a real Redis and print what they say.

They are fenced ```py, not ```python, so tests/test_docs.py (which has no
Redis skip) leaves them to this test, which skips without Redis (fails in CI).
Each run swaps the examples' "myapp" namespace and channel for a fresh one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

redis = pytest.importorskip("redis", reason="needs the redis package: pip install heddle[redis]")

DOC = Path(__file__).resolve().parents[2] / "docs" / "scale-out.md"
REDIS_URL = "redis://127.0.0.1:6379/0"  # what the examples use
BLOCK = re.compile(r"^```py\n(.*?)^```", re.DOTALL | re.MULTILINE)
PRINT = re.compile(r"^\s*print\(.*\)\s+#\s?(.*)$")


def redis_examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Redis\n", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in BLOCK.finditer(section)]


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    """A fresh namespace on the docs' Redis, deleted after the test."""
    return redis_namespace


def test_the_redis_section_has_examples() -> None:
    """The page's Redis section has at least one runnable example."""
    assert redis_examples()


@pytest.mark.parametrize("index", range(len(redis_examples())))
def test_redis_example_runs(index: int, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The example runs; each 'print(...)  # text' line's text is printed, in that order."""
    code = redis_examples()[index].replace('"myapp"', repr(namespace))
    exec(compile(code, f"docs/scale-out.md#redis-{index}", "exec"), {"__name__": "__doc__"})
    out = capsys.readouterr().out.splitlines()
    expected = [m.group(1).strip() for line in code.splitlines() if (m := PRINT.match(line))]
    rest = iter(out)
    assert all(any(line == want for line in rest) for want in expected), (expected, out)
