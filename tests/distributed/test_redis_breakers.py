"""RedisCircuitBreakers: CircuitBreaker's state machine, shared by processes through Redis.

Time is Redis server time. Instead of sleeping, ``advance()`` moves a
breaker's stored timestamps back, which is what waiting would do. The tests
need the Redis server of ``redis_url`` (they skip without it, and fail in CI).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heddle import CircuitBreaker, CircuitBreakerOpen, RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.core.errors import BackendError, BackendTimeout, ConfigurationError
from heddle.distributed import RedisCircuitBreakers
from heddle.testing import FakeClock
from heddle.workflows import CircuitBreakers, CircuitState

redis = pytest.importorskip("redis", reason="needs the redis package: pip install heddle[redis]")
aioredis = pytest.importorskip("redis.asyncio")

REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    """A fresh namespace on the test Redis, deleted after the test."""
    return redis_namespace


@pytest.fixture
async def breakers(namespace: str) -> AsyncIterator[RedisCircuitBreakers]:
    """Breakers opening after 3 failures, recovering after 10 s, in a fresh namespace."""
    async with RedisCircuitBreakers(
        REDIS_URL, threshold=3, timeout=10, namespace=namespace
    ) as made:
        yield made


async def advance(breakers: RedisCircuitBreakers, agent: str, seconds: float) -> None:
    """Make ``agent``'s breaker look ``seconds`` older: what waiting that long would do."""
    key, micros = breakers.key(agent), round(seconds * 1_000_000)
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        for field in ("opened_at", "trial_at"):
            if int(await client.hget(key, field) or 0) > 0:
                await client.hincrby(key, field, -micros)


async def fail(breakers: RedisCircuitBreakers, agent: str, times: int) -> list[CircuitState | None]:
    out = []
    for _ in range(times):
        await breakers.acquire(agent)
        out.append(await breakers.record_failure(agent))
    return out


