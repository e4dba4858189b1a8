"""Tests of heddle.core._checks: what the numeric setting checks accept, refuse and say."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heddle.core._checks import check_int, check_seconds
from heddle.core.errors import ConfigurationError

# Anything a caller might pass where a number is wanted, bools, NaN and infinities included.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)


@given(value=ANYTHING, minimum=st.integers(-3, 3), none_ok=st.booleans())
def test_check_int_accepts_exactly_ints_at_or_above_the_minimum(
    value: Any, minimum: int, none_ok: bool
) -> None:
    """An int (not a bool) >= minimum comes back as is, so does None with none_ok; else refused."""
    wanted = (value is None and none_ok) or (
        type(value) is int and value >= minimum  # type() excludes bool
    )
    if wanted:
        assert check_int(value, "n", minimum=minimum, none_ok=none_ok) is value
    else:
        with pytest.raises(ConfigurationError) as caught:
            check_int(value, "n", minimum=minimum, none_ok=none_ok)
        assert caught.value.parameter == "n"


@given(
    value=ANYTHING,
    minimum=st.sampled_from([0.0, 1.0]),
    exclusive=st.booleans(),
    finite=st.booleans(),
    none_ok=st.booleans(),
)
def test_check_seconds_accepts_exactly_real_numbers_within_the_bound(
    value: Any, minimum: float, exclusive: bool, finite: bool, none_ok: bool
) -> None:
    """A real number (not bool, not NaN) past the bound comes back as a float; else refused."""
    options: dict[str, Any] = {
        "minimum": minimum,
        "exclusive": exclusive,
        "finite": finite,
        "none_ok": none_ok,
    }
    real = type(value) in (int, float) and not math.isnan(value)
    wanted = real and (
        (value > minimum if exclusive else value >= minimum)
        and (math.isfinite(value) or not finite)
    )
    if value is None and none_ok:
        assert check_seconds(value, "t", **options) is None
    elif wanted:
        result = check_seconds(value, "t", **options)
        assert type(result) is float
        assert result == value
    else:
        with pytest.raises(ConfigurationError) as caught:
            check_seconds(value, "t", **options)
        assert caught.value.parameter == "t"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_int(0, "max_threads", minimum=1), "max_threads must be an int >= 1, got 0"),
        (
            lambda: check_int(True, "limit", minimum=0, none_ok=True),
            "limit must be an int >= 0 or None, got True",
        ),
        (lambda: check_seconds(0, "lease", exclusive=True), "lease must be seconds > 0, got 0"),
        (
            lambda: check_seconds(math.inf, "trial_timeout", exclusive=True, finite=True),
            "trial_timeout must be seconds > 0 and finite, got inf",
        ),
        (
            lambda: check_seconds(0.5, "multiplier", minimum=1.0, what="a number"),
            "multiplier must be a number >= 1, got 0.5",
        ),
        (
            lambda: check_seconds("1", "timeout", none_ok=True, where="node 'a'"),
            "node 'a': timeout must be seconds >= 0 or None, got '1'",
        ),
    ],
)
def test_a_refusal_says_what_was_wanted_and_what_came(call: Any, message: str) -> None:
    """The message names the argument (and whose it is), the bound, the None option, the value."""
    with pytest.raises(ConfigurationError) as caught:
        call()
    assert str(caught.value) == message


def test_a_refusal_is_a_value_error() -> None:
    """Callers that catch ValueError catch a refused setting too."""
    with pytest.raises(ValueError, match="must be an int"):
        check_int("3", "max_pending", minimum=1)
