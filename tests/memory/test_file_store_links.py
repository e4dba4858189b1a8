"""FileStore and what others plant in its directory: links and special files are never followed,
never written through, and refused with a MemoryStoreError naming them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heddle.memory import AgentMemory, FileStore, MemoryStoreError

TARGETS = ["existing-file", "missing-file"]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The store's directory, made."""
    path = tmp_path / "base"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the base that FileStore must never write in."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def _plant_link(at: Path, outside: Path, target: str) -> Path:
    """A symlink at ``at`` to a file in ``outside``, which exists or not."""
    aim = outside / "target"
    if target == "existing-file":
        aim.write_text("precious")
    at.symlink_to(aim)
    return aim


def _untouched(aim: Path, target: str) -> bool:
    if target == "existing-file":
        return aim.read_text() == "precious"
    return not aim.exists()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", [".agent.json.tmp", ".agent.lock"])
async def test_a_link_at_the_temp_or_lock_file_is_refused_and_never_written_through(
    base: Path, outside: Path, name: str, target: str
) -> None:
    """A save that finds a symlink at its temp or lock file raises MemoryStoreError naming it,
    writes nothing through it, keeps the agent's data, and works once the link is gone."""
    async with FileStore(base) as store:
        memory = AgentMemory("agent", store, max_cache_size=0)
        await memory.save("k", "old")
        (base / name).unlink(missing_ok=True)
        aim = _plant_link(base / name, outside, target)
        with pytest.raises(MemoryStoreError, match="is a symbolic link") as caught:
            await memory.save("k", "new")
        assert caught.value.path == base / name
        assert str(base / name) in str(caught.value)
        assert _untouched(aim, target)
        assert sorted(os.listdir(outside)) == (["target"] if target == "existing-file" else [])
        assert await memory.load("k") == "old"  # readers take no lock
        (base / name).unlink()
        await memory.save("k", "new")
        assert await AgentMemory("agent", store).load("k") == "new"
    assert _untouched(aim, target)


@pytest.mark.parametrize("target", [*TARGETS, "file-inside-the-base"])
async def test_a_link_at_the_agent_file_is_refused_by_every_call(
    base: Path, outside: Path, target: str
) -> None:
    """A symlink at <agent>.json, wherever it points, is neither read nor replaced: load, save,
    delete and keys raise MemoryStoreError naming it; removing it makes the agent usable."""
    if target == "file-inside-the-base":
        async with FileStore(base) as store:
            await AgentMemory("agent", store).save("k", "real")
        (base / "agent.json").rename(base / "kept.json")
        (base / "agent.json").symlink_to(base / "kept.json")
        aim = base / "kept.json"
        before = aim.read_bytes()
    else:
        aim = _plant_link(base / "agent.json", outside, target)
    async with FileStore(base) as store:
        memory = AgentMemory("agent", store)
        for call in (
            lambda: memory.load("k"),
            lambda: memory.save("k", "new"),
            lambda: memory.delete("k"),
            lambda: memory.keys(),
        ):
            with pytest.raises(MemoryStoreError, match="is a symbolic link") as caught:
                await call()
            assert caught.value.path == base / "agent.json"
        assert (base / "agent.json").is_symlink()
        (base / "agent.json").unlink()
        await memory.save("k", "new")
        assert await AgentMemory("agent", store).load("k") == "new"
    if target == "file-inside-the-base":
        assert aim.read_bytes() == before
    else:
        assert _untouched(aim, target)


async def test_a_hard_link_at_the_temp_file_is_not_written_through(
    base: Path, outside: Path
) -> None:
    """A hard link to an outside file planted at the temp file's name is set aside like a
    leftover temp file: the save succeeds and the outside file keeps its content."""
    async with FileStore(base) as store:
        memory = AgentMemory("agent", store)
        await memory.save("k", "old")
        precious = outside / "precious"
        precious.write_text("precious")
        os.link(precious, base / ".agent.json.tmp")
        await memory.save("k", "new")
        assert await AgentMemory("agent", store).load("k") == "new"
    assert precious.read_text() == "precious"
    assert not (base / ".agent.json.tmp").exists()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["agent.json", ".agent.lock", ".agent.json.tmp"])
