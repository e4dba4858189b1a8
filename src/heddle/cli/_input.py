"""The workflow input from the command line: ``--input VALUE`` or ``--input-text TEXT``.

``--input`` reads its text from the argument itself, from a file (``@FILE``)
or from stdin (``-``), then takes it as JSON when it parses as JSON (``42``
is an int, ``{"a": 1}`` a dict, ``"42"`` a string) and as the string itself
otherwise (``hello``). ``--input-text`` is always the string as typed.

A file or stdin is how large inputs travel: one command-line argument is
limited to 128 KiB on Linux ("Argument list too long"). Every form is
refused past :data:`MAX_INPUT_BYTES`, a file before it is read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

from heddle.cli._errors import CLIError, usage_error

__all__ = ["INPUT_HELP", "MAX_INPUT_BYTES", "parse_value", "read_input"]

#: The largest workflow input the command line accepts, in bytes of UTF-8.
MAX_INPUT_BYTES = 16 * 1024 * 1024

INPUT_HELP = (
    "The workflow input: JSON if VALUE parses as JSON (42, true, null, '\"text\"', "
    "'{\"a\": 1}'), else the text itself; @FILE reads it from FILE, - from stdin "
    "(by the same rule; up to 16 MiB)."
)


def _too_large(what: str, size: int | None) -> CLIError:
    over = f"{size / 2**20:.1f} MiB, " if size is not None else ""
    return usage_error(
        f"{what} is {over}over the {MAX_INPUT_BYTES // 2**20} MiB limit of a workflow input "
        "(every run stores its input): pass a path or a URL instead and let the agent read it"
    )


def _read_bounded(stream: BinaryIO, what: str) -> bytes:
    """Up to the limit from ``stream``; more than that is refused without reading it all."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise _too_large(what, None)
    return data


def _read_file(name: str) -> bytes:
    path = Path(name).expanduser()
    what = f"--input @{name}"
    try:
        if path.is_dir():
            raise usage_error(f"{what}: {name} is a directory, not a file")
        size = path.stat().st_size  # a FIFO or /dev/stdin says 0: the bounded read decides
        if size > MAX_INPUT_BYTES:
            raise _too_large(what, size)
        with path.open("rb") as stream:
            return _read_bounded(stream, what)
    except FileNotFoundError:
        raise usage_error(f"{what}: no such file: {name}") from None
    except OSError as exc:
        raise usage_error(f"{what}: cannot read {name}: {exc.strerror or exc}") from exc


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise usage_error(f"{what} is not UTF-8 text (byte {exc.start})") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON: take the text as a string


def parse_value(text: str) -> Any:
    """``text`` as JSON if it is JSON, else ``text`` itself."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def read_input(value: str | None, text: str | None, *, stdin: BinaryIO | None = None) -> Any:
    """The input from ``--input`` (``value``) or ``--input-text`` (``text``); None if neither."""
    if value is not None and text is not None:
        raise usage_error("give --input or --input-text, not both")
    if value is None:
        if text is not None and _utf8_size(text) > MAX_INPUT_BYTES:
            raise _too_large("--input-text", _utf8_size(text))
        return text
    if value == "-":
        data = _read_bounded(stdin or sys.stdin.buffer, "--input - (stdin)")
        return parse_value(_decode(data, "--input - (stdin)"))
    if value.startswith("@"):
        if value == "@":
            raise usage_error("--input @: name a file after the @ (or use - for stdin)")
        return parse_value(_decode(_read_file(value[1:]), f"--input {value}"))
    if _utf8_size(value) > MAX_INPUT_BYTES:
        raise _too_large("--input", _utf8_size(value))
    return parse_value(value)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))
