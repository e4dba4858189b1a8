"""Errors of agent memory (to be drawn into :mod:`heddle.core.errors`' tree).

::

    HeddleError
    ├── InvalidAgentId (ValueError)     agent id fails ^[A-Za-z0-9_-]{1,128}$ or escapes the base
    └── MemoryStoreError                a store could not do what was asked (carries ``path``)
        ├── CorruptStoreError           the file is not a readable store; it is left untouched
        └── StoreClosedError (RuntimeError)  the store (or memory) was used after aclose()
"""

from __future__ import annotations

from pathlib import Path

from heddle.core.errors import HeddleError

__all__ = ["CorruptStoreError", "InvalidAgentId", "MemoryStoreError", "StoreClosedError"]


class InvalidAgentId(HeddleError, ValueError):
    """An agent id does not match ``^[A-Za-z0-9_-]{1,128}$`` (or its file would leave the base).

    Raised before any file is touched. ``agent_id`` is the rejected value.
    """

    def __init__(self, message: str, *, agent_id: object) -> None:
        super().__init__(message)
        self.agent_id = agent_id


class MemoryStoreError(HeddleError):
    """A memory store could not complete an operation.

    ``path`` is the file involved (``None`` for stores without one). The
    underlying error, if any, is the ``__cause__``.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class CorruptStoreError(MemoryStoreError):
    """The store's file cannot be read as a store.

    heddle never overwrites or truncates such a file: move it aside (or restore
    it from a backup) and the store works again. ``path`` names the file.
    """


class StoreClosedError(MemoryStoreError, RuntimeError):
    """A store or an :class:`~heddle.memory.AgentMemory` was used after ``aclose()``."""
