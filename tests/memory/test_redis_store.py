"""RedisStore: atomic saves across processes, a never-stale cache, prefix ranges, errors.

The API tests of every store (test_agent_memory.py, test_memory_cache.py) run
on RedisStore too, through the ``redis`` kind of conftest.py; these are the
Redis-specific ones. They need the server of the ``redis_url`` fixture (they
skip without it, and fail in CI).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from heddle.core.errors import BackendError, BackendTimeout, ConfigurationError
from heddle.memory import (
    AgentMemory,
    InvalidAgentId,
    MemoryStore,
    MemoryStoreError,
    RedisStore,
    StoreClosedError,
)

aioredis = pytest.importorskip(
    "redis.asyncio", reason="needs the redis package: pip install heddle[redis]"
)

SRC = Path(__file__).resolve().parents[2] / "src"
StoreFactory = Callable[[str, Path], MemoryStore]

# Saves COUNT keys PREFIX-i to AGENT once a line arrives on stdin, so that
# several of them start together; prints "saved" when done.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from heddle.memory import AgentMemory, RedisStore

    async def main(url, namespace, agent, prefix, count):
        async with RedisStore(url, namespace=namespace) as store:
            memory = AgentMemory(agent, store)
            await memory.save("warm-up-" + prefix, 0)  # connect before the start line
            print("ready", flush=True)
            sys.stdin.readline()
            for i in range(count):
                await memory.save(f"{prefix}-{i}", {"by": prefix, "i": i})
                await memory.save("shared", prefix)  # the same key, from every writer
        print("saved", flush=True)

    asyncio.run(main(*sys.argv[1:5], int(sys.argv[5])))
    """
)


def python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """A real child process running ``code`` with heddle from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], text=True, env=env, **kwargs
    )


@pytest.fixture
async def store(
    redis_url: str, tmp_path: Path, make_store: StoreFactory
) -> AsyncIterator[RedisStore]:
    """An open RedisStore in a namespace of its own."""
    opened = make_store("redis", tmp_path)
    assert isinstance(opened, RedisStore)
    async with opened:
        yield opened


async def test_two_processes_saving_distinct_keys_to_one_agent_lose_nothing(
    store: RedisStore, redis_url: str
) -> None:
    """Two processes released together save 200 keys each to one agent: all 400 are there."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [
        python(WRITER, redis_url, store.namespace, "shared-agent", name, "200", **pipes)
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err
        assert out == "saved\n"
    memory = AgentMemory("shared-agent", store)
    expected = sorted(f"{p}-{i}" for p in "ab" for i in range(200))
    assert await memory.keys("a-") + await memory.keys("b-") == expected
    for key in expected:
        prefix, i = key.split("-")
        assert await memory.load(key) == {"by": prefix, "i": int(i)}
    assert await memory.load("shared") in ("a", "b")


async def test_a_save_by_another_process_is_never_served_stale(
    store: RedisStore, redis_url: str
) -> None:
    """A cached entry is replaced as soon as another process saves the key (or deletes it)."""
    memory = AgentMemory("agent", store)
    await memory.save("k", "mine")
    assert await memory.load("k") == "mine"  # now cached
    setter = textwrap.dedent(
        """
        import asyncio, sys
        from heddle.memory import AgentMemory, RedisStore

        async def main(url, namespace, what):
            async with RedisStore(url, namespace=namespace) as store:
                memory = AgentMemory("agent", store)
                if what == "delete":
                    await memory.delete("k")
                else:
                    await memory.save("k", what)

        asyncio.run(main(*sys.argv[1:4]))
        """
    )
    for what in ("theirs", "delete"):
        proc = python(setter, redis_url, store.namespace, what)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert await memory.load("k") == (None if what == "delete" else what)