def python(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """A real child process running ``code`` with heddle from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, env=env, **kwargs)


# --- the state machine ------------------------------------------------------------


async def test_it_is_a_circuit_breakers_registry(breakers: RedisCircuitBreakers) -> None:
    """The executor accepts it: it implements the CircuitBreakers protocol."""
    assert isinstance(breakers, CircuitBreakers)
    assert "namespace=" in repr(breakers)


async def test_opens_after_threshold_consecutive_failures(breakers: RedisCircuitBreakers) -> None:
    """The threshold-th consecutive failure opens the breaker, not earlier."""
    assert await fail(breakers, "api", 3) == [None, None, CircuitState.OPEN]
    assert await breakers.state("api") is CircuitState.OPEN
    assert await breakers.failures("api") == 3


async def test_a_success_resets_the_count_and_leaves_no_key(
    breakers: RedisCircuitBreakers, namespace: str
) -> None:
    """Failures separated by a success do not add up; a healthy agent has no key in Redis."""
    await fail(breakers, "api", 2)
    assert await breakers.record_success("api") is None
    assert await fail(breakers, "api", 2) == [None, None]
    assert await breakers.failures("api") == 2
    await breakers.record_success("api")
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        assert [k async for k in client.scan_iter(match=f"{namespace}:*")] == []


async def test_an_open_breaker_rejects_with_the_time_left(breakers: RedisCircuitBreakers) -> None:
    """While open, acquire raises CircuitBreakerOpen(agent, retry_after) without changing state."""
    await fail(breakers, "search", 3)
    await advance(breakers, "search", 4)
    with pytest.raises(CircuitBreakerOpen) as info:
        await breakers.acquire("search")
    assert info.value.agent == "search"
    assert info.value.retry_after == pytest.approx(6, abs=0.5)
    assert await breakers.state("search") is CircuitState.OPEN


async def test_half_open_admits_one_trial_and_its_success_closes(
    breakers: RedisCircuitBreakers,
) -> None:
    """After the timeout one caller gets the trial, the others are rejected; success closes."""
    await fail(breakers, "api", 3)
    await advance(breakers, "api", 10)
    assert await breakers.acquire("api") is CircuitState.HALF_OPEN
    for _ in range(5):
        with pytest.raises(CircuitBreakerOpen, match="trial call is in flight"):
            await breakers.acquire("api")
    assert await breakers.record_success("api") is CircuitState.CLOSED
    assert await breakers.acquire("api") is None
    assert await breakers.failures("api") == 0


async def test_a_failed_trial_reopens_for_a_full_timeout(breakers: RedisCircuitBreakers) -> None:
    """A failed trial re-opens the breaker and restarts the recovery timer."""
    await fail(breakers, "api", 3)
    await advance(breakers, "api", 10)
    await breakers.acquire("api")
    assert await breakers.record_failure("api") is CircuitState.OPEN
    await advance(breakers, "api", 9)
    with pytest.raises(CircuitBreakerOpen):
        await breakers.acquire("api")
    await advance(breakers, "api", 1)
    assert await breakers.acquire("api") is CircuitState.HALF_OPEN


async def test_a_released_trial_lets_the_next_caller_try(breakers: RedisCircuitBreakers) -> None:
    """A cancelled trial frees the slot without deciding the breaker's state."""
    await fail(breakers, "api", 3)
    await advance(breakers, "api", 10)
    await breakers.acquire("api")
    await breakers.release("api")
    assert await breakers.state("api") is CircuitState.HALF_OPEN
    assert await breakers.acquire("api") is None
    with pytest.raises(CircuitBreakerOpen):
        await breakers.acquire("api")


async def test_a_trial_lost_with_its_process_is_given_away_after_trial_timeout(
    namespace: str,
) -> None:
    """A trial with no verdict for trial_timeout seconds (its process died) frees its slot."""
    async with RedisCircuitBreakers(
        REDIS_URL, threshold=1, timeout=5, trial_timeout=60, namespace=namespace
    ) as breakers:
        await fail(breakers, "api", 1)
        await advance(breakers, "api", 5)
        assert await breakers.acquire("api") is CircuitState.HALF_OPEN  # and then the holder dies
        await advance(breakers, "api", 59)
        with pytest.raises(CircuitBreakerOpen):
            await breakers.acquire("api")
        await advance(breakers, "api", 1)
        assert await breakers.acquire("api") is None
        with pytest.raises(CircuitBreakerOpen):
            await breakers.acquire("api")


async def test_a_late_success_does_not_close_an_open_breaker(
    breakers: RedisCircuitBreakers,
) -> None:
    """A call admitted before the breaker opened cannot close it by succeeding late."""
    await breakers.acquire("api")  # a slow call, admitted while closed
    await fail(breakers, "api", 3)
    assert await breakers.record_success("api") is None
    assert await breakers.state("api") is CircuitState.OPEN


async def test_reset_closes_for_everyone(breakers: RedisCircuitBreakers) -> None:
    """reset() closes an open breaker and reports the change once."""
    await fail(breakers, "api", 3)
    assert await breakers.reset("api") is CircuitState.CLOSED
    assert await breakers.reset("api") is None
    assert await breakers.state("api") is CircuitState.CLOSED
    assert await breakers.failures("api") == 0


async def test_agents_have_separate_breakers(breakers: RedisCircuitBreakers) -> None:
    """Opening one agent's breaker leaves the others closed."""
    await fail(breakers, "a", 3)
    assert await breakers.acquire("b") is None
    assert await breakers.state("b") is CircuitState.CLOSED


_OPS = st.lists(st.sampled_from(["acquire", "ok", "fail", "release", "tick", "reset"]), max_size=40)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_it_behaves_like_the_pure_breaker(ops: list[str], namespace: str) -> None:
    """Any sequence of calls and waits gives the same answers and states as CircuitBreaker."""
    agent = f"agent-{uuid.uuid4().hex}"  # hypothesis reuses the namespace across examples
    clock = FakeClock()
    pure = CircuitBreaker(agent, failure_threshold=2, recovery_timeout=1, clock=clock)

    async def run() -> None:
        async with RedisCircuitBreakers(
            REDIS_URL, threshold=2, timeout=1, namespace=namespace
        ) as shared:
            for op in ops:
                if op == "tick":
                    clock.advance(0.5)
                    await advance(shared, agent, 0.5)
                    continue
                if op == "acquire":
                    try:
                        expected: object = pure.acquire()
                    except CircuitBreakerOpen as exc:
                        expected = ("rejected", exc.retry_after)
                    try:
                        got: object = await shared.acquire(agent)
                    except CircuitBreakerOpen as exc:
                        got = ("rejected", pytest.approx(exc.retry_after, abs=0.2))
                else:
                    method = {
                        "ok": "record_success",
                        "fail": "record_failure",
                        "release": "release",
                        "reset": "reset",
                    }[op]
                    expected = getattr(pure, method)()
                    got = await getattr(shared, method)(agent)
                assert got == expected, op
                assert await shared.state(agent) is pure.state
                assert await shared.failures(agent) == pure.consecutive_failures

    asyncio.run(run())


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"threshold": 0}, "threshold"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"trial_timeout": 0}, "trial_timeout"),
        ({"trial_timeout": float("inf")}, "trial_timeout"),
        ({"namespace": "a b"}, "namespace"),
        ({"url": "localhost:6379"}, "url"),
        ({"operation_timeout": 0}, "operation_timeout"),
        ({"operation_timeout": float("nan")}, "operation_timeout"),
        ({"operation_timeout": "5"}, "operation_timeout"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], parameter: str) -> None:
    """Bad settings raise ConfigurationError naming the parameter, before any connection."""
    with pytest.raises(ConfigurationError) as info:
        RedisCircuitBreakers(**kwargs)
    assert info.value.parameter == parameter


