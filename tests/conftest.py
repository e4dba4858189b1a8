"""Shared fixtures for heddle's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Set by .ci/run: a missing Redis/Postgres/Ray fails the test instead of skipping it.
REQUIRE_SERVICES = os.environ.get("HEDDLE_REQUIRE_SERVICES", "") not in ("", "0")


def service_unavailable(reason: str) -> None:
    """Skip the calling test, or fail it when CI requires the services."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (HEDDLE_REQUIRE_SERVICES is set): {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True, name="heddle_home")
def heddle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HEDDLE_HOME at a per-test directory so no test writes into the work tree."""
    home = tmp_path / "heddle-home"
    monkeypatch.setenv("HEDDLE_HOME", str(home))
    return home
