"""Retry and circuit-breaker policies: pure decision machines.

Neither object sleeps, schedules or does I/O. :class:`RetryPolicy` answers
"retry this failure?" and "after how long?"; :class:`CircuitBreaker` answers
"may this call go through?" and records outcomes. The executor does the
sleeping and the calling, which is what makes both testable without a clock
that really moves (see :class:`heddle.testing.FakeClock`).

The breaker is the classic closed / open / half-open machine, kept per agent
and shared by every run of an executor: a failing dependency is protected
across runs, and a recovered one is found again by a single trial call.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from heddle.core._checks import check_int, check_seconds
from heddle.core.errors import AgentNotSerializable, CircuitBreakerOpen, ConfigurationError

__all__ = ["CircuitBreaker", "CircuitState", "RetryPolicy"]

Clock = Callable[[], float]

# Failures that another attempt cannot fix: calling again is what an open breaker
# forbids, and an agent that cannot be pickled will not become picklable.
_NEVER_RETRIED = (CircuitBreakerOpen, AgentNotSerializable)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed agent call is tried again.

    ``max_attempts`` counts every call, the first included (1 = no retries).
    The delay before retry *n* (n = 1 after the first failure) is
    ``min(max_delay, initial_delay * multiplier ** (n - 1))``; with
    ``jitter=True`` it is drawn uniformly from ``[0, that]`` ("full jitter",
    which spreads out clients that failed together). Only exceptions that are
    instances of ``retry_on`` are retried; :class:`CircuitBreakerOpen` and
    :class:`AgentNotSerializable` never are: another attempt cannot succeed.

    >>> RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=False).delay(4)
    5.0
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        check_int(self.max_attempts, "max_attempts", minimum=1)
        check_seconds(self.initial_delay, "initial_delay")
        check_seconds(self.multiplier, "multiplier", minimum=1.0, what="a number")
        check_seconds(self.max_delay, "max_delay")
        retry_on: object = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise ConfigurationError(
                f"retry_on must be a tuple of exception classes, got {self.retry_on!r}",
                parameter="retry_on",
            )

    def backoff(self, retry: int) -> float:
        """The capped exponential delay before retry number ``retry`` (1-based), no jitter."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry}")
        try:
            raw = self.initial_delay * self.multiplier ** (retry - 1)
        except OverflowError:
            raw = math.inf
        return float(min(self.max_delay, raw))

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry``; ``rng`` returns floats in [0, 1)."""
        cap = self.backoff(retry)
        return cap * rng() if self.jitter else cap

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether a call that failed with ``exc`` on attempt ``attempt`` gets another try."""
        if attempt >= self.max_attempts or isinstance(exc, _NEVER_RETRIED):
            return False
        return isinstance(exc, self.retry_on)


class CircuitState(enum.StrEnum):
    """The three states of a :class:`CircuitBreaker`."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """A per-agent circuit breaker: closed -> open -> half-open -> closed.

    * closed: calls go through; ``failure_threshold`` consecutive failures open it.
    * open: calls are rejected with :class:`CircuitBreakerOpen` without reaching
      the agent, until ``recovery_timeout`` seconds have passed.
    * half-open: exactly one trial call is let through; concurrent callers are
      rejected. Its success closes the breaker, its failure re-opens it.

    The breaker is a pure state machine driven by the caller: ``acquire()``
    before a call, then exactly one of ``record_success()``,
    ``record_failure()`` or ``release()`` (the call was cancelled and says
    nothing about the agent's health). Each returns the new state when the
    call changed it, else ``None``, so the caller can report transitions.
    ``clock`` is any monotonic ``() -> float``.

    >>> from heddle.testing import FakeClock
    >>> clock = FakeClock()
    >>> cb = CircuitBreaker("search", failure_threshold=2, recovery_timeout=10, clock=clock)
    >>> _ = cb.acquire(); cb.record_failure()
    >>> _ = cb.acquire(); cb.record_failure()
    <CircuitState.OPEN: 'open'>
    >>> clock.advance(10); cb.acquire()
    <CircuitState.HALF_OPEN: 'half_open'>
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_state",
        "_trial_in_flight",
        "failure_threshold",
        "name",
        "recovery_timeout",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        check_int(failure_threshold, "failure_threshold", minimum=1)
        check_seconds(recovery_timeout, "recovery_timeout")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = float(recovery_timeout)
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self._state.value}, "
            f"failures={self._failures}/{self.failure_threshold})"
        )

    @property
    def state(self) -> CircuitState:
        """The current state (an open breaker whose timeout passed still reads ``OPEN``
        until the next ``acquire()`` turns it half-open)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failed calls since the last success."""
        return self._failures

    def acquire(self) -> CircuitState | None:
        """Ask to make one call; raise :class:`CircuitBreakerOpen` if it may not go through."""
        state = self._state
        if state is CircuitState.CLOSED:
            return None
        if state is CircuitState.OPEN:
            remaining = self._opened_at + self.recovery_timeout - self._clock()
            if remaining > 0:
                raise CircuitBreakerOpen(self.name, remaining)
            self._state = CircuitState.HALF_OPEN
            self._trial_in_flight = True
            return CircuitState.HALF_OPEN
        if self._trial_in_flight:
            raise CircuitBreakerOpen(self.name, 0.0)
        self._trial_in_flight = True
        return None

    def record_success(self) -> CircuitState | None:
        """The call that ``acquire()`` allowed succeeded.

        A success that arrives while the breaker is open came from a call let
        through before it opened; it does not close the breaker early.
        """
        if self._state is CircuitState.OPEN:
            return None
        self._failures = 0
        if self._state is CircuitState.CLOSED:
            return None
        self._state = CircuitState.CLOSED
        self._trial_in_flight = False
        return CircuitState.CLOSED

    def record_failure(self) -> CircuitState | None:
        """The call that ``acquire()`` allowed failed."""
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN:
            return self._open()
        if self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold:
            return self._open()
        return None

    def release(self) -> None:
        """The allowed call ended without a verdict (cancelled): free the trial slot."""
        if self._state is CircuitState.HALF_OPEN:
            self._trial_in_flight = False

    def reset(self) -> CircuitState | None:
        """Force the breaker closed and forget its failures."""
        changed = self._state is not CircuitState.CLOSED
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._trial_in_flight = False
        return CircuitState.CLOSED if changed else None

    def _open(self) -> CircuitState:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._trial_in_flight = False
        return CircuitState.OPEN
