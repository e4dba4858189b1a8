"""FileStore: the document's design (one JSON file per agent, fcntl locks), done right.

The document's store opened the agent's file, took ``flock`` on it, then
truncated it and dumped the new JSON in place. A process killed between the
truncate and the end of the dump left an empty or half-written file: every
key of that agent gone, and later saves then failed or started from scratch.

Here a writer, holding an exclusive ``flock`` on a separate lock file,
reads the current file, writes the complete new content to a temporary file
beside it, ``fsync``s it, ``os.replace``s it over the old one (atomic on
POSIX) and fsyncs the directory. Readers need no lock: they open either the
old complete file or the new complete one. A file that does not parse is
reported as :class:`~heddle.memory.CorruptStoreError` naming it, on reads and
on writes, and is never overwritten.

Each save still rewrites the agent's whole file, O(keys) per save: that is
the design; use :class:`~heddle.memory.SQLiteStore` when agents hold many
keys. POSIX only (fcntl).

Layout under ``base_path``, per agent::

    <agent_id>.json        {"format": 1, "generation": "<hex>", "agent_id": ..., "entries": {...}}
    .<agent_id>.lock       the lock file (empty)
    .<agent_id>.json.tmp   the next version while it is being written
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from heddle.memory._threaded import ThreadedStore
from heddle.memory._validation import path_inside, validate_agent_id
from heddle.memory.errors import CorruptStoreError, MemoryStoreError
from heddle.memory.store import Lookup, StoredEntry

__all__ = ["FILE_FORMAT", "FileStore"]

#: The ``format`` number written at the start of every agent file.
FILE_FORMAT: Final = 1
_HEAD = re.compile(rb'\{"format": 1, "generation": "([0-9a-f]{32})"')
_HEAD_BYTES = 4096
_ABSENT: Final = ("absent",)
_ENTRY_FIELDS: Final = {"value", "metadata", "created_at", "updated_at"}


@dataclass(frozen=True, slots=True)
class _AgentFiles:
    data: Path
    lock: Path
    tmp: Path


@dataclass(frozen=True, slots=True)
class _Snapshot:
    entries: dict[str, Any]
    version: Hashable


class FileStore(ThreadedStore):
    """Agent memory as one human-readable JSON file per agent under ``base_path``.

    Crash-safe (a save that returned is never lost, a killed writer never
    leaves a broken file) and safe for several processes, but each save
    rewrites the agent's whole file. ``base_path`` is created on first write.
    Keep it on a local file system: ``flock`` and atomic rename are not
    dependable on every network file system.
    """

    _thread_name = "heddle-filestore"

    def __init__(self, base_path: str | os.PathLike[str]) -> None:
        super().__init__(Path(base_path).absolute())

    # -- on the store's thread -------------------------------------------------

    def _files(self, agent_id: str) -> _AgentFiles:
        validate_agent_id(agent_id)
        data = path_inside(self._path, self._path / f"{agent_id}.json", agent_id)
        return _AgentFiles(
            data=data,
            lock=data.with_name(f".{agent_id}.lock"),
            tmp=data.with_name(f".{agent_id}.json.tmp"),
        )

    def _corrupt(self, path: Path, why: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"memory file {path} is corrupt ({why}); heddle will not overwrite it: "
            "move it aside or restore it from a backup",
            path=path,
        )

    def _read(self, agent_id: str, path: Path, known: Hashable = None) -> _Snapshot | None:
        """The file's entries and version; None if ``known`` is still the version."""
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, after fstat and read)
        except FileNotFoundError:
            return None if known == _ABSENT else _Snapshot({}, _ABSENT)
        with f:
            st = os.fstat(f.fileno())
            head = f.read(_HEAD_BYTES)
            match = _HEAD.match(head)
            # The generation is random per write; inode, size and times also
            # catch edits by other tools. Same version, same content.
            generation = match.group(1).decode() if match else None
            version = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, generation)
            if generation is not None and version == known:
                return None
            raw = head + f.read()
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._corrupt(path, f"not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
            raise self._corrupt(path, f'not a heddle FileStore file ("format": {FILE_FORMAT})')
        entries = doc.get("entries")
        if not isinstance(entries, dict):
            raise self._corrupt(path, '"entries" is not an object')
        for key, record in entries.items():
            if type(record) is not dict or record.keys() != _ENTRY_FIELDS:
                raise self._corrupt(path, f"entry {key!r} is malformed")
        if doc.get("agent_id") != agent_id:
            # Two ids that differ only in case share a file on case-insensitive
            # file systems (macOS, Windows): refuse to mix agents.
            raise MemoryStoreError(
                f"memory file {path} belongs to agent {doc.get('agent_id')!r}, not {agent_id!r} "
                "(agent ids that differ only in case collide on this file system)",
                path=path,
            )
        return _Snapshot(entries, version)

    def _entry(self, path: Path, key: str, record: Any) -> StoredEntry:
        try:
            metadata = record["metadata"]
            return StoredEntry(
                value=json.dumps(record["value"], separators=(",", ":")),
                metadata=None if metadata is None else json.dumps(metadata, separators=(",", ":")),
                created_at=datetime.fromisoformat(record["created_at"]),
                updated_at=datetime.fromisoformat(record["updated_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(path, f"entry {key!r} is malformed: {exc!r}") from exc

    @contextmanager
    def _locked(self, files: _AgentFiles) -> Iterator[None]:
        files.data.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            # flock locks belong to the open file description, so this also
            # excludes other threads of this process. The data file itself is
            # not locked: os.replace swaps its inode, which would swap the lock.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, agent_id: str, files: _AgentFiles, entries: dict[str, Any]) -> Hashable:
        generation = os.urandom(16).hex()
        doc = {"format": FILE_FORMAT, "generation": generation, "agent_id": agent_id}
        doc["entries"] = entries
        data = json.dumps(doc).encode("ascii")
        with open(files.tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(files.tmp, files.data)
        dir_fd = os.open(files.data.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)  # makes the rename itself durable
        finally:
            os.close(dir_fd)
        st = os.stat(files.data)  # we hold the lock: nobody replaced it since
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, generation)

    def _get_sync(self, agent_id: str, key: str, known: Hashable) -> Lookup:
        files = self._files(agent_id)
        snapshot = self._read(agent_id, files.data, known)
        if snapshot is None:
            return Lookup(None, known, unchanged=True)
        record = snapshot.entries.get(key)
        if record is None:
            return Lookup(None, snapshot.version)
        return Lookup(self._entry(files.data, key, record), snapshot.version)

    def _put_sync(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        files = self._files(agent_id)
        with self._locked(files):
            snapshot = self._read(agent_id, files.data)
            assert snapshot is not None
            now = datetime.now(UTC).isoformat()
            old = snapshot.entries.get(key)
            created = now
            if old is not None:
                created = self._entry(files.data, key, old).created_at.isoformat()
            snapshot.entries[key] = {
                "value": json.loads(value),
                "metadata": None if metadata is None else json.loads(metadata),
                "created_at": created,
                "updated_at": now,
            }
            version = self._write(agent_id, files, snapshot.entries)
        entry = StoredEntry(
            value, metadata, datetime.fromisoformat(created), datetime.fromisoformat(now)
        )
        return Lookup(entry, version)

    def _delete_sync(self, agent_id: str, key: str) -> bool:
        files = self._files(agent_id)
        if not files.data.exists():
            return False
        with self._locked(files):
            snapshot = self._read(agent_id, files.data)
            assert snapshot is not None
            if key not in snapshot.entries:
                return False
            del snapshot.entries[key]
            self._write(agent_id, files, snapshot.entries)
        return True

    def _keys_sync(self, agent_id: str, prefix: str | None) -> list[str]:
        files = self._files(agent_id)
        snapshot = self._read(agent_id, files.data)
        assert snapshot is not None
        keys = snapshot.entries.keys()
        if prefix:
            return sorted(k for k in keys if k.startswith(prefix))
        return sorted(keys)
