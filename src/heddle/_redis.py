"""Plumbing shared by heddle's Redis backends: the lazy import, one client per event loop,
and the deadline every Redis operation runs under.

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

Deadlines. A Redis server that hangs without dying (stopped, swapping, stuck
in a long script) keeps its TCP connections open, so keepalive never notices
and a command waits for ever. Every operation therefore goes through
:meth:`LoopClients.run`, which bounds it with ``asyncio.timeout()`` and turns
every failure into :class:`~heddle.core.errors.BackendError` (a deadline
missed: :class:`~heddle.core.errors.BackendTimeout`) with redis-py's error as
the cause. redis-py's own timeout (``socket_timeout``) is off unless the URL
sets one: it runs each command under ``asyncio.wait_for``, which before Python
3.12 swallows a cancellation that arrives as the command completes (CPython
gh-86296; in our measurements about half of the cancellations of a first
command on a new connection were lost, so a cancelled node or bus reader kept
running). ``asyncio.timeout()`` has no inner task: its cancellation goes into
the command itself, and on leaving it tells its own expiry from an outside
cancellation, which it lets through. ``run`` also re-raises an outside
cancellation that a library swallowed, so a caller cannot lose one.

A command cut off by its deadline leaves its connection mid-reply. redis-py
disconnects a connection whose command was interrupted (by any exception,
cancellation included) before it goes back to the pool, and the pool
reconnects it on its next use, so a late reply is never read as the answer to
the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from heddle.core import _checks
from heddle.core.errors import BackendError, BackendTimeout, ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "MAX_CONNECTIONS",
    "OPERATION_TIMEOUT",
    "LoopClients",
    "Script",
    "check_namespace",
    "check_seconds",
    "check_url",
    "import_redis",
    "redacted",
]

#: Connections per client (per event loop). More concurrent commands wait for a
#: free one (within their deadline) rather than open ever more sockets.
MAX_CONNECTIONS = 32

#: Default deadline of one Redis operation, in seconds: far above a healthy
#: server's milliseconds, short enough that a hung one does not stall a run.
OPERATION_TIMEOUT = 5.0

T = TypeVar("T")

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


def check_seconds(value: object, parameter: str) -> float:
    """A finite number of seconds > 0, as a float: a deadline that can pass."""
    return _checks.check_seconds(value, parameter, exclusive=True, finite=True)


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


async def _closes_with_its_loop(client: Redis, within: float) -> AsyncGenerator[None, None]:
    # Suspended at the yield for the client's whole life. aclose() on it, or
    # the loop's shutdown_asyncgens(), runs the finally clause on the loop.
    try:
        yield
    finally:
        # Closing waits for the sockets to close: bounded too, for a hung server.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(within):
                await client.aclose()


class LoopClients:
    """One ``redis.asyncio.Redis`` client per event loop, created on first use.

    ``timeout`` is the default deadline of :meth:`run`, in seconds.
    """

    __slots__ = ("_clients", "_kwargs", "_timeout", "_url")

    def __init__(
        self, url: str, *, timeout: float = OPERATION_TIMEOUT, **client_kwargs: Any
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._kwargs = client_kwargs
        self._clients: dict[
            asyncio.AbstractEventLoop, tuple[Redis, AsyncGenerator[None, None]]
        ] = {}

    @property
    def url(self) -> str:
        return self._url

    @property
    def backend(self) -> str:
        """The server as errors name it: ``"Redis at <url>"``, password masked."""
        return f"Redis at {redacted(self._url)}"

    @property
    def timeout(self) -> float:
        """The default deadline of one operation, in seconds."""
        return self._timeout

    async def run(
        self,
        what: str,
        operation: Callable[[Redis], Awaitable[T]],
        *,
        within: float | None = None,
    ) -> T:
        """``await operation(client)`` with the running loop's client, under a deadline.

        ``within`` (seconds) overrides the default deadline (a blocking read
        needs more). Raises :class:`BackendTimeout` if the deadline passes,
        :class:`BackendError` for any other Redis failure (``what`` names the
        operation in both), each with the underlying error as ``__cause__``.
        A cancellation from outside always propagates, even one that arrives
        as the deadline passes or that a library swallowed.
        """
        seconds = self._timeout if within is None else within
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Redis operations must run inside an asyncio task")
        cancelling = task.cancelling()
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                result = await operation(await self.get())
        except (import_redis().RedisError, OSError) as exc:  # TimeoutError is an OSError
            if task.cancelling() > cancelling:
                raise asyncio.CancelledError from exc  # turned into an error by a library
            if deadline.expired():
                raise BackendTimeout(
                    f"{self.backend} did not answer {what} within {seconds:g}s",
                    backend=self.backend,
                    timeout=seconds,
                ) from exc
            raise BackendError(
                f"{self.backend}: {what} failed: {type(exc).__name__}: {exc}",
                backend=self.backend,
            ) from exc
        if task.cancelling() > cancelling:
            raise asyncio.CancelledError  # swallowed by a library: honour it anyway
        return result

    async def get(self) -> Redis:
        """The client of the running loop (connections are opened lazily, by the first command)."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is not None:
            return found[0]
        for stale in [other for other in self._clients if other.is_closed()]:
            del self._clients[stale]  # closed with its loop by the generator
        aioredis = import_redis().asyncio
        # No socket timeout: run()'s deadline bounds every command (see the module docstring).
        settings: dict[str, Any] = {"max_connections": MAX_CONNECTIONS, "socket_timeout": None}
        # Options in the URL's query string take precedence over these.
        pool = aioredis.BlockingConnectionPool.from_url(self._url, **settings, **self._kwargs)
        client: Redis = aioredis.Redis.from_pool(pool)
        lifetime = _closes_with_its_loop(client, self._timeout)
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
