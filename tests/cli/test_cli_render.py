"""Rendering what workflows produce: control characters made visible, JSON, the status words."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.text import Text

from heddle.cli import cli
from heddle.cli._render import STATUS_STYLES, jsonable, make_console, node_table, to_json, visible
from heddle.workflows.status import NodeStatus, RunStatus

ATTACK = "\x1b[2J\x1b]0;pwned\x07"


class _Terminal(io.StringIO):
    """A text stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ATTACK, "\\x1b[2J\\x1b]0;pwned\\x07"),
        ("a\x00b\x7fc", "a\\x00b\\x7fc"),
        ("csi\x9b31m", "csi\\x9b31m"),  # C1 CSI: a sequence start on some terminals
        ("over\rwrite", "over\\rwrite"),
        ("lines\r\nkept\n\tand tabs", "lines\nkept\n\tand tabs"),
        ("abc\u202edcba", "abc\\u202edcba"),  # a bidi override reverses what follows
        ("C:\\new\\x1b", "C:\\new\\x1b"),  # backslashes are text
        ("naïve — ok ✓", "naïve — ok ✓"),
    ],
)
def test_visible_escapes_control_characters_and_keeps_line_breaks(text: str, expected: str) -> None:
    """ESC, BEL, DEL, C1, CR and bidi overrides are escaped; newlines, tabs and Unicode stay."""
    assert visible(text) == expected


def test_visible_on_one_line_escapes_newlines_and_tabs() -> None:
    """A one-line form cannot be broken by the value it shows."""
    assert visible("a\nb\tc\x1b", one_line=True) == "a\\nb\\tc\\x1b"


def test_to_json_has_no_raw_control_characters_and_reads_back_the_same() -> None:
    """JSON output escapes DEL, C1 and bidi controls too, and still decodes to the value."""
    value = {"text": ATTACK + "\x7f\x9b\u202e", "ok": "naïve"}
    text = to_json(value)
    assert not any(c in text for c in "\x1b\x07\x7f\x9b\u202e")
    assert "naïve" in text
    assert json.loads(text) == value


@dataclasses.dataclass
class _Report:
    title: str
    when: datetime


def test_to_json_falls_back_to_readable_forms_for_python_values() -> None:
    """Datetimes as ISO text, dataclasses as their fields, sets as lists, the rest as str()."""
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc = json.loads(to_json({"r": _Report("t", when), "s": {1}, "o": object.__new__(_Opaque)}))
    assert doc == {
        "r": {"title": "t", "when": "2026-01-02T03:04:05+00:00"},
        "s": [1],
        "o": "opaque",
    }
    assert jsonable({(1, 2): "tuple key"}) == "{(1, 2): 'tuple key'}"


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


@pytest.mark.parametrize("stream", [io.StringIO(), _Terminal()])
def test_console_never_prints_a_raw_control_character_from_a_value(stream: io.StringIO) -> None:
    """Even a Text built without visible() is escaped; a terminal keeps rich's own colour codes."""
    console = make_console(stream)
    console.print(Text("red " + ATTACK, style="red"))
    out = stream.getvalue()
    assert "red \\x1b[2J\\x1b]0;pwned" in out  # rich drops the BEL itself
    assert "\x07" not in out
    assert "\x1b[2J" not in out
    assert ("\x1b[31m" in out) == console.is_terminal


def test_every_node_and_run_status_has_a_style() -> None:
    """Each NodeStatus and RunStatus word, and pending, has a colour of its own."""
    for status in [*NodeStatus, *RunStatus, "pending"]:
        assert STATUS_STYLES[status]
    assert "success" not in STATUS_STYLES


def test_node_table_shows_a_succeeded_node_with_its_content() -> None:
    """A succeeded row reads 'succeeded' (the NodeStatus word), its attempts, time and content."""
    console = make_console(io.StringIO())
    result: dict[str, Any] = {
        "content": {"k": 1},
        "status": NodeStatus.SUCCEEDED,
        "error": None,
        "attempts": 2,
        "duration": 0.5,
    }
    with console.capture() as captured:
        console.print(node_table(["a"], {"a": result}))
    assert captured.get().splitlines()[2].split() == ["a", "succeeded", "2", "0.50s", '{"k":', "1}"]


def test_runs_status_takes_every_run_status_and_nothing_else(tmp_path: Path) -> None:
    """--status accepts each RunStatus word (interrupted included) and names them on a typo."""
    db = str(tmp_path / "none.db")
    for status in RunStatus:
        result = CliRunner().invoke(cli, ["runs", "--db", db, "--status", status.value])
        assert result.exit_code == 0, result.output
        assert f"no runs with status {status.value} recorded" in result.output
    wrong = CliRunner().invoke(cli, ["runs", "--db", db, "--status", "success"])
    assert wrong.exit_code == 2
    assert "'running', 'succeeded', 'failed', 'cancelled', 'interrupted'" in wrong.output
