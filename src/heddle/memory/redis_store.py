"""RedisStore: agent memory in Redis, shared by every process and machine that can reach it.

Layout, per agent (``{ns}`` is the namespace, ``{agent}`` a Redis Cluster hash
tag so one agent's keys live on one node)::

    {ns}:memory:{agent}:entries   HASH  key -> "created|updated|metadata length|" metadata value
    {ns}:memory:{agent}:keys      ZSET  every key, score 0: ordered by bytes, for prefix ranges
    {ns}:memory:{agent}:version   STRING  a counter bumped by every write of the agent

Atomicity: each write is one Lua script, which Redis runs with nothing else
interleaved: it reads the old entry (to keep ``created_at``), writes the entry
and the key index, and bumps the agent's version. Two processes saving the
same agent at once both land, in some order; a reader sees the write whole or
not at all. Timestamps come from the Redis server's clock (``TIME``), so
writers on different machines agree on order.

The version counter is what keeps :class:`~heddle.memory.AgentMemory`'s cache
never stale across processes: ``get`` returns the entry and the version read
by the same script, and a cached entry is served only while the version has
not moved. A counter created afresh (a new agent, or after Redis lost its
data) starts at a random offset, so a restarted, empty Redis cannot hand a
cache a version it already holds for other data.

Key listing never uses ``KEYS``: it pages through the agent's sorted set with
``ZRANGEBYLEX``, from ``[prefix`` to ``[prefix\\xff`` (no UTF-8 text contains
byte 0xFF), so a prefix query costs O(log n + matches).

Every call to Redis has a deadline (``operation_timeout``), so a server that
hangs without dying fails a save or a load instead of stalling it for ever.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, TypeVar

from heddle._redis import (
    OPERATION_TIMEOUT,
    LoopClients,
    Script,
    check_namespace,
    check_seconds,
    check_url,
    import_redis,
    redacted,
)
from heddle.core._resource import AsyncResource
from heddle.core.errors import BackendError
from heddle.memory._validation import check_key, validate_agent_id
from heddle.memory.errors import MemoryStoreError, StoreClosedError
from heddle.memory.store import Lookup, StoredEntry, utc_from_micros

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

T = TypeVar("T")

_PAGE = 1000  # keys per ZRANGEBYLEX page: no single call holds Redis for long

# KEYS: entries, keys, version. ARGV: key, metadata length (-1: None),
# metadata..value, random start for a new version counter.
_PUT = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
local created = now
if old then
    created = tonumber(string.match(old, '^(%d+)|'))
else
    redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
local header = string.format('%d|%d|%s|', created, now, ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], header .. ARGV[3])
local version = redis.call('INCR', KEYS[3])
if version == 1 then
    version = redis.call('INCRBY', KEYS[3], ARGV[4])
end
return {version, created, now}
""")

# KEYS: entries, keys, version. ARGV: key, random start.
_DELETE = Script("""
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('INCR', KEYS[3]) == 1 then
    redis.call('INCRBY', KEYS[3], ARGV[2])
end
return 1
""")

# KEYS: entries, version. ARGV: key, the version the caller knows ('' for none).
_GET = Script("""
local version = redis.call('GET', KEYS[2]) or '0'
if version == ARGV[2] then
    return {version}
end
return {version, redis.call('HGET', KEYS[1], ARGV[1])}
""")


def _version_start() -> int:
    # Far from 0 and from any other start: a counter that was lost and
    # re-created does not walk through the versions it had before. Below 2**53
    # with room to count: Lua holds numbers as doubles.
    return secrets.randbits(44)


def _decode_entry(raw: bytes) -> StoredEntry:
    created, updated, meta_len, rest = raw.split(b"|", 3)
    n = int(meta_len)
    if n < 0:
        metadata, value = None, rest
    else:
        metadata, value = rest[:n].decode(), rest[n:]
    return StoredEntry(
        value.decode(), metadata, utc_from_micros(int(created)), utc_from_micros(int(updated))
    )