# --- a Redis that hangs or is down -----------------------------------------------

CALLS = ["acquire", "record_success", "record_failure", "release", "state", "failures", "reset"]


@pytest.mark.parametrize("call", ["acquire", "record_failure", "state"])
async def test_a_hung_redis_fails_a_call_with_backend_timeout(black_hole: str, call: str) -> None:
    """A server that never answers: the call raises BackendTimeout at its deadline."""
    breakers = RedisCircuitBreakers(black_hole, operation_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendTimeout) as caught:
        await getattr(breakers, call)("api")
    assert loop.time() - started < 10  # the deadline (0.2 s) ended it; a hung call never ends
    assert caught.value.timeout == 0.2
    assert caught.value.backend == f"Redis at {black_hole}"
    assert isinstance(caught.value, TimeoutError)
    assert f"{call}('api')" in str(caught.value) and "0.2s" in str(caught.value)
    await breakers.aclose()


@pytest.mark.parametrize("call", CALLS)
async def test_an_unreachable_redis_fails_a_call_with_backend_error(call: str) -> None:
    """Connection refused: BackendError naming the server (password masked), caused by redis-py."""
    breakers = RedisCircuitBreakers("redis://u:s3cret@127.0.0.1:1/0")  # nothing listens on 1
    with pytest.raises(BackendError) as caught:
        await getattr(breakers, call)("api")
    assert not isinstance(caught.value, BackendTimeout | redis.RedisError)
    assert caught.value.backend == "Redis at redis://u:***@127.0.0.1:1/0"
    assert "s3cret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    await breakers.aclose()


# --- across processes -------------------------------------------------------------

OPENER = textwrap.dedent(
    """
    import asyncio, sys
    from heddle.distributed import RedisCircuitBreakers

    async def main(url, namespace):
        async with RedisCircuitBreakers(url, threshold=3, namespace=namespace) as b:
            for _ in range(3):
                await b.acquire("api")
                print(await b.record_failure("api"), flush=True)

    asyncio.run(main(*sys.argv[1:3]))
    """
)


