"""heddle.testing: the helpers users get for their own tests."""

from __future__ import annotations

import pytest

from heddle.testing import FakeClock


def test_fake_clock_moves_only_when_advanced() -> None:
    """The clock reads the same until advanced, then by exactly the amount."""
    clock = FakeClock(start=1.0)
    assert clock() == clock() == 1.0
    clock.advance(0.5)
    assert clock() == 1.5


def test_fake_clock_refuses_to_go_back() -> None:
    """A monotonic clock cannot be advanced by a negative amount."""
    with pytest.raises(ValueError, match="cannot go back"):
        FakeClock().advance(-1)