class RedisStore(AsyncResource):
    """A :class:`~heddle.memory.MemoryStore` in Redis: every process using the same
    server and ``namespace`` shares the memory.

    ``url`` is a redis-py URL (``redis://host:port/db``, ``rediss://`` for TLS,
    ``unix://``); ``namespace`` prefixes every key the store writes. Each save
    is atomic; saves from any number of processes are never lost. Connections
    open on first use and close with :meth:`aclose` (or when the event loop
    that opened them ends). Needs ``pip install heddle[redis]``.

    ::

        async with RedisStore("redis://127.0.0.1:6379/0") as store:
            memory = AgentMemory("researcher", store)
            await memory.save("notes", ["a", "b"])

    Each call gets ``operation_timeout`` seconds (default 5) to hear back from
    Redis. Every failure is a :class:`~heddle.memory.MemoryStoreError` naming
    the server: its ``__cause__`` is a :class:`~heddle.core.errors.BackendTimeout`
    (a ``TimeoutError``) if Redis did not answer in time, else a
    :class:`~heddle.core.errors.BackendError` (unreachable server, wrong
    password), whose own cause is redis-py's error.
    """

    __slots__ = ("_clients", "_closed", "_namespace")

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        namespace: str = "heddle",
        operation_timeout: float = OPERATION_TIMEOUT,
    ) -> None:
        import_redis()  # fail now, with the install hint, rather than at the first save
        timeout = check_seconds(operation_timeout, "operation_timeout")
        self._clients = LoopClients(check_url(url), timeout=timeout)
        self._namespace = check_namespace(namespace)
        self._closed = False

    @property
    def url(self) -> str:
        """The server's URL, password masked."""
        return redacted(self._clients.url)

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def operation_timeout(self) -> float:
        """How long one call waits for Redis, in seconds."""
        return self._clients.timeout

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    def _keys_of(self, agent_id: str) -> tuple[str, str, str]:
        base = f"{self._namespace}:memory:{{{agent_id}}}"
        return f"{base}:entries", f"{base}:keys", f"{base}:version"

    async def _run(self, what: str, operation: Callable[[Redis], Awaitable[T]]) -> T:
        if self._closed:
            raise StoreClosedError(f"RedisStore({self.url!r}) is closed")
        try:
            return await self._clients.run(f"RedisStore.{what}", operation)
        except BackendError as exc:
            raise MemoryStoreError(f"{exc} (namespace {self._namespace!r})") from exc

    async def get(self, agent_id: str, key: str, *, known_version: Hashable = None) -> Lookup:
        """The entry of ``key`` (None if absent) and the agent's version, read together."""
        validate_agent_id(agent_id)
        check_key(key)
        entries, _keys, version = self._keys_of(agent_id)
        known = str(known_version) if isinstance(known_version, int) else ""
        reply = await self._run(
            "get", lambda client: _GET(client, [entries, version], [key, known])
        )
        current = int(reply[0])
        if len(reply) == 1:
            return Lookup(None, current, unchanged=True)
        raw = reply[1]
        return Lookup(None if raw is None else _decode_entry(raw), current)

    async def put(self, agent_id: str, key: str, value: str, metadata: str | None) -> Lookup:
        """Store JSON texts under ``key`` in one atomic script; committed when this returns."""
        validate_agent_id(agent_id)
        check_key(key)
        entries, keys, version = self._keys_of(agent_id)
        if metadata is None:
            meta_len, payload = -1, value.encode()
        else:
            meta = metadata.encode()
            meta_len, payload = len(meta), meta + value.encode()
        args = [key, meta_len, payload, _version_start()]
        new_version, created, now = await self._run(
            "put", lambda client: _PUT(client, [entries, keys, version], args)
        )
        entry = StoredEntry(value, metadata, utc_from_micros(created), utc_from_micros(now))
        return Lookup(entry, int(new_version))

    async def delete(self, agent_id: str, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        validate_agent_id(agent_id)
        check_key(key)
        entries, keys, version = self._keys_of(agent_id)
        args = [key, _version_start()]
        removed = await self._run(
            "delete", lambda client: _DELETE(client, [entries, keys, version], args)
        )
        return bool(removed)

    async def keys(self, agent_id: str, prefix: str | None = None) -> list[str]:
        """The agent's keys (those starting with ``prefix``), sorted by code point.

        Read in pages of 1,000 with ``ZRANGEBYLEX``; a key written or deleted
        while the listing runs may or may not be in it.
        """
        validate_agent_id(agent_id)
        if prefix is not None:
            check_key(prefix)
        _entries, keys, _version = self._keys_of(agent_id)
        low = b"[" + prefix.encode() if prefix else b"-"
        high = b"[" + prefix.encode() + b"\xff" if prefix else b"+"
        found: list[str] = []
        while True:  # a deadline per page: a long listing is not a hang
            page = await self._page(keys, low, high)
            found.extend(k.decode() if isinstance(k, bytes) else k for k in page)
            if len(page) < _PAGE:
                return found
            last = page[-1]
            low = b"(" + (last if isinstance(last, bytes) else last.encode())

    async def _page(self, keys: str, low: bytes, high: bytes) -> list[bytes | str]:
        page: list[bytes | str] = await self._run(
            "keys", lambda client: client.zrangebylex(keys, low, high, start=0, num=_PAGE)
        )
        return page

    async def aclose(self) -> None:
        """Close the connections (idempotent); later calls raise StoreClosedError."""
        self._closed = True
        await self._clients.aclose()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RedisStore {self.url} namespace={self._namespace!r}{state}>"
