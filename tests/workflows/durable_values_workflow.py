"""Graphs whose nodes return Python objects, for tests/workflows/test_durable_values.py.

With ``DURABLE_VALUES_FAIL=1``, :func:`main` executes them durably and their last node
fails, so that the test resumes them in another process, which has never stored these
classes.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from heddle import WorkflowExecutor, WorkflowGraph


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclasses.dataclass(frozen=True)
class Finding:
    title: str
    seen_at: datetime
    id: uuid.UUID
    score: Decimal
    priority: Priority
    raw: bytes
    tags: frozenset[str]
    span: tuple[int, int]


class Brief(BaseModel):
    topic: str
    findings: int


class Question(BaseModel):
    text: str
    asked_at: datetime


class Unnamed:  # stands for a class no annotation names
    pass


@dataclasses.dataclass
class Anonymous:
    value: int


async def find(task: Question) -> Finding:
    return Finding(
        title=task.text,
        seen_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        id=uuid.UUID(int=7),
        score=Decimal("0.95"),
        priority=Priority.HIGH,
        raw=b"\x00\xff",
        tags=frozenset({"a", "b"}),
        span=(3, 9),
    )


async def brief(task: Finding) -> Brief:
    return Brief(topic=task.title, findings=1)


async def pair(task: Any) -> tuple[str, int]:
    return ("pair", 2)


async def finish(task: Any) -> str:
    if os.environ.get("DURABLE_VALUES_FAIL") == "1":
        raise RuntimeError("the first process fails here, so the run is resumed elsewhere")
    return "done"


async def anonymous(task: Any):  # type: ignore[no-untyped-def]  # no annotation on purpose
    return Anonymous(5)


def typed_graph() -> WorkflowGraph:
    g = WorkflowGraph("typed").add_node("find", find).add_node("brief", brief)
    g.add_node("pair", pair).add_node("finish", finish)
    g.add_edge("find", "brief").add_edge("brief", "finish").add_edge("pair", "finish")
    return g


def anonymous_graph() -> WorkflowGraph:
    g = WorkflowGraph("anonymous").add_node("anon", anonymous).add_node("finish", finish)
    return g.add_edge("anon", "finish")


async def main(db: str) -> None:
    question = Question(text="solid-state batteries", asked_at=datetime(2026, 1, 2, tzinfo=UTC))
    async with WorkflowExecutor(checkpointer=db) as ex:
        typed = await ex.execute(typed_graph(), question, workflow_id="typed")
        anon = await ex.execute(anonymous_graph(), None, workflow_id="anonymous")
    print(typed.status, anon.status)
