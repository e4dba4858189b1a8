"""RedisCircuitBreakers: one circuit breaker per agent, shared by every process through Redis.

The state machine is :class:`~heddle.workflows.resilience.CircuitBreaker`'s
(closed -> open after ``threshold`` consecutive failures; open
rejects calls for ``timeout`` seconds; then half-open lets exactly
one trial call through; its success closes the breaker, its failure re-opens
it; a late success while open changes nothing). Here each transition is one
Lua script, which Redis runs with nothing interleaved, so processes never
disagree: of any number of callers in any number of processes, exactly one
gets the half-open trial. Times come from the Redis server's clock (``TIME``),
not from the processes', so machines with skewed clocks still agree on when
the recovery timeout is over.

One hash per agent, ``{namespace}:breaker:{agent}``, with fields ``state``,
``failures``, ``opened_at`` and ``trial_at`` (server microseconds). A closed
breaker without failures has no key at all: Redis holds only agents that
are failing.

One thing a shared breaker needs that an in-process one does not: a process
can die while it holds the half-open trial. Its slot is given to the next
caller once ``trial_timeout`` seconds pass without a verdict, so a crash
cannot leave the breaker rejecting forever.

All processes sharing a namespace should use the same ``threshold`` and
``timeout``: each call applies its own process's settings.

Every call to Redis has a deadline, ``operation_timeout``: a server that hangs
makes the call raise :class:`~heddle.core.errors.BackendTimeout` instead of
stalling the run, and one that fails (refused connection, any Redis error)
raises :class:`~heddle.core.errors.BackendError`. The executor counts either
as a failed attempt of the node, which its retry policy may retry.
"""

from __future__ import annotations

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
from heddle.core import _checks
from heddle.core._resource import AsyncResource
from heddle.core.errors import CircuitBreakerOpen
from heddle.workflows.resilience import CircuitState

__all__ = ["RedisCircuitBreakers"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: breaker. ARGV: recovery timeout (us), trial timeout (us).
# Returns {0} allowed, {1} allowed and now half-open, {-1, us} rejected.
_ACQUIRE = Script(
    """
local h = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'trial_at')
local state = h[1]
if not state or state == 'closed' then
    return {0}
end"""
    + _NOW
    + """
if state == 'open' then
    local remaining = tonumber(h[2]) + tonumber(ARGV[1]) - now
    if remaining > 0 then
        return {-1, remaining}
    end
    redis.call('HSET', KEYS[1], 'state', 'half_open', 'trial_at', now)
    return {1}
end
local trial = tonumber(h[3]) or 0
if trial > 0 and now - trial < tonumber(ARGV[2]) then
    return {-1, 0}
end
redis.call('HSET', KEYS[1], 'trial_at', now)
return {0}
"""
)

# KEYS: breaker. Returns 1 if the breaker closed.
_SUCCESS = Script(
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'open' then
    return 0
end
redis.call('DEL', KEYS[1])
if state == 'half_open' then
    return 1
end
return 0
"""
)

# KEYS: breaker. ARGV: failure threshold. Returns 1 if the breaker opened.
_FAILURE = Script(
    """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures')
local state = h[1] or 'closed'
local failures = (tonumber(h[2]) or 0) + 1
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[1])) then"""
    + _NOW
    + """
    redis.call('HSET', KEYS[1], 'state', 'open', 'failures', failures,
               'opened_at', now, 'trial_at', 0)
    return 1
end
redis.call('HSET', KEYS[1], 'state', state, 'failures', failures)
return 0
"""
)

# KEYS: breaker.
_RELEASE = Script(
    """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
    redis.call('HSET', KEYS[1], 'trial_at', 0)
end
return 0
"""
)

# KEYS: breaker. Returns 1 if the breaker was not closed.
_RESET = Script(
    """
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('DEL', KEYS[1])
if state and state ~= 'closed' then
    return 1
