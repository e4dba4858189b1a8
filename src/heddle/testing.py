"""Helpers for testing workflows built on heddle (heddle's own tests use them too)."""

from __future__ import annotations

from heddle.memory.in_memory_store import InMemoryStore
from heddle.messaging.recording import RecordingBus

__all__ = ["FakeClock", "InMemoryStore", "RecordingBus"]


class FakeClock:
    """A monotonic clock that only moves when told to.

    Pass it wherever heddle takes a ``clock`` (circuit breakers, the executor)
    to test time-dependent behaviour without sleeping.

    >>> clock = FakeClock(start=5.0)
    >>> clock.advance(2.5)
    >>> clock()
    7.5
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds
