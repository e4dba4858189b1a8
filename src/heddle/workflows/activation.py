"""The unit of work of a run: one activation of a node.

A node of a plain DAG runs once: its one activation is ``(node, 0, None)``.
A loop runs its nodes again, each time with the next ``iteration``; a map
node (later) runs one activation per ``item``. Results, checkpoint rows and
events are keyed by the activation, so a loop is durable like any node.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Activation"]


class Activation(NamedTuple):
    """Which run of which node: ``(node, iteration, item)``."""

    node: str
    iteration: int = 0
    item: int | None = None