end
return 0
"""
)


class RedisCircuitBreakers(AsyncResource):
    """Per-agent circuit breakers kept in Redis: a
    :class:`~heddle.workflows.CircuitBreakers` registry that every worker
    process (on any machine) shares.

    ::

        breakers = RedisCircuitBreakers("redis://redis.internal:6379/0")
        executor = WorkflowExecutor(circuit_breakers=breakers)

    ``threshold`` and ``timeout`` mean what they mean for
    :class:`~heddle.workflows.LocalCircuitBreakers` (a
    :class:`~heddle.workflows.CircuitBreaker`'s ``failure_threshold`` and
    ``recovery_timeout``); ``trial_timeout`` is how long
    a half-open trial call may go without a verdict before its slot goes to
    the next caller (its process may have died). ``namespace`` prefixes the
    keys. Connections open on first use; :meth:`aclose` closes them (the
    object stays usable and reconnects). Needs ``pip install heddle[redis]``.

    Each call gets ``operation_timeout`` seconds (default 5) to hear back from
    Redis. Past it, the call raises
    :class:`~heddle.core.errors.BackendTimeout`; a Redis that fails (refused
    connection, wrong password, any redis-py ``RedisError``) raises
    :class:`~heddle.core.errors.BackendError`. Both name the server in
    ``backend`` (password masked) and carry redis-py's error as ``__cause__``.
    """

    __slots__ = (
        "_clients",
        "_namespace",
        "_recovery_us",
        "_trial_us",
        "operation_timeout",
        "threshold",
        "timeout",
        "trial_timeout",
    )

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        threshold: int = 5,
        timeout: float = 30.0,
        trial_timeout: float = 300.0,
        namespace: str = "heddle",
        operation_timeout: float = OPERATION_TIMEOUT,
    ) -> None:
        import_redis()  # fail now, with the install hint
        # The same rules as the pure breaker's failure_threshold and recovery_timeout.
        self.threshold = _checks.check_int(threshold, "threshold", minimum=1)
        # Finite: the Lua side keeps it in microseconds.
        self.timeout = _checks.check_seconds(timeout, "timeout", finite=True)
        self.trial_timeout = check_seconds(trial_timeout, "trial_timeout")
        self.operation_timeout = check_seconds(operation_timeout, "operation_timeout")
        self._clients = LoopClients(check_url(url), timeout=self.operation_timeout)
        self._namespace = check_namespace(namespace)
        self._recovery_us = round(self.timeout * 1_000_000)
        self._trial_us = round(self.trial_timeout * 1_000_000)

    def __repr__(self) -> str:
        return (
            f"RedisCircuitBreakers({redacted(self._clients.url)!r}, "
            f"threshold={self.threshold}, timeout={self.timeout:g}, "
            f"namespace={self._namespace!r})"
        )

    def key(self, agent: str) -> str:
        """The Redis key of ``agent``'s breaker."""
        if not isinstance(agent, str):
            raise TypeError(f"agent must be a str, got {type(agent).__name__}")
        return f"{self._namespace}:breaker:{agent}"

    async def _run(self, what: str, script: Script, agent: str, *args: int) -> list[int] | int:
        keys = [self.key(agent)]
        result: list[int] | int = await self._clients.run(
            f"RedisCircuitBreakers.{what}({agent!r})", lambda client: script(client, keys, args)
        )
        return result

    async def _field(self, agent: str, field: str) -> bytes | str | None:
        """A field of the breaker's hash, read by the method of the same name."""
        key = self.key(agent)
        raw: bytes | str | None = await self._clients.run(
            f"RedisCircuitBreakers.{field}({agent!r})", lambda client: client.hget(key, field)
        )
        return raw

    async def acquire(self, agent: str) -> CircuitState | None:
        """Ask to call ``agent``; raise :class:`CircuitBreakerOpen` if the call may not go.

        Returns ``HALF_OPEN`` when this call is the trial that the expired
        recovery timeout let through, else None.
        """
        reply = await self._run("acquire", _ACQUIRE, agent, self._recovery_us, self._trial_us)
        assert isinstance(reply, list)
        if reply[0] < 0:
            raise CircuitBreakerOpen(agent, reply[1] / 1_000_000)
        return CircuitState.HALF_OPEN if reply[0] == 1 else None

    async def record_success(self, agent: str) -> CircuitState | None:
        """The allowed call succeeded: forget the failures; a half-open breaker closes."""
        closed = await self._run("record_success", _SUCCESS, agent)
        return CircuitState.CLOSED if closed == 1 else None

    async def record_failure(self, agent: str) -> CircuitState | None:
        """The allowed call failed: the threshold-th failure in a row, or a failed trial, opens."""
        opened = await self._run("record_failure", _FAILURE, agent, self.threshold)
        return CircuitState.OPEN if opened == 1 else None

    async def release(self, agent: str) -> None:
        """The allowed call was cancelled (no verdict): free a half-open trial slot."""
        await self._run("release", _RELEASE, agent)

    async def failures(self, agent: str) -> int:
        """Consecutive failed calls of ``agent`` since its last success, in any process."""
        raw = await self._field(agent, "failures")
        return 0 if raw is None else int(raw)

    async def state(self, agent: str) -> CircuitState:
        """The breaker's state (an open breaker whose timeout passed reads ``OPEN``
        until the next ``acquire()``, as for :class:`CircuitBreaker`)."""
        raw = await self._field(agent, "state")
        if raw is None:
            return CircuitState.CLOSED
        return CircuitState(raw.decode() if isinstance(raw, bytes) else raw)

    async def reset(self, agent: str) -> CircuitState | None:
        """Force ``agent``'s breaker closed and forget its failures, for every process."""
        return CircuitState.CLOSED if await self._run("reset", _RESET, agent) == 1 else None

    async def aclose(self) -> None:
        """Close this event loop's connections (idempotent; a later call reconnects)."""
        await self._clients.aclose()
