"""What a run is given by its executor, fixed for the run's whole life."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from heddle.workflows.breakers import CircuitBreakers
from heddle.workflows.checkpoint import Checkpointer
from heddle.workflows.context import NodeResult
from heddle.workflows.resilience import RetryPolicy
from heddle.workflows.runner import Runner

__all__ = ["Preloaded", "RunSettings"]


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What a run needs from its executor, fixed for the run's whole life."""

    max_concurrent: int
    retry: RetryPolicy
    fail_fast: bool
    rng: Callable[[], float]
    breakers: CircuitBreakers
    runner: Runner
    checkpointer: Checkpointer | None = None


Preloaded = Mapping[tuple[str, int] | tuple[str, int, int], NodeResult]
"""Recorded successes of an earlier attempt at a run, by ``(node, iteration)``, and
the items of map nodes by ``(node, iteration, item)``."""
