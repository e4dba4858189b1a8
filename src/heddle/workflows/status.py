"""The words for where a node and a run stand: one :class:`~enum.StrEnum` per level.

The same words appear in results, events, checkpoint rows, the CLI and the
inspector. Members are strings, so ``result["status"] == "succeeded"`` and
JSON both work.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["NodeStatus", "RunStatus"]


class NodeStatus(StrEnum):
    """How one activation of a node ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # never ran: not taken, upstream failed, or fail_fast


class RunStatus(StrEnum):
    """Where a run stands.

    ``INTERRUPTED`` is never stored: it is how a stored ``RUNNING`` run reads
    once its owner is gone (its process died or its lease ran out).
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
