"""Where an executor keeps its circuit breakers: in-process, or shared between processes.

The executor talks to a :class:`CircuitBreakers` registry keyed by agent
name. :class:`LocalCircuitBreakers` (the default) holds one pure
:class:`~heddle.workflows.resilience.CircuitBreaker` per agent in this
process; a shared implementation (``heddle.distributed.RedisCircuitBreakers``)
keeps the same state machine in Redis, so every worker process calling one
dependency opens and closes one breaker together.

Methods are async so a shared registry can do I/O; the local one never
suspends. Each transition method returns the new state when the call
changed it, else ``None``, for the executor to publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from heddle.core._checks import check_int, check_seconds
from heddle.workflows.resilience import CircuitBreaker, CircuitState

__all__ = ["CircuitBreakers", "LocalCircuitBreakers"]


@runtime_checkable
class CircuitBreakers(Protocol):
    """A registry of per-agent circuit breakers (see :class:`CircuitBreaker` for the rules)."""

    async def acquire(self, agent: str) -> CircuitState | None:
        """Ask to call ``agent``; raise :class:`CircuitBreakerOpen` if the call may not go."""

    async def record_success(self, agent: str) -> CircuitState | None: ...

    async def record_failure(self, agent: str) -> CircuitState | None: ...

    async def release(self, agent: str) -> None:
        """The allowed call was cancelled: free a half-open trial slot."""

    async def failures(self, agent: str) -> int:
        """Consecutive failed calls of ``agent`` since its last success."""


class LocalCircuitBreakers(Mapping[str, CircuitBreaker]):
    """One in-process :class:`CircuitBreaker` per agent name, created closed on first use.

    Each breaker opens after ``threshold`` consecutive failures and lets a
    trial call through ``timeout`` seconds later. Also a read-only mapping
    ``{agent name: CircuitBreaker}`` for inspection.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Validate now, under the names given here, rather than at the first failure.
        self.threshold = check_int(threshold, "threshold", minimum=1)
        self.timeout = check_seconds(timeout, "timeout")
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __repr__(self) -> str:
        return f"LocalCircuitBreakers({dict(self._breakers)!r})"

    def __getitem__(self, agent: str) -> CircuitBreaker:
        return self._breakers[agent]

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def __len__(self) -> int:
        return len(self._breakers)

    def breaker(self, agent: str) -> CircuitBreaker:
        """The breaker of ``agent``, created closed if it has none yet."""
        breaker = self._breakers.get(agent)
        if breaker is None:
            breaker = CircuitBreaker(
                agent,
                failure_threshold=self.threshold,
                recovery_timeout=self.timeout,
                clock=self._clock,
            )
            self._breakers[agent] = breaker
        return breaker

    async def acquire(self, agent: str) -> CircuitState | None:
        return self.breaker(agent).acquire()

    async def record_success(self, agent: str) -> CircuitState | None:
        return self.breaker(agent).record_success()

    async def record_failure(self, agent: str) -> CircuitState | None:
        return self.breaker(agent).record_failure()

    async def release(self, agent: str) -> None:
        self.breaker(agent).release()

    async def failures(self, agent: str) -> int:
        return self.breaker(agent).consecutive_failures
