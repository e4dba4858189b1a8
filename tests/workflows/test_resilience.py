"""RetryPolicy and CircuitBreaker: pure decision machines, tested without sleeping."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heddle import CircuitBreaker, CircuitBreakerOpen, RetryPolicy
from heddle.core.errors import AgentNotSerializable, ConfigurationError, HeddleError
from heddle.testing import FakeClock
from heddle.workflows import CircuitState


def test_backoff_grows_exponentially_until_max_delay() -> None:
    """Delays double from initial_delay and stop at max_delay."""
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_scales_the_capped_delay_by_the_random_draw() -> None:
    """With jitter the delay is the capped backoff times a uniform draw in [0, 1)."""
    policy = RetryPolicy(initial_delay=1.0, multiplier=3.0, max_delay=5.0, jitter=True)
    assert policy.delay(2, rng=lambda: 0.5) == 1.5
    assert policy.delay(5, rng=lambda: 0.25) == 1.25
    assert policy.delay(1, rng=lambda: 0.0) == 0.0


@given(
    initial=st.floats(0, 100),
    multiplier=st.floats(1, 10),
    cap=st.floats(0, 1000),
    retry=st.integers(1, 10_000),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_delay_is_always_within_zero_and_max_delay(
    initial: float, multiplier: float, cap: float, retry: int, draw: float
) -> None:
    """No retry number, however large, gives a delay outside [0, max_delay] (no overflow)."""
    policy = RetryPolicy(initial_delay=initial, multiplier=multiplier, max_delay=cap)
    fixed = policy.backoff(retry)
    assert 0.0 <= fixed <= cap
    assert 0.0 <= policy.delay(retry, rng=lambda: draw) <= fixed
    assert not math.isnan(fixed)


@given(retry=st.integers(1, 50))
def test_backoff_never_decreases(retry: int) -> None:
    """The un-jittered backoff is monotonic in the retry number."""
    policy = RetryPolicy(initial_delay=0.1, multiplier=1.7, max_delay=60)
    assert policy.backoff(retry) <= policy.backoff(retry + 1)


def test_should_retry_respects_max_attempts_and_retry_on() -> None:
    """Only exceptions in retry_on are retried, and only while attempts remain."""
    policy = RetryPolicy(max_attempts=3, retry_on=(ConnectionError,))
    assert policy.should_retry(ConnectionError("x"), attempt=1)
    assert policy.should_retry(ConnectionResetError("x"), attempt=2)
    assert not policy.should_retry(ConnectionError("x"), attempt=3)
    assert not policy.should_retry(ValueError("x"), attempt=1)


def test_failures_another_attempt_cannot_fix_are_never_retried() -> None:
    """An open breaker's rejection and an unpicklable agent are not retried, whatever retry_on."""
    policy = RetryPolicy(max_attempts=5, retry_on=(Exception,))
    assert not policy.should_retry(CircuitBreakerOpen("a", 1.0), attempt=1)
    assert not policy.should_retry(AgentNotSerializable("a", "holds a lock"), attempt=1)


def test_single_exception_class_is_accepted_for_retry_on() -> None:
    """retry_on=SomeError is normalised to a one-element tuple."""
    assert RetryPolicy(retry_on=KeyError).retry_on == (KeyError,)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_delay": -1}, "initial_delay"),
        ({"initial_delay": math.nan}, "initial_delay"),
        ({"max_delay": -0.1}, "max_delay"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"multiplier": "2"}, "multiplier"),
        ({"retry_on": (ValueError, "nope")}, "retry_on"),
        ({"retry_on": [ValueError]}, "retry_on"),
    ],
)
def test_bad_retry_settings_are_rejected_naming_the_parameter(
    kwargs: dict[str, object], parameter: str
) -> None:
    """Out-of-range settings raise ConfigurationError (a ValueError) naming the argument."""
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter
    assert parameter in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HeddleError)


def test_backoff_rejects_retry_zero() -> None:
    """Retry numbers start at 1."""
    with pytest.raises(ValueError, match="retry must be >= 1"):
        RetryPolicy().backoff(0)


def _fail(cb: CircuitBreaker, times: int) -> list[CircuitState | None]:
    out = []
    for _ in range(times):
        cb.acquire()
        out.append(cb.record_failure())
    return out


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    """The threshold-th consecutive failure opens the breaker, not earlier."""
    cb = CircuitBreaker("a", failure_threshold=3, recovery_timeout=10, clock=FakeClock())
    assert _fail(cb, 3) == [None, None, CircuitState.OPEN]
    assert cb.state is CircuitState.OPEN


def test_success_resets_the_consecutive_failure_count() -> None:
    """Failures separated by a success do not add up."""
    cb = CircuitBreaker("a", failure_threshold=2, recovery_timeout=10, clock=FakeClock())
    _fail(cb, 1)
    cb.acquire()
    assert cb.record_success() is None
    assert _fail(cb, 1) == [None]
    assert cb.state is CircuitState.CLOSED
    assert cb.consecutive_failures == 1


