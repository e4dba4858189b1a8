"""Every Python example in the README and docs/ runs and prints what its comments say."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PRINT = re.compile(r"^\s*print\(.*\)\s+#\s?(.*)$")


def examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for k, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
            found.append((f"{path.relative_to(ROOT)}#{k}", match.group(1)))
    return found


def is_subsequence(expected: list[str], lines: list[str]) -> bool:
    rest = iter(lines)
    return all(any(line == want for line in rest) for want in expected)


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_doc_example_runs(where: str, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The example runs; each 'print(...)  # text' line's text is printed, in that order."""
    # A real module, as a script would have: dataclasses and pickling look it up.
    module = types.ModuleType("__doc_example__")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, where, "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    out = capsys.readouterr().out.splitlines()
    expected = [m.group(1).strip() for line in code.splitlines() if (m := PRINT.match(line))]
    assert is_subsequence(expected, out), f"expected {expected} in order within {out}"


def test_every_doc_page_has_a_runnable_example() -> None:
    """Each page of docs/ contributes at least one example, so the test above is not vacuous."""
    pages = {where.split("#")[0] for where, _ in examples()}
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= pages | {
        "docs/cli.md",
        "docs/scale-out.md",
    }


def test_readme_shows_the_two_commands() -> None:
    """The quick start is exactly make demo and make test."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme
    assert "make test" in readme