async def test_a_breaker_opened_by_one_process_is_open_in_another(namespace: str) -> None:
    """A child process fails three calls; this process then finds the breaker open."""
    proc = python(OPENER, REDIS_URL, namespace, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err
    assert out.split() == ["None", "None", "open"]
    async with RedisCircuitBreakers(REDIS_URL, threshold=3, namespace=namespace) as breakers:
        assert await breakers.state("api") is CircuitState.OPEN
        assert await breakers.failures("api") == 3
        with pytest.raises(CircuitBreakerOpen) as info:
            await breakers.acquire("api")
        assert 29 < info.value.retry_after <= 30


TRIER = textwrap.dedent(
    """
    import asyncio, sys
    from heddle import CircuitBreakerOpen
    from heddle.distributed import RedisCircuitBreakers

    async def main(url, namespace):
        async with RedisCircuitBreakers(url, threshold=1, namespace=namespace) as b:
            await b.failures("api")  # connect before the start line
            print("ready", flush=True)
            sys.stdin.readline()

            async def try_once():
                try:
                    await b.acquire("api")
                except CircuitBreakerOpen:
                    return 0
                return 1

            print(sum(await asyncio.gather(*(try_once() for _ in range(25)))), flush=True)

    asyncio.run(main(*sys.argv[1:3]))
    """
)


async def test_half_open_admits_one_trial_among_callers_in_two_processes(namespace: str) -> None:
    """Two processes with 25 concurrent callers each, once the timeout is over: one trial in all."""
    async with RedisCircuitBreakers(REDIS_URL, threshold=1, namespace=namespace) as breakers:
        await fail(breakers, "api", 1)
        await advance(breakers, "api", 30)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        procs = [python(TRIER, REDIS_URL, namespace, **pipes) for _ in range(2)]
        for proc in procs:
            assert proc.stdout is not None
            assert await asyncio.to_thread(proc.stdout.readline) == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        admitted = 0
        for proc in procs:
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err
            admitted += int(out)
        assert admitted == 1
        assert await breakers.state("api") is CircuitState.HALF_OPEN


# --- in the executor --------------------------------------------------------------


async def test_executors_sharing_breakers_open_and_close_them_together(namespace: str) -> None:
    """One executor's failures open the breaker; another executor's calls are then rejected."""
    healthy = False
    calls = 0

    class Api:
        name = "api"

        async def arun(self, task: Any) -> str:
            nonlocal calls
            calls += 1
            if not healthy:
                raise ConnectionError("down")
            return "up"

    def executor() -> WorkflowExecutor:
        return WorkflowExecutor(
            retry=RetryPolicy(max_attempts=1),
            circuit_breakers=RedisCircuitBreakers(
                REDIS_URL, threshold=2, timeout=10, namespace=namespace
            ),
        )

    first, second = executor(), executor()
    graph = WorkflowGraph("g").add_node("call", Api())
    for _ in range(2):
        await first.execute(graph)
    assert calls == 2
    rejected = await second.execute(graph)
    assert calls == 2
    assert rejected.results["call"]["error"].startswith("CircuitBreakerOpen")  # type: ignore[union-attr]
    assert isinstance(second.breakers, RedisCircuitBreakers)
    await advance(second.breakers, "api", 10)
    healthy = True
    recovered = await second.execute(graph)
    assert recovered.content("call") == "up" and calls == 3
    assert await first.breakers.failures("api") == 0
    for ex in (first, second):
        assert isinstance(ex.breakers, RedisCircuitBreakers)
        await ex.breakers.aclose()


def test_one_registry_serves_several_event_loops(namespace: str) -> None:
    """executor.run() twice (two event loops) with Redis breakers works and leaks no socket."""

    class Flaky:
        name = "flaky"

        async def arun(self, task: Any) -> Any:
            raise ConnectionError("down")

    breakers = RedisCircuitBreakers(REDIS_URL, threshold=2, namespace=namespace)
    ex = WorkflowExecutor(retry=RetryPolicy(max_attempts=1), circuit_breakers=breakers)
    graph = WorkflowGraph("g").add_node("call", Flaky())
    ex.run(graph)
    ex.run(graph)
    assert asyncio.run(breakers.state("flaky")) is CircuitState.OPEN
