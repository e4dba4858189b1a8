"""The examples of docs/messaging.md and docs/container.md run and print what they claim.

tests/test_docs.py runs every block too, but checks only unindented prints;
these docs print from inside ``async def main()``, so every ``print(...)  # out``
line is checked here, indented or not, in order.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "messaging.md", ROOT / "docs" / "container.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PRINT = re.compile(r"^\s*print\(.*\)\s+#\s?(.*)$")


def blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for k, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
            found.append((f"{path.name}#{k}", match.group(1)))
    return found


def test_each_doc_has_examples() -> None:
    """Both documents contain Python examples (so the test below is not vacuous)."""
    names = {where.split("#")[0] for where, _ in blocks()}
    assert names == {"messaging.md", "container.md"}


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_doc_example_prints_what_its_comments_say(
    where: str, code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example runs; every 'print(...)  # text' line prints exactly text, in order."""
    exec(compile(code, where, "exec"), {"__name__": "__doc_example__"})
    expected = [m.group(1).strip() for line in code.splitlines() if (m := PRINT.match(line))]
    assert capsys.readouterr().out.splitlines() == expected
