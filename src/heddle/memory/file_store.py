"""FileStore: one human-readable JSON file per agent, safe across processes, crashes and links.

Rewriting an agent's file in place (truncate it, then dump the new JSON) loses
every key of the agent when the process dies between the two. So a writer,
holding an exclusive ``flock`` on a separate lock file, reads the current
file, writes the complete new content to a temporary file beside it,
``fsync``s it, ``os.replace``s it over the old one (atomic on POSIX) and
fsyncs the directory. Readers need no lock: they open either the old complete
file or the new complete one. A file that does not parse is reported as
:class:`~heddle.memory.CorruptStoreError` naming it, on reads and on writes,
and is never overwritten.

Other programs may write in the store's directory (the agents' own tools
among them), so nothing planted there may redirect a write. ``base_path`` is
resolved once, when the store is built, so a symlinked ``base_path`` works;
after that FileStore follows no symbolic link. Each call reaches the base
directory from the root one component at a time with ``O_NOFOLLOW``, opens
the agent's files relative to it (``dir_fd``) with ``O_NOFOLLOW`` and checks
with ``fstat`` that each is a regular file; the temporary file is created
with ``O_EXCL``, so whatever was at its name (a link, a hard link to some
other file) is never written through. A link or a special file where
FileStore expects a directory or one of its own files raises
:class:`~heddle.memory.MemoryStoreError` naming the path, and nothing is
written. A temporary file left by a writer that died is a regular file: the
next writer, holding the lock, removes it.

Each save rewrites the agent's whole file, O(keys) per save: the price of
one readable file per agent. Use :class:`~heddle.memory.SQLiteStore` when
agents hold many keys. POSIX only (fcntl, ``dir_fd``).

Layout under ``base_path``, per agent::

    <agent_id>.json        {"format": 1, "generation": "<hex>", "agent_id": ..., "entries": {...}}
    .<agent_id>.lock       the lock file (empty)
    .<agent_id>.json.tmp   the next version while it is being written
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from heddle.memory._threaded import ThreadedStore
from heddle.memory._validation import decode_json, validate_agent_id
from heddle.memory.errors import CorruptStoreError, MemoryStoreError
from heddle.memory.store import Lookup, StoredEntry

__all__ = ["FILE_FORMAT", "FileStore"]

#: The ``format`` number written at the start of every agent file.
FILE_FORMAT: Final = 1
_HEAD = re.compile(rb'\{"format": 1, "generation": "([0-9a-f]{32})"')
_HEAD_BYTES = 4096
_ABSENT: Final = ("absent",)
_ENTRY_FIELDS: Final = {"value", "metadata", "created_at", "updated_at"}

_DIRECTORY: Final = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The directories above the base are only passed through: O_PATH (Linux) opens
# them with search permission alone, as a path lookup needs.
_PASS_THROUGH: Final[int] = getattr(os, "O_PATH", os.O_RDONLY)
# O_NONBLOCK: opening a FIFO planted at a file's name must not hang; fstat then refuses it.
_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LOCK: Final = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What open() says when a name holds something other than a regular file:
# a symlink (with O_NOFOLLOW), a directory, a socket.
_NOT_A_FILE: Final = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO})


@dataclass(frozen=True, slots=True)
class _AgentFiles:
    """The names of an agent's files, inside the base directory."""

    data: str
    lock: str
    tmp: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    entries: dict[str, Any]
    version: Hashable


def _parse_text(text: str, what: str) -> Any:
    try:
        return decode_json(text)
    except ValueError as exc:
        raise TypeError(f"{what} is not JSON text: {exc}") from exc


