"""Durable runs store Python objects and give them back as the same types, from the code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import durable_values_workflow as wf
import pytest

from heddle import WorkflowExecutor, WorkflowGraph
from heddle.core.errors import ResultNotRestorable, ResultTooLarge
from heddle.workflows import SQLiteCheckpointer

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose runs a first process recorded; their last nodes failed."""
    db = tmp_path_factory.mktemp("durable-values") / "runs.db"
    # Imported by its module name, as here: the classes' qualified names must match.
    env = {**os.environ, "DURABLE_VALUES_FAIL": "1", "PYTHONPATH": str(HERE)}
    code = "import asyncio, sys, durable_values_workflow as m; asyncio.run(m.main(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["failed", "failed"], done.stderr
    return db


def _copy(db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs.db"
    copy.write_bytes(db.read_bytes())
    return copy


@pytest.mark.slow
async def test_resume_in_another_process_gives_back_the_same_types(
    recorded: Path, tmp_path: Path
) -> None:
    """Dataclass, datetime, UUID, Decimal, Enum, bytes, frozenset, tuple, pydantic models:
    restored from the agents' annotations in a process that never stored them."""
    async with WorkflowExecutor(checkpointer=_copy(recorded, tmp_path)) as ex:
        result = await ex.resume("typed", wf.typed_graph())
    assert result.ok
    found = result.content("find")
    assert type(found) is wf.Finding
    assert found == wf.Finding(
        title="solid-state batteries",
        seen_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        id=uuid.UUID(int=7),
        score=Decimal("0.95"),
        priority=wf.Priority.HIGH,
        raw=b"\x00\xff",
        tags=frozenset({"a", "b"}),
        span=(3, 9),
    )
    assert result.content("brief") == wf.Brief(topic="solid-state batteries", findings=1)
    assert result.content("pair") == ("pair", 2)  # a tuple stays a tuple
    assert type(result.content("pair")) is tuple
    assert result.results["find"].get("resumed") is True
    assert result.context.input == wf.Question(
        text="solid-state batteries", asked_at=datetime(2026, 1, 2, tzinfo=UTC)
    )


@pytest.mark.slow
async def test_a_class_no_code_names_is_an_error_naming_the_node(
    recorded: Path, tmp_path: Path
) -> None:
    """Without an annotation (or a store in this process), resume refuses, naming the node."""
    async with WorkflowExecutor(checkpointer=_copy(recorded, tmp_path)) as ex:
        with pytest.raises(ResultNotRestorable) as caught:
            await ex.resume("anonymous", wf.anonymous_graph())
    assert caught.value.node == "anon"
    assert caught.value.workflow_id == "anonymous"
    assert "return annotation" in str(caught.value)


@pytest.mark.slow
async def test_inspecting_shows_a_class_no_code_names_in_its_stored_form(
    recorded: Path,
) -> None:
    """A read-only checkpointer (heddle show) gives the tagged JSON back instead of raising."""
    async with SQLiteCheckpointer(recorded, readonly=True) as store:
        results = await store.node_results("anonymous")
    content = results["anon"]["content"]
    assert content["__heddle__"] == "dataclass"
    assert content["v"] == {"value": 5}


async def test_resume_in_the_same_process_restores_classes_it_stored(tmp_path: Path) -> None:
    """Classes this process stored come back even when no annotation names them."""
    failing = True

    async def anon(task: Any):  # type: ignore[no-untyped-def]
        return wf.Anonymous(3)

    async def last(task: Any) -> str:
        if failing:
            raise RuntimeError("not yet")
        return "ok"

    g = WorkflowGraph("g").add_node("anon", anon).add_node("last", last).add_edge("anon", "last")
    async with WorkflowExecutor(checkpointer=tmp_path / "runs.db") as ex:
        first = await ex.execute(g, workflow_id="w")
        assert first.status == "failed"
        failing = False
        resumed = await ex.resume("w", g)
    assert resumed.content("anon") == wf.Anonymous(3)


async def test_a_result_over_the_size_limit_fails_its_node_and_keeps_it_in_memory(
    tmp_path: Path,
) -> None:
    """A result bigger than max_value_bytes is not stored; the node fails with ResultTooLarge."""

    async def big(task: Any) -> str:
        return "x" * 5_000

    async def small(task: Any) -> str:
        return "fine"

    g = WorkflowGraph("g").add_node("big", big).add_node("small", small)
    async with SQLiteCheckpointer(tmp_path / "runs.db", max_value_bytes=1_000) as store:
        result = await WorkflowExecutor(checkpointer=store).execute(g, workflow_id="w")
        stored = await store.node_results("w")
    assert result.results["big"]["status"] == "failed"
    assert result.results["big"]["error_type"] == "heddle.core.errors.ResultTooLarge"
    assert "over the limit of 1,000 bytes" in (result.results["big"]["error"] or "")
    assert result.results["big"]["content"] == "x" * 5_000
    assert stored["big"]["content"] is None
    assert result.results["small"]["status"] == "succeeded"


async def test_an_input_over_the_size_limit_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """An input bigger than max_value_bytes: ResultTooLarge, no run recorded, no agent called."""
    called = []

    async def agent(task: Any) -> None:
        called.append(task)

    g = WorkflowGraph("g").add_node("a", agent)
    async with SQLiteCheckpointer(tmp_path / "runs.db", max_value_bytes=1_000) as store:
        with pytest.raises(ResultTooLarge) as caught:
            await WorkflowExecutor(checkpointer=store).execute(g, "y" * 2_000)
        assert await store.list_runs() == []
    assert caught.value.node is None and caught.value.limit == 1_000
    assert called == []


def test_the_default_size_limit_is_16_mib() -> None:
    """16 MiB unless configured."""
    assert SQLiteCheckpointer(":memory:").max_value_bytes == 16 * 1024 * 1024
