"""Agent ids: a strict pattern, checked before any file is touched; paths stay inside the base."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heddle.core.errors import HeddleError
from heddle.memory import (
    AgentMemory,
    FileStore,
    InMemoryStore,
    InvalidAgentId,
    SQLiteStore,
    validate_agent_id,
)

VALID = re.compile(r"[A-Za-z0-9_-]{1,128}")

TRAVERSALS = [
    "",
    ".",
    "..",
    "../evil",
    "../../etc/passwd",
    "a/b",
    "a\\b",
    "/abs",
    "agent\n",  # the document's ^...$ accepts this: $ matches before a final newline
    "agent\x00",
    "é",
    "\uff41",  # fullwidth "a": a letter, but not ASCII
    " agent",
    "a" * 129,
    "~root",
    "..\\..\\evil",
    "%2e%2e",
]


@pytest.mark.parametrize("agent_id", ["a", "A-Z_0-9", "-", "_", "a" * 128, "researcher-42"])
def test_valid_ids_are_accepted(agent_id: str) -> None:
    """1 to 128 ASCII letters, digits, '_' and '-' form a valid id."""
    assert validate_agent_id(agent_id) == agent_id


@pytest.mark.parametrize("agent_id", TRAVERSALS)
def test_invalid_ids_are_rejected_with_invalid_agent_id(agent_id: str) -> None:
    """Paths, dots, whitespace, non-ASCII and over-long ids raise InvalidAgentId (a ValueError)."""
    with pytest.raises(InvalidAgentId) as caught:
        validate_agent_id(agent_id)
    assert caught.value.agent_id == agent_id
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, HeddleError)


@pytest.mark.parametrize("agent_id", [None, 7, b"agent", ["a"]])
def test_non_string_ids_are_rejected(agent_id: object) -> None:
    """Anything but a str is an invalid agent id too."""
    with pytest.raises(InvalidAgentId):
        validate_agent_id(agent_id)


@given(st.text(max_size=140))
@example("agent\n")
def test_validation_accepts_exactly_the_pattern(agent_id: str) -> None:
    """validate_agent_id accepts a string iff it fully matches ^[A-Za-z0-9_-]{1,128}$."""
    if VALID.fullmatch(agent_id):
        assert validate_agent_id(agent_id) == agent_id
    else:
        with pytest.raises(InvalidAgentId):
            validate_agent_id(agent_id)


def test_memory_rejects_a_bad_id_before_creating_anything() -> None:
    """AgentMemory('../x') fails in the constructor; the default store's directory is not made."""
    with pytest.raises(InvalidAgentId):
        AgentMemory("../x")
    assert not Path(os.environ["HEDDLE_HOME"]).exists()


async def test_stores_reject_a_bad_id_before_touching_files(tmp_path: Path) -> None:
    """Each store method refuses a bad id without creating its file or directory."""
    sqlite, files = SQLiteStore(tmp_path / "db" / "m.db"), FileStore(tmp_path / "files")
    calls: list[tuple[str, tuple[object, ...]]] = [
        ("put", ("../x", "k", "1", None)),
        ("get", ("a/b", "k")),
        ("delete", ("..", "k")),
        ("keys", ("",)),
    ]
    for store in (sqlite, files, InMemoryStore()):
        for method, args in calls:
            with pytest.raises(InvalidAgentId):
                await getattr(store, method)(*args)
        await store.aclose()
    assert _all_paths(tmp_path) == set()


def _all_paths(root: Path) -> set[Path]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(Path(dirpath) / name)
    return found


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(agent_id=st.one_of(st.text(max_size=140), st.sampled_from(TRAVERSALS)))
@example(agent_id="../outside")
@example(agent_id="a" * 128)
def test_no_agent_id_creates_anything_outside_the_base(agent_id: str) -> None:
    """Whatever string is used as an agent id, FileStore and SQLiteStore write only inside
    their base, and an invalid id writes nothing at all."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = root / "base"

        async def use() -> None:
            for store in (FileStore(base / "files"), SQLiteStore(base / "memory.db")):
                try:
                    memory = AgentMemory(agent_id, store)
                    await memory.save("k", "v")
                    assert await memory.load("k") == "v"
                    assert await memory.delete("k")
                except InvalidAgentId:
                    assert VALID.fullmatch(agent_id) is None
                finally:
                    await store.aclose()

        asyncio.run(use())
        created = _all_paths(root)
        assert all(p.is_relative_to(base) for p in created)
        if VALID.fullmatch(agent_id) is None:
            assert created == set()
        else:
            assert (base / "files" / f"{agent_id}.json").is_file()