async def test_overwrites_from_two_store_objects_keep_the_first_created_at(
    store: RedisStore, redis_url: str
) -> None:
    """Concurrent overwrites of one key through separate connections keep one created_at."""
    async with RedisStore(redis_url, namespace=store.namespace) as other:
        first = await store.put("agent", "k", "0", None)
        assert first.entry is not None
        results = await asyncio.gather(
            *(s.put("agent", "k", str(i), None) for i in range(50) for s in (store, other))
        )
        assert {r.entry.created_at for r in results if r.entry} == {first.entry.created_at}
        lookup = await other.get("agent", "k")
        assert lookup.entry is not None
        assert lookup.entry.created_at == first.entry.created_at
        assert lookup.entry.updated_at >= first.entry.updated_at


async def test_every_write_of_an_agent_changes_its_version_and_reads_do_not(
    store: RedisStore,
) -> None:
    """put and a real delete move the version; get, a no-op delete and other agents do not."""
    seen = [(await store.put("agent", "k", "1", None)).version]
    assert (await store.get("agent", "k")).version == seen[-1]
    seen.append((await store.put("agent", "k", "2", None)).version)
    await store.put("other", "k", "1", None)
    assert (await store.get("agent", "k")).version == seen[-1]
    assert await store.delete("agent", "k") is True
    seen.append((await store.get("agent", "k")).version)
    assert await store.delete("agent", "k") is False
    assert (await store.get("agent", "k")).version == seen[-1]
    assert len(set(seen)) == 3
    unchanged = await store.get("agent", "k", known_version=seen[-1])
    assert unchanged.unchanged and unchanged.entry is None


async def test_a_cache_survives_redis_losing_its_data(store: RedisStore, redis_url: str) -> None:
    """After the agent's keys vanish (a restart without persistence), no old version is reused."""
    memory = AgentMemory("agent", store)
    for i in range(3):
        await memory.save("k", i)
    assert await memory.load("k") == 2  # cached at the current version
    client = aioredis.Redis.from_url(redis_url)
    try:
        doomed = [k async for k in client.scan_iter(match=f"{store.namespace}:*")]
        await client.delete(*doomed)
    finally:
        await client.aclose()
    writer = AgentMemory("agent", store, max_cache_size=0)
    for i in range(3):
        await writer.save("k", f"new {i}")
    assert await memory.load("k") == "new 2"


async def test_keys_are_listed_in_code_point_order_across_pages(store: RedisStore) -> None:
    """2,500 keys (more than two pages) come back sorted, whole, and prefix-filtered."""
    keys = [f"run-{i:04d}" for i in range(2400)] + ["run", "run.", "ruo", "é", "éa", "\U0001f600"]
    for batch in range(0, len(keys), 200):
        await asyncio.gather(*(store.put("agent", k, "1", None) for k in keys[batch : batch + 200]))
    assert await store.keys("agent") == sorted(keys)
    assert await store.keys("agent", "run-") == sorted(k for k in keys if k.startswith("run-"))
    assert await store.keys("agent", "run-23") == [f"run-23{i:02d}" for i in range(100)]
    assert await store.keys("agent", "é") == ["é", "éa"]
    assert await store.keys("agent", "\U0001f600") == ["\U0001f600"]
    assert await store.keys("agent", "zzz") == []


async def test_keys_are_indexed_in_a_sorted_set_not_found_with_keys(
    store: RedisStore, redis_url: str
) -> None:
    """The layout is one hash, one sorted set and one counter per agent, all in one hash slot."""
    await store.put("agent", "b", '"x"', '{"m":1}')
    await store.put("agent", "a", '"y"', None)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        names = sorted([k async for k in client.scan_iter(match=f"{store.namespace}:*")])
        base = f"{store.namespace}:memory:{{agent}}"
        assert names == [f"{base}:entries", f"{base}:keys", f"{base}:version"]
        assert await client.type(f"{base}:keys") == "zset"
        assert await client.zrange(f"{base}:keys", 0, -1) == ["a", "b"]
        assert await client.type(f"{base}:entries") == "hash"
    finally:
        await client.aclose()