@pytest.mark.parametrize("planted", ["fifo", "directory"])
async def test_a_fifo_or_a_directory_at_a_file_name_is_refused_without_hanging(
    base: Path, name: str, planted: str
) -> None:
    """A FIFO or a directory where FileStore keeps a file makes a save raise MemoryStoreError
    naming it (opening a FIFO does not block), and the agent's data stays readable."""
    async with FileStore(base) as store:
        memory = AgentMemory("agent", store)
        if name != "agent.json":
            await memory.save("k", "old")
        (base / name).unlink(missing_ok=True)
        if planted == "fifo":
            os.mkfifo(base / name)
        else:
            (base / name).mkdir()
        found = "a special file" if planted == "fifo" else "a directory"
        with pytest.raises(MemoryStoreError, match=f"is {found}") as caught:
            await memory.save("k", "new")
        assert caught.value.path == base / name
        if name != "agent.json":
            assert await AgentMemory("agent", store).load("k") == "old"


@pytest.mark.parametrize("component", ["base", "parent"])
async def test_a_link_put_on_the_way_to_the_base_after_construction_is_refused(
    tmp_path: Path, outside: Path, component: str
) -> None:
    """When the base directory, or a directory above it, is replaced by a symlink to another
    directory after the store was built, calls raise MemoryStoreError naming it and nothing is
    written there."""
    base = tmp_path / "parent" / "base"
    async with FileStore(base) as store:
        memory = AgentMemory("agent", store, max_cache_size=0)
        await memory.save("k", "old")
        swapped = base if component == "base" else base.parent
        swapped.rename(swapped.with_name("moved"))
        swapped.symlink_to(outside)  # the base is now outside, or outside/base
        for call in (lambda: memory.save("k", "new"), lambda: memory.load("k")):
            with pytest.raises(MemoryStoreError, match="is a symbolic link") as caught:
                await call()
            assert caught.value.path == swapped
        assert os.listdir(outside) == []
        swapped.unlink()
        swapped.with_name("moved").rename(swapped)
        assert await memory.load("k") == "old"
        await memory.save("k", "new")
        assert await memory.load("k") == "new"


async def test_a_symlinked_base_path_chosen_by_the_user_keeps_working(tmp_path: Path) -> None:
    """A base_path that is a symlink when the store is built is resolved once and used."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    async with FileStore(tmp_path / "link") as store:
        assert store.path == real
        await AgentMemory("agent", store).save("k", 1)
        assert await AgentMemory("agent", store).load("k") == 1
    assert (real / "agent.json").is_file()


async def test_the_base_and_its_missing_parents_are_made_on_the_first_save(
    tmp_path: Path,
) -> None:
    """Reaching the base one directory at a time still creates every missing one."""
    base = tmp_path / "a" / "b" / "base"
    async with FileStore(base) as store:
        await AgentMemory("agent", store).save("k", 1)
    assert sorted(os.listdir(base)) == [".agent.lock", "agent.json"]


async def test_a_file_where_the_base_directory_should_be_is_refused(tmp_path: Path) -> None:
    """A regular file at a directory of the base's path makes saves and loads raise
    MemoryStoreError naming it, and is left as it was."""
    (tmp_path / "parent").write_text("not a directory")
    async with FileStore(tmp_path / "parent" / "base") as store:
        memory = AgentMemory("agent", store)
        for call in (lambda: memory.save("k", 1), lambda: memory.load("k")):
            with pytest.raises(
                MemoryStoreError, match=r"is a regular file, where .* a directory"
            ) as caught:
                await call()
            assert caught.value.path == tmp_path / "parent"
    assert (tmp_path / "parent").read_text() == "not a directory"


async def test_a_temp_file_swapped_by_another_program_mid_save_is_reported(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another program replaces the temp file between its write and the rename, the save
    raises MemoryStoreError saying the agent's file may not hold it, rather than claim success."""
    async with FileStore(base) as store:
        memory = AgentMemory("agent", store, max_cache_size=0)
        await memory.save("k", "old")
        real_fsync = os.fsync
        swapped = False

        def swap_then_fsync(fd: int) -> None:
            nonlocal swapped
            if not swapped:
                swapped = True
                impostor = base / "impostor"
                impostor.write_bytes((base / "agent.json").read_bytes())
                os.replace(impostor, base / ".agent.json.tmp")
            real_fsync(fd)

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", swap_then_fsync)
            with pytest.raises(MemoryStoreError, match="replaced by another program") as caught:
                await memory.save("k", "new")
        assert caught.value.path == base / "agent.json"
        assert await memory.load("k") == "old"
        await memory.save("k", "after")
        assert await memory.load("k") == "after"