class FileStore(ThreadedStore):
    """Agent memory as one human-readable JSON file per agent under ``base_path``.

    Crash-safe (a save that returned is never lost, a killed writer never
    leaves a broken file) and safe for several processes, but each save
    rewrites the agent's whole file. ``base_path`` is resolved when the store
    is built and created on first write. FileStore follows no symbolic link
    below it and writes through nothing it did not create: a link or special
    file in its way raises :class:`~heddle.memory.MemoryStoreError` naming it.
    Keep it on a local file system: ``flock`` and atomic rename are not
    dependable on every network file system.
    """

    _thread_name = "heddle-filestore"

    def __init__(self, base_path: str | os.PathLike[str]) -> None:
        # Resolved once: a base_path that is a link on purpose works, and a
        # link that appears on the way later is refused (see _directory).
        super().__init__(Path(base_path).resolve())

    # -- on the store's thread -------------------------------------------------

    def _files(self, agent_id: str) -> _AgentFiles:
        # A valid id is one path component: the names cannot leave the directory.
        validate_agent_id(agent_id)
        return _AgentFiles(
            data=f"{agent_id}.json", lock=f".{agent_id}.lock", tmp=f".{agent_id}.json.tmp"
        )

    def _corrupt(self, path: Path, why: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"memory file {path} is corrupt ({why}); heddle will not overwrite it: "
            "move it aside or restore it from a backup",
            path=path,
        )

    @staticmethod
    def _mode(dir_fd: int, name: str) -> int | None:
        """The file type and mode of ``name`` itself (a link is not followed); None if absent."""
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None

    def _refuse(self, path: Path, dir_fd: int, expected: str) -> MemoryStoreError:
        """The error for ``path`` (named relative to ``dir_fd``): it is not ``expected``."""
        mode = self._mode(dir_fd, path.name)
        if mode is None:
            found = "gone"  # changed again since it was refused
        elif stat.S_ISLNK(mode):
            found = "a symbolic link"
        elif stat.S_ISDIR(mode):
            found = "a directory"
        elif stat.S_ISREG(mode):
            found = "a regular file"
        else:
            found = "a special file"
        return MemoryStoreError(
            f"{path} is {found}, where FileStore expects {expected}: it follows no symbolic "
            f"links and writes through nothing it did not create under {self._path}, so it "
            "neither reads nor writes there; move it aside",
            path=path,
        )

    def _open_directory(self, parent: int, path: Path, flags: int, create: bool) -> int | None:
        try:
            try:
                return os.open(path.name, flags, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
                with suppress(FileExistsError):  # made by another writer meanwhile
                    os.mkdir(path.name, dir_fd=parent)
                return os.open(path.name, flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # O_DIRECTORY | O_NOFOLLOW refused it
                raise self._refuse(path, parent, "a directory") from exc
            raise

    @contextmanager
    def _directory(self, *, create: bool) -> Iterator[int | None]:
        """The base directory, open (None if it does not exist and not ``create``).

        Reached from the root one component at a time, following no link: a
        component replaced by a link since the store was built cannot send a
        write elsewhere.
        """
        parts = self._path.parts
        fd: int | None = os.open(parts[0], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for depth in range(1, len(parts)):
                assert fd is not None
                # The base itself is opened for reading: fsync needs a real descriptor.
                access = os.O_RDONLY if depth == len(parts) - 1 else _PASS_THROUGH
                path = Path(*parts[: depth + 1])
                child = self._open_directory(fd, path, access | _DIRECTORY, create)
                os.close(fd)
                fd = child
                if fd is None:
                    break
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _open_file(self, base: int, name: str, flags: int, mode: int = 0o644) -> int:
        """``name`` in the base directory, opened with ``flags``, checked to be a regular file."""
        try:
            fd = os.open(name, flags, mode, dir_fd=base)
        except OSError as exc:
            if exc.errno in _NOT_A_FILE:
                raise self._refuse(self._path / name, base, "a regular file") from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._refuse(self._path / name, base, "a regular file")
        return fd

    def _read(
        self, agent_id: str, base: int | None, files: _AgentFiles, known: Hashable = None
    ) -> _Snapshot | None:
        """The file's entries and version; None if ``known`` is still the version."""
        path = self._path / files.data
        absent = None if known == _ABSENT else _Snapshot({}, _ABSENT)
        if base is None:
            return absent
        try:
            fd = self._open_file(base, files.data, _READ)
        except FileNotFoundError:
            return absent
        with open(fd, "rb") as f:
            st = os.fstat(fd)
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
            doc = decode_json(raw)
        except ValueError as exc:  # also UnicodeDecodeError and JSONDecodeError
            raise self._corrupt(path, f"unreadable JSON: {exc}") from exc
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

    def _entry(self, files: _AgentFiles, key: str, record: Any) -> StoredEntry:
        try:
            metadata = record["metadata"]
            return StoredEntry(
                value=json.dumps(record["value"], separators=(",", ":")),
                metadata=None if metadata is None else json.dumps(metadata, separators=(",", ":")),
                created_at=datetime.fromisoformat(record["created_at"]),
                updated_at=datetime.fromisoformat(record["updated_at"]),
            )
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise self._corrupt(
                self._path / files.data, f"entry {key!r} is malformed: {exc!r}"
            ) from exc

    @contextmanager
    def _locked(self, base: int, files: _AgentFiles) -> Iterator[None]:
        fd = self._open_file(base, files.lock, _LOCK)
        try:
            # flock locks belong to the open file description, so this also
            # excludes other threads of this process. The data file itself is
            # not locked: os.replace swaps its inode, which would swap the lock.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _create_temp(self, base: int, name: str) -> int:
        # O_EXCL: nothing found at the name is opened, let alone written through.
        expected = "its temporary file or nothing"
        try:
            return os.open(name, _TEMP, 0o666, dir_fd=base)
        except FileExistsError:
            mode = self._mode(base, name)
            if mode is not None and not stat.S_ISREG(mode):
                raise self._refuse(self._path / name, base, expected) from None
        # A regular file: what a writer that died mid-save leaves. We hold the
        # lock, so no live writer is using it.
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=base)
        try:
            return os.open(name, _TEMP, 0o666, dir_fd=base)
        except FileExistsError:  # planted again meanwhile
            raise self._refuse(self._path / name, base, expected) from None

    def _write(
        self, agent_id: str, base: int, files: _AgentFiles, entries: dict[str, Any]
    ) -> Hashable:
        generation = os.urandom(16).hex()
        doc = {"format": FILE_FORMAT, "generation": generation, "agent_id": agent_id}
        doc["entries"] = entries
        path = self._path / files.data
        try:
            data = json.dumps(doc).encode("ascii")
        except RecursionError as exc:  # only a file edited by another program can be this deep
            raise self._corrupt(path, "nested too deeply to write back") from exc
        fd = self._create_temp(base, files.tmp)
        try:
            written = os.fstat(fd)
            try:
                f = open(fd, "wb")  # noqa: SIM115 (closed by the with below)
            except BaseException:
                os.close(fd)
                raise
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(files.tmp, files.data, src_dir_fd=base, dst_dir_fd=base)
        except BaseException:
            with suppress(OSError):
                os.unlink(files.tmp, dir_fd=base)
            raise
        os.fsync(base)  # makes the rename itself durable
        st = os.stat(files.data, dir_fd=base, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != (written.st_dev, written.st_ino):
            # Another program swapped the temp file between our write and the
            # rename; whatever it put there is now the agent's file.
            raise MemoryStoreError(
                f"{self._path / files.tmp} was replaced by another program while FileStore "
                f"wrote it, so {path} may not hold this save; check it",
                path=path,
            )
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, generation)

    def _get_sync(self, agent_id: str, key: str, known: Hashable) -> Lookup:
        files = self._files(agent_id)
        with self._directory(create=False) as base:
            snapshot = self._read(agent_id, base, files, known)
        if snapshot is None:
            return Lookup(None, known, unchanged=True)
        record = snapshot.entries.get(key)
        if record is None:
            return Lookup(None, snapshot.version)
        return Lookup(self._entry(files, key, record), snapshot.version)

    def _put_sync(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        files = self._files(agent_id)
        record = {
            "value": _parse_text(value, "value"),
            "metadata": None if metadata is None else _parse_text(metadata, "metadata"),
        }
        with self._directory(create=True) as base:
            assert base is not None
            with self._locked(base, files):
                snapshot = self._read(agent_id, base, files)
                assert snapshot is not None
                now = datetime.now(UTC).isoformat()
                old = snapshot.entries.get(key)
                created = now
                if old is not None:
                    created = self._entry(files, key, old).created_at.isoformat()
                snapshot.entries[key] = record | {"created_at": created, "updated_at": now}
                version = self._write(agent_id, base, files, snapshot.entries)
        entry = StoredEntry(
            value, metadata, datetime.fromisoformat(created), datetime.fromisoformat(now)
        )
        return Lookup(entry, version)

    def _delete_sync(self, agent_id: str, key: str) -> bool:
        files = self._files(agent_id)
        with self._directory(create=False) as base:
            if base is None:
                return False
            try:
                os.stat(files.data, dir_fd=base, follow_symlinks=False)
            except FileNotFoundError:
                return False  # and no lock file is made for an agent never saved
            with self._locked(base, files):
                snapshot = self._read(agent_id, base, files)
                assert snapshot is not None
                if key not in snapshot.entries:
                    return False
                del snapshot.entries[key]
                self._write(agent_id, base, files, snapshot.entries)
        return True

    def _keys_sync(self, agent_id: str, prefix: str | None) -> list[str]:
        files = self._files(agent_id)
        with self._directory(create=False) as base:
            snapshot = self._read(agent_id, base, files)
        assert snapshot is not None
        keys = snapshot.entries.keys()
        if prefix:
            return sorted(k for k in keys if k.startswith(prefix))
        return sorted(keys)
