"""How a failure reads in results, events and logs: its text, its type, its traceback."""

from __future__ import annotations

import asyncio
import functools
import sys
import traceback

__all__ = ["MAX_TRACEBACK_CHARS", "error_text", "error_type", "format_traceback"]

#: A recorded traceback keeps this many characters: its head and its tail.
MAX_TRACEBACK_CHARS = 16_000


@functools.cache
def _calling_files() -> frozenset[str | None]:
    """The modules whose frames lead from the run loop to an agent: a recorded
    traceback starts at the first frame after them, in the agent's own code."""
    names = ("heddle.workflows._run", "heddle.workflows.runner", "heddle.agents")
    return frozenset(getattr(sys.modules.get(name), "__file__", None) for name in names)


def error_text(exc: BaseException) -> str:
    """How a failure reads in results and events: ``"TypeName: message"``."""
    try:
        message = str(exc)
    except Exception:  # RecursionError included: an agent's exception may be hostile
        message = "<its message could not be produced: str() raised>"
    if isinstance(exc, asyncio.CancelledError) and not message:
        message = (
            "the agent raised CancelledError itself (it awaited a task or future that was "
            "cancelled); the run was not cancelled"
        )
    return f"{type(exc).__name__}: {message}"


def error_type(exc: BaseException) -> str:
    """The exception's type as a user would import it: ``ValueError``, ``pkg.errors.Quota``."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """``exc``'s formatted traceback, cut in the middle when longer than ``limit``.

    The head says where the failure entered the agent, the tail where it was
    raised and what it was: both are kept.
    """
    tb = exc.__traceback__
    calling = _calling_files()
    while tb is not None and tb.tb_frame.f_code.co_filename in calling:
        tb = tb.tb_next  # heddle's own frames, between the run loop and the agent
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    except Exception as format_error:  # a hostile __str__ must not take the run down
        text = f"{error_type(exc)} (its traceback could not be formatted: {format_error!r})\n"
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n... {cut} characters cut ...\n{text[-half:]}"
