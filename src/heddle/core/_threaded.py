"""Blocking resources confined to one dedicated thread, awaited from the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Self, TypeVar

from heddle.core._resource import AsyncResource

__all__ = ["ThreadConfined"]

T = TypeVar("T")


class ThreadConfined(AsyncResource):
    """Runs every blocking call of an object on its own single worker thread.

    One thread per object keeps its resources (an SQLite connection, open
    files) confined to one thread and its operations in submission order; the
    event loop only awaits futures. The thread starts on first use, so building
    the object touches nothing. Works from any event loop, one after another.

    A cancelled call may still complete in the thread (a write may be
    committed although its caller was cancelled); it is never half done.
    Subclasses say what "closed" raises with :meth:`_closed_error`.
    """

    _thread_name = "heddle-io"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        """The file or directory this object keeps its data in."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    def _closed_error(self) -> Exception:
        return RuntimeError(f"{self!r} is closed")

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        if self._closed:
            raise self._closed_error()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._thread_name)
        return self._executor.submit(fn, *args)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _open_sync(self) -> None:
        """Acquire thread-confined resources eagerly; runs on the object's thread."""

    def _close_sync(self) -> None:
        """Release thread-confined resources; runs on the object's thread."""

    async def aclose(self) -> None:
        """Finish the calls already submitted, release resources, stop the thread.

        Idempotent; later calls raise :meth:`_closed_error`.
        """
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            # FIFO: runs after every call submitted before aclose().
            await asyncio.wrap_future(executor.submit(self._close_sync))
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self._call(self._open_sync)
        return self

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {str(self._path)!r}{state}>"
