"""How the command line fails: one line on stderr and an exit code, never a traceback.

Exit codes (documented in docs/cli.md):

* 0: the command did what was asked (for ``run``/``resume``/``demo``: the run succeeded).
* 1: the work failed: the workflow run failed, the workflow file's own code
  raised while loading, the graph is invalid, the database could not be used.
* 2: heddle refused to start: the command line is wrong, or names something
  that does not exist or does not fit (a missing file, a file that is not
  Python, a missing variable, no graph or several, an unknown run id, a graph
  unlike the recorded run's, a run another live process is running).
* 130: interrupted (Ctrl-C); a durable run is recorded as cancelled.
* 143: terminated (SIGTERM, as ``kill`` or a container stop sends); the same as Ctrl-C.

``--debug`` prints the traceback before the line. What is printed goes
through :func:`~heddle.cli._render.visible`: a message may quote a user's
exception, a file name or a workflow's output.
"""

from __future__ import annotations

import traceback
from typing import TextIO

import click

from heddle.cli._render import visible
from heddle.core.errors import (
    ConfigurationError,
    GraphMismatchError,
    GraphValidationError,
    HeddleError,
    RunInProgressError,
    RunNotFoundError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class CLIError(Exception):
    """A failure the CLI reports as one line; ``exit_code`` as in the module docstring."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def usage_error(message: str) -> CLIError:
    """A CLIError that exits 2: the command line names something missing or unfit."""
    return CLIError(message, exit_code=EXIT_USAGE)


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and the exit code for ``exc``."""
    if isinstance(exc, CLIError):
        return exc.message, exc.exit_code
    if isinstance(exc, click.exceptions.UsageError):
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        return exc.format_message() + hint, EXIT_USAGE
    if isinstance(exc, click.ClickException):
        return exc.format_message(), exc.exit_code
    if isinstance(exc, GraphMismatchError):
        return (
            f"run {exc.workflow_id!r} was recorded with a graph of another structure "
            f"(fingerprint {exc.recorded}, this graph's is {exc.given}): nodes, agents or edges "
            "changed; pass --force to resume anyway (recorded results of nodes that still "
            "exist are reused, every other node runs)",
            EXIT_USAGE,
        )
    if isinstance(exc, GraphValidationError):
        return f"invalid graph: {exc}", EXIT_FAILED
    if isinstance(exc, RunNotFoundError | RunInProgressError | ConfigurationError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, HeddleError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}", EXIT_FAILED
    return (
        f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
        EXIT_FAILED,
    )


def one_line(text: str) -> str:
    """``text`` on one line: a multi-line message would read as several errors."""
    return " ".join(text.split())


def report(exc: BaseException, *, debug: bool, stream: TextIO) -> int:
    """Print ``exc`` as ``heddle: error: ...``, after its traceback with ``debug``.

    Returns the exit code.
    """
    message, code = describe(exc)
    if debug and not isinstance(exc, click.exceptions.UsageError):
        stream.write(visible("".join(traceback.format_exception(exc))))
    stream.write(f"heddle: error: {visible(one_line(message), one_line=True)}\n")
    stream.flush()
    return code
