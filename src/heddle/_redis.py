"""Plumbing shared by heddle's Redis backends: the lazy import, one client per event loop.

``redis`` is an optional dependency (``pip install heddle[redis]``): nothing
here imports it until a Redis-backed object is first used, so ``import heddle``
works without it.

A ``redis.asyncio`` client belongs to the event loop it first ran on; used from
a second loop (a second ``asyncio.run``) it fails, and its sockets leak. The
rest of heddle serves several loops one after another, so :class:`LoopClients`
keeps one client per loop and closes each one while its loop can still run
the close: explicitly in ``aclose()``, or, if nobody called that, when the
loop shuts down (``asyncio.run`` finalizes async generators before closing
the loop, and the client's lifetime is tied to one such generator).

On Python 3.11 the clients have no socket timeout unless the URL sets one
(``?socket_timeout=5``). redis-py 8 defaults to 5 s and then runs each
command under ``asyncio.wait_for``, which before Python 3.12 swallows a
cancellation that arrives as the command completes (CPython gh-86296): in
our measurements, about half of the cancellations of a first command on a
new connection were lost, so a cancelled node or bus reader kept running.
Dead connections are still found by TCP keepalive, which redis-py enables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sys
from collections.abc import AsyncGenerator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from heddle.core.errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "MAX_CONNECTIONS",
    "LoopClients",
    "Script",
    "check_namespace",
    "check_url",
    "import_redis",
    "redacted",
]

#: Connections per client (per event loop). More concurrent commands wait for a
#: free one (up to 20 s) rather than open ever more sockets.
MAX_CONNECTIONS = 32

_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def import_redis() -> ModuleType:
    """The ``redis`` package (with ``redis.asyncio`` loaded), or an ImportError saying how
    to install it."""
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:
        raise ImportError(
            "heddle's Redis backends need the 'redis' package (redis-py 5 or newer): "
            "pip install heddle[redis]"
        ) from exc
    return redis


def check_namespace(value: object, parameter: str = "namespace") -> str:
    """A key prefix: 1 to 100 of ``A-Z a-z 0-9 _ . : -`` (no braces: they are hash tags)."""
    if not isinstance(value, str) or _NAMESPACE.fullmatch(value) is None:
        raise ConfigurationError(
            f"{parameter} must be 1 to 100 characters from A-Z a-z 0-9 _ . : -, got {value!r}",
            parameter=parameter,
        )
    return value


def check_url(url: object) -> str:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL (checked for its scheme only)."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"url must be a redis://, rediss:// or unix:// URL, got {url!r}", parameter="url"
        )
    return url


def redacted(url: str) -> str:
    """``url`` without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Script:
    """A Lua script run with EVALSHA, falling back to EVAL (which caches it) on NOSCRIPT.

    Unlike redis-py's ``register_script`` it is bound to no client, so one
    object serves the client of every event loop.
    """

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except import_redis().exceptions.NoScriptError:
            return await client.eval(self.text, len(keys), *keys, *args)


async def _closes_with_its_loop(client: Redis) -> AsyncGenerator[None, None]:
    # Suspended at the yield for the client's whole life. aclose() on it, or
    # the loop's shutdown_asyncgens(), runs the finally clause on the loop.
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


class LoopClients:
    """One ``redis.asyncio.Redis`` client per event loop, created on first use."""

    __slots__ = ("_clients", "_kwargs", "_url")

    def __init__(self, url: str, **client_kwargs: Any) -> None:
        self._url = url
        self._kwargs = client_kwargs
        self._clients: dict[
            asyncio.AbstractEventLoop, tuple[Redis, AsyncGenerator[None, None]]
        ] = {}

    @property
    def url(self) -> str:
        return self._url

    async def get(self) -> Redis:
        """The client of the running loop (connections are opened lazily, by the first command)."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is not None:
            return found[0]
        for stale in [other for other in self._clients if other.is_closed()]:
            del self._clients[stale]  # closed with its loop by the generator
        aioredis = import_redis().asyncio
        settings: dict[str, Any] = {"max_connections": MAX_CONNECTIONS}
        if sys.version_info < (3, 12):
            settings["socket_timeout"] = None  # see the module docstring
        # Options in the URL's query string take precedence over these.
        pool = aioredis.BlockingConnectionPool.from_url(self._url, **settings, **self._kwargs)
        client: Redis = aioredis.Redis.from_pool(pool)
        lifetime = _closes_with_its_loop(client)
        await anext(lifetime)  # registers it with the loop's async-generator hooks
        self._clients[loop] = (client, lifetime)
        return client

    async def aclose(self) -> None:
        """Close the running loop's client, if it has one (idempotent).

        A client of another loop is closed when that loop shuts down.
        """
        found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()
