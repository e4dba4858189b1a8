"""docs/memory.md: every Python example runs, from any directory, and prints what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "memory.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
EXAMPLES = BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_memory_doc_has_examples() -> None:
    """The doc is found and shows code (so the parametrized test below is not vacuous)."""
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"memory.md#{k}" for k in range(len(EXAMPLES))])
@pytest.mark.parametrize("with_home", [True, False], ids=["HEDDLE_HOME", "dot-heddle"])
def test_memory_doc_example_runs_and_prints_its_comments(
    code: str,
    with_home: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each example runs with or without HEDDLE_HOME, writes only under it (or ./.heddle), and
    every print() with a trailing '# text' comment, indented or not, prints that text."""
    monkeypatch.chdir(tmp_path)
    if not with_home:
        monkeypatch.delenv("HEDDLE_HOME")
    exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_example__"})
    expected = [
        line.split("#", 1)[1].strip()
        for line in code.splitlines()
        if line.strip().startswith("print(") and "#" in line
    ]
    assert capsys.readouterr().out.splitlines() == expected
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written <= ({"heddle-home"} if with_home else {".heddle"})