def test_open_breaker_rejects_until_recovery_timeout() -> None:
    """While open, acquire raises CircuitBreakerOpen with the time left."""
    clock = FakeClock()
    cb = CircuitBreaker("search", failure_threshold=1, recovery_timeout=10, clock=clock)
    _fail(cb, 1)
    clock.advance(4)
    with pytest.raises(CircuitBreakerOpen) as info:
        cb.acquire()
    assert info.value.agent == "search"
    assert info.value.retry_after == pytest.approx(6)
    assert "search" in str(info.value)


def test_half_open_lets_exactly_one_trial_through() -> None:
    """After the timeout one caller gets the trial; every concurrent caller is rejected."""
    clock = FakeClock()
    cb = CircuitBreaker("a", failure_threshold=1, recovery_timeout=5, clock=clock)
    _fail(cb, 1)
    clock.advance(5)
    assert cb.acquire() is CircuitState.HALF_OPEN
    for _ in range(10):
        with pytest.raises(CircuitBreakerOpen) as info:
            cb.acquire()
        assert info.value.retry_after == 0.0
    assert "trial call is in flight" in str(info.value)


def test_trial_success_closes_the_breaker() -> None:
    """A successful trial closes the breaker and calls flow again."""
    clock = FakeClock()
    cb = CircuitBreaker("a", failure_threshold=1, recovery_timeout=5, clock=clock)
    _fail(cb, 1)
    clock.advance(5)
    cb.acquire()
    assert cb.record_success() is CircuitState.CLOSED
    assert cb.acquire() is None
    assert cb.acquire() is None


def test_trial_failure_reopens_for_a_full_timeout() -> None:
    """A failed trial re-opens the breaker and restarts the recovery timer."""
    clock = FakeClock()
    cb = CircuitBreaker("a", failure_threshold=3, recovery_timeout=5, clock=clock)
    _fail(cb, 3)
    clock.advance(5)
    cb.acquire()
    assert cb.record_failure() is CircuitState.OPEN
    clock.advance(4.9)
    with pytest.raises(CircuitBreakerOpen):
        cb.acquire()
    clock.advance(0.1)
    assert cb.acquire() is CircuitState.HALF_OPEN


def test_released_trial_lets_the_next_caller_try() -> None:
    """A cancelled trial frees the slot without deciding the breaker's state."""
    clock = FakeClock()
    cb = CircuitBreaker("a", failure_threshold=1, recovery_timeout=5, clock=clock)
    _fail(cb, 1)
    clock.advance(5)
    cb.acquire()
    cb.release()
    assert cb.state is CircuitState.HALF_OPEN
    assert cb.acquire() is None
    with pytest.raises(CircuitBreakerOpen):
        cb.acquire()


def test_late_success_does_not_close_an_open_breaker() -> None:
    """A call admitted before the breaker opened cannot close it by succeeding late."""
    cb = CircuitBreaker("a", failure_threshold=1, recovery_timeout=5, clock=FakeClock())
    cb.acquire()  # a slow call, admitted while closed
    _fail(cb, 1)
    assert cb.record_success() is None
    assert cb.state is CircuitState.OPEN


def test_reset_closes_and_forgets() -> None:
    """reset() closes an open breaker and reports the change once."""
    cb = CircuitBreaker("a", failure_threshold=1, recovery_timeout=5, clock=FakeClock())
    _fail(cb, 1)
    assert cb.reset() is CircuitState.CLOSED
    assert cb.reset() is None
    assert cb.consecutive_failures == 0
    assert "closed" in repr(cb)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 1.5}, "failure_threshold"),
        ({"recovery_timeout": -1}, "recovery_timeout"),
    ],
)
def test_bad_breaker_settings_are_rejected(kwargs: dict[str, object], parameter: str) -> None:
    """A threshold below 1 or a negative timeout is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker("a", **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


@given(st.lists(st.sampled_from(["ok", "fail", "tick", "acquire"]), max_size=60))
def test_breaker_never_admits_two_trials_at_once(ops: list[str]) -> None:
    """Whatever the sequence of outcomes and time, half-open never has two calls in flight."""
    clock = FakeClock()
    cb = CircuitBreaker("a", failure_threshold=2, recovery_timeout=1, clock=clock)
    in_flight_trials = 0
    admitted: list[CircuitState] = []  # state at admission of each call still in flight
    for op in ops:
        if op == "tick":
            clock.advance(1)
        elif op == "acquire":
            try:
                cb.acquire()
            except CircuitBreakerOpen:
                continue
            admitted.append(cb.state)
            if cb.state is CircuitState.HALF_OPEN:
                in_flight_trials += 1
            assert in_flight_trials <= 1
        elif admitted:
            state = admitted.pop()
            if state is CircuitState.HALF_OPEN:
                in_flight_trials -= 1
            if op == "ok":
                cb.record_success()
            else:
                cb.record_failure()
            if cb.state is not CircuitState.HALF_OPEN:
                in_flight_trials = 0
