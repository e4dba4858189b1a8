"""A memory store whose blocking work runs on one dedicated thread, never on the event loop."""

from __future__ import annotations

from collections.abc import Hashable

from heddle.core._threaded import ThreadConfined
from heddle.core.errors import StoreClosedError
from heddle.memory._validation import check_key, validate_agent_id
from heddle.memory.store import Lookup

__all__ = ["ThreadedStore"]


class ThreadedStore(ThreadConfined):
    """The MemoryStore protocol over four blocking methods run on the store's thread.

    Subclasses implement ``_get_sync``, ``_put_sync``, ``_delete_sync`` and
    ``_keys_sync``; arguments are validated here, on the caller's side, before
    anything is touched.
    """

    _thread_name = "heddle-store"

    def _closed_error(self) -> Exception:
        return StoreClosedError(f"{self!r} is closed", path=self._path)

    def _get_sync(self, agent_id: str, key: str, known: Hashable) -> Lookup:
        raise NotImplementedError

    def _put_sync(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        raise NotImplementedError

    def _delete_sync(self, agent_id: str, key: str) -> bool:
        raise NotImplementedError

    def _keys_sync(self, agent_id: str, prefix: str | None) -> list[str]:
        raise NotImplementedError

    async def get(self, agent_id: str, key: str, *, known_version: Hashable = None) -> Lookup:
        """The entry of ``key`` (``entry=None`` if absent) and the version it was read at."""
        validate_agent_id(agent_id)
        check_key(key)
        return await self._call(self._get_sync, agent_id, key, known_version)

    async def put(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        """Store JSON texts under ``key``; durable (as the store defines it) when this returns."""
        validate_agent_id(agent_id)
        check_key(key)
        return await self._call(self._put_sync, agent_id, key, value, metadata)

    async def delete(self, agent_id: str, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        validate_agent_id(agent_id)
        check_key(key)
        return await self._call(self._delete_sync, agent_id, key)

    async def keys(self, agent_id: str, prefix: str | None = None) -> list[str]:
        """The agent's keys (those starting with ``prefix``), sorted by code point."""
        validate_agent_id(agent_id)
        if prefix is not None:
            check_key(prefix)
        return await self._call(self._keys_sync, agent_id, prefix)
