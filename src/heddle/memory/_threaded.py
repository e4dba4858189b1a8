"""A store whose blocking work runs on one dedicated thread, never on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from heddle.memory.errors import StoreClosedError

__all__ = ["ThreadedStore"]

T = TypeVar("T")


class ThreadedStore:
    """Runs every blocking call of a store on its own single worker thread.

    One thread per store keeps each store's resources (an SQLite connection,
    open files) confined to one thread and its operations in submission
    order; the event loop only awaits futures. The thread starts on first
    use, so building a store touches nothing. Works from any event loop.

    A cancelled call may still complete in the thread (a save may be
    committed although its caller was cancelled); it is never half done.
    """

    _thread_name = "heddle-store"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        """The file or directory this store keeps its data in."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed", path=self._path)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._thread_name)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open_sync(self) -> None:
        """Acquire thread-confined resources eagerly; runs on the store's thread."""

    def _close_sync(self) -> None:
        """Release thread-confined resources; runs on the store's thread."""

    async def aclose(self) -> None:
        """Finish the calls already submitted, release resources, stop the thread.

        Idempotent; later calls raise :class:`StoreClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            # FIFO: runs after every call submitted before aclose().
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self._call(self._open_sync)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {str(self._path)!r}{state}>"
