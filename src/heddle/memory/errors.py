"""Errors of agent memory; they live in :mod:`heddle.core.errors`, heddle's one tree."""

from heddle.core.errors import CorruptStoreError, InvalidAgentId, MemoryStoreError, StoreClosedError

__all__ = ["CorruptStoreError", "InvalidAgentId", "MemoryStoreError", "StoreClosedError"]