async def test_bad_agent_ids_are_refused_before_any_connection() -> None:
    """InvalidAgentId comes first, even when the server does not exist."""
    async with RedisStore("redis://127.0.0.1:1/0") as store:
        for call in (
            store.get("../x", "k"),
            store.put("a b", "k", "1", None),
            store.delete("", "k"),
            store.keys("x" * 129),
        ):
            with pytest.raises(InvalidAgentId):
                await call


async def test_an_unreachable_server_raises_memory_store_error_without_the_password() -> None:
    """A connection failure is a MemoryStoreError naming the server, password masked."""
    async with RedisStore("redis://user:s3cret@127.0.0.1:1/0") as store:
        with pytest.raises(MemoryStoreError, match=r"127\.0\.0\.1:1") as caught:
            await store.put("agent", "k", "1", None)
        assert "s3cret" not in str(caught.value)
        assert "s3cret" not in repr(store)
        cause = caught.value.__cause__
        assert isinstance(cause, BackendError) and not isinstance(cause, BackendTimeout)
        assert isinstance(cause.__cause__, aioredis.ConnectionError)


@pytest.mark.parametrize("call", ["put", "get", "delete", "keys"])
async def test_a_hung_server_fails_a_call_with_memory_store_error_at_the_deadline(
    black_hole: str, call: str
) -> None:
    """A server that never answers: the call raises MemoryStoreError, caused by a timeout."""
    args = {"put": ("agent", "k", "1", None), "keys": ("agent",)}.get(call, ("agent", "k"))
    async with RedisStore(black_hole, operation_timeout=0.2) as store:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(MemoryStoreError) as caught:
            await getattr(store, call)(*args)
        assert loop.time() - started < 10  # the deadline (0.2 s) ended it; a hung call never ends
    assert isinstance(caught.value.__cause__, BackendTimeout)
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert black_hole in str(caught.value) and "0.2s" in str(caught.value)


async def test_a_closed_store_says_so(
    redis_url: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """After aclose() calls raise StoreClosedError and the repr says closed."""
    store = make_store("redis", tmp_path)
    await store.put("agent", "k", "1", None)
    await store.aclose()
    assert "closed" in repr(store)
    with pytest.raises(StoreClosedError):
        await store.get("agent", "k")


def test_one_store_serves_several_event_loops_and_leaks_no_socket(
    redis_url: str, tmp_path: Path, make_store: StoreFactory
) -> None:
    """asyncio.run() twice on one store works; each loop's connections close with it."""
    store = make_store("redis", tmp_path)
    memory = AgentMemory("agent", store)
    asyncio.run(memory.save("k", 1))
    assert asyncio.run(memory.load("k")) == 1  # unclosed sockets would fail the test (-W error)
    asyncio.run(store.aclose())


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"url": "http://127.0.0.1:6379"}, "url"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "has{brace}"}, "namespace"),
        ({"namespace": "has space"}, "namespace"),
        ({"operation_timeout": 0}, "operation_timeout"),
        ({"operation_timeout": -1.0}, "operation_timeout"),
        ({"operation_timeout": float("inf")}, "operation_timeout"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], parameter: str) -> None:
    """A bad URL, namespace or operation_timeout raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as caught:
        RedisStore(**kwargs)
    assert caught.value.parameter == parameter


def test_heddle_imports_without_redis_and_names_the_extra_when_used() -> None:
    """Without redis, heddle imports; building a Redis object says pip install heddle[redis]."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # as if not installed
        import heddle, heddle.memory, heddle.messaging, heddle.distributed
        from heddle.memory import RedisStore
        from heddle.messaging import RedisMessageBus
        from heddle.distributed import RedisCircuitBreakers
        for make in (RedisStore, lambda: RedisMessageBus(), lambda: RedisCircuitBreakers()):
            try:
                make()
            except ImportError as exc:
                assert "pip install heddle[redis]" in str(exc), exc
            else:
                raise AssertionError("no ImportError")
        print("ok")
        """
    )
    proc = python(code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "ok\n"), err
