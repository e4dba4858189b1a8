"""Every failure becomes one line and a documented exit code."""

from __future__ import annotations

import io

import click
import pytest

from heddle.cli._errors import EXIT_FAILED, EXIT_USAGE, CLIError, describe, report
from heddle.core.errors import (
    CheckpointError,
    ConfigurationError,
    GraphMismatchError,
    GraphValidationError,
    RunNotFoundError,
)


@pytest.mark.parametrize(
    ("exc", "message", "code"),
    [
        (CLIError("x", exit_code=130), "x", 130),
        (click.UsageError("bad"), "bad", EXIT_USAGE),
        (click.ClickException("click says no"), "click says no", 1),
        (GraphValidationError("graph 'g' has no nodes", graph="g"), "invalid graph: graph", 1),
        (GraphMismatchError("w", "aaaa", "bbbb"), "pass --force to resume anyway", EXIT_USAGE),
        (RunNotFoundError("w", "db"), "no run with workflow id 'w' in db", EXIT_USAGE),
        (ConfigurationError("bad id", parameter="workflow_id"), "bad id", EXIT_USAGE),
        (CheckpointError("database is locked"), "database is locked", EXIT_FAILED),
        (PermissionError(13, "Permission denied", "/x.db"), "Permission denied: /x.db", 1),
        (ValueError("odd"), "unexpected ValueError: odd (run with --debug", EXIT_FAILED),
    ],
)
def test_describe_maps_each_error_to_a_message_and_code(
    exc: BaseException, message: str, code: int
) -> None:
    """Usage problems exit 2, failures of the work exit 1, each with a clear message."""
    text, exit_code = describe(exc)
    assert message in text
    assert exit_code == code


def test_report_keeps_a_multi_line_message_on_one_line() -> None:
    """A message with newlines (say, from a user's exception) is printed as one line."""
    stream = io.StringIO()
    assert report(CLIError("first\nsecond  third"), debug=False, stream=stream) == 1
    assert stream.getvalue() == "heddle: error: first second third\n"


def test_report_with_debug_prints_the_traceback_first() -> None:
    """--debug: the traceback, then the same one line."""
    stream = io.StringIO()
    try:
        raise ValueError("odd")
    except ValueError as exc:
        report(exc, debug=True, stream=stream)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith("heddle: error: unexpected ValueError: odd")
