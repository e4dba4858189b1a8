"""The workflow input on the command line: JSON if it parses, else text; from a file or stdin."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from heddle.cli._errors import CLIError
from heddle.cli._input import MAX_INPUT_BYTES, parse_value, read_input


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ("42", 42),
        ("[1, 2.5]", [1, 2.5]),
        ("true", True),
        ("null", None),
        ('"42"', "42"),
        ("hello", "hello"),
        ("tidal power", "tidal power"),
        ("{not json", "{not json"),
        ("NaN", "NaN"),  # Python's json would say float('nan'); JSON has no NaN
        ("Infinity", "Infinity"),
    ],
)
def test_input_is_json_when_it_parses_as_json_else_the_text(text: str, value: Any) -> None:
    """--input 42 is an int, --input '{"a": 1}' a dict, --input hello the string."""
    assert parse_value(text) == value
    assert read_input(text, None) == value


def test_input_text_is_always_a_string() -> None:
    """--input-text forces the string, even when it looks like JSON or a file."""
    assert read_input(None, "42") == "42"
    assert read_input(None, "@notes.md") == "@notes.md"
    assert read_input(None, None) is None


def test_input_from_a_file_and_from_stdin_follows_the_same_rule(tmp_path: Path) -> None:
    """@FILE and - read the text, then take it as JSON if it parses, else as text."""
    (tmp_path / "doc.json").write_text('{"rows": [1, 2]}\n', encoding="utf-8")
    (tmp_path / "prompt.txt").write_text("Summarise:\nthe tides\n", encoding="utf-8")
    assert read_input(f"@{tmp_path / 'doc.json'}", None) == {"rows": [1, 2]}
    assert read_input(f"@{tmp_path / 'prompt.txt'}", None) == "Summarise:\nthe tides\n"
    assert read_input("-", None, stdin=io.BytesIO(b"[3]")) == [3]
    assert read_input("-", None, stdin=io.BytesIO("héllo".encode())) == "héllo"


@pytest.mark.parametrize(
    ("value", "text", "message"),
    [
        ("1", "1", "give --input or --input-text, not both"),
        ("@", None, "name a file after the @"),
        ("@missing.txt", None, "--input @missing.txt: no such file: missing.txt"),
        ("@.", None, "is a directory, not a file"),
    ],
)
def test_bad_input_options_are_usage_errors(
    value: str | None,
    text: str | None,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Each mistake is one message and exit code 2."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CLIError) as caught:
        read_input(value, text)
    assert message in caught.value.message
    assert caught.value.exit_code == 2


def test_input_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 text are named as such, not decoded into mojibake."""
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CLIError, match="is not UTF-8 text"):
        read_input(f"@{tmp_path / 'blob.bin'}", None)


def test_input_over_the_limit_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    """A file over 16 MiB is refused by its size: one clear error naming the size and the limit."""
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(MAX_INPUT_BYTES + 1024 * 1024)  # sparse: nothing to read, only a size
    big.chmod(0)  # reading it would fail (except as root): the size decides first
    with pytest.raises(CLIError) as caught:
        read_input(f"@{big}", None)
    assert "is 17.0 MiB, over the 16 MiB limit of a workflow input" in caught.value.message
    assert caught.value.exit_code == 2


def test_stdin_over_the_limit_is_refused_without_reading_it_all() -> None:
    """stdin has no size to check: heddle reads one byte past the limit, then stops."""
    stdin = io.BytesIO(b"x" * (MAX_INPUT_BYTES + 10))
    with pytest.raises(CLIError, match="over the 16 MiB limit"):
        read_input("-", None, stdin=stdin)
    assert stdin.tell() == MAX_INPUT_BYTES + 1
