"""Tests of heddle.core.container: registration, resolution, singletons under races, overrides."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import heddle.core.container as container_module
from heddle.core.container import Container, get_container, reset_container
from heddle.core.errors import ConfigurationError

THREADS = 32


class Database:
    """A stand-in service type."""


@pytest.fixture(autouse=True)
def _fresh_global_container() -> Iterator[None]:
    """Every test starts and ends without a process-wide container."""
    reset_container()
    yield
    reset_container()


def resolve_in_threads(fn: Any, n: int = THREADS) -> list[Any]:
    """Call fn() from n threads released together by a barrier; return the results."""
    barrier = threading.Barrier(n)

    def call() -> Any:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


# -- registering and resolving --------------------------------------------------


def test_factory_is_a_singleton_by_default() -> None:
    """A registered factory is called once; every resolve returns the same object."""
    container = Container()
    container.register(Database, Database)
    first = container.resolve(Database)
    assert isinstance(first, Database)
    assert container.resolve(Database) is first


def test_non_singleton_factory_builds_a_new_object_each_time() -> None:
    """singleton=False calls the factory on every resolve."""
    container = Container()
    container.register(Database, Database, singleton=False)
    assert container.resolve(Database) is not container.resolve(Database)


def test_instance_is_returned_as_registered() -> None:
    """A non-callable registered object is the service itself."""
    container = Container()
    config = {"url": "sqlite://"}
    container.register("config", config)
    assert container.resolve("config") is config


def test_register_value_keeps_a_callable_as_the_service() -> None:
    """register_value stores a function as the value instead of calling it."""
    container = Container()

    def agent(task: str) -> str:
        return task

    container.register_value("agent", agent)
    assert container.resolve("agent") is agent


def test_singleton_false_with_an_instance_is_a_configuration_error() -> None:
    """An instance cannot be non-singleton: the error says to register a factory."""
    with pytest.raises(ConfigurationError, match="needs a factory") as info:
        Container().register("config", {"a": 1}, singleton=False)
    assert info.value.parameter == "singleton"


def test_factory_needing_arguments_is_refused_at_register() -> None:
    """A factory that cannot be called with no arguments fails at register(), not resolve()."""

    class NeedsUrl:
        def __init__(self, url: str) -> None:
            self.url = url

    with pytest.raises(TypeError, match="no arguments"):
        Container().register(NeedsUrl, NeedsUrl)


def test_builtin_without_signature_is_accepted_as_factory() -> None:
    """Callables whose signature cannot be inspected are trusted."""
    container = Container()
    container.register("mapping", dict)
    assert container.resolve("mapping") == {}


def test_register_factory_refuses_non_callables_and_non_bool_singleton() -> None:
    """register_factory() needs a callable, and singleton must be a bool."""
    container = Container()
    with pytest.raises(TypeError, match="must be callable"):
        container.register_factory("x", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        container.register_factory("x", dict, singleton="yes")  # type: ignore[arg-type]


def test_unhashable_key_is_a_type_error() -> None:
    """Keys must be hashable."""
    with pytest.raises(TypeError, match="hashable"):
        Container().register(["not", "hashable"], 1)  # type: ignore[arg-type]


def test_unknown_key_is_a_key_error_naming_it_and_listing_registered_keys() -> None:
    """resolve() of an unregistered key says which key and what is registered."""
    container = Container()
    container.register(Database, Database)
    container.register("config", {})
    with pytest.raises(KeyError) as info:
        container.resolve("cache")
    message = str(info.value)
    assert "'cache'" in message
    assert "'config'" in message
    assert f"{__name__}.Database" in message


def test_unknown_key_in_an_empty_container_says_nothing_is_registered() -> None:
    """The KeyError of an empty container says so."""
    with pytest.raises(KeyError, match="registered: nothing"):
        Container().resolve(Database)


def test_has_and_in_tell_whether_a_key_is_registered() -> None:
    """has(key) and 'key in container' agree."""
    container = Container()
    container.register("a", 1)
    assert container.has("a")
    assert "a" in container
    assert not container.has("b")
    assert "services=1" in repr(container)


def test_registering_again_replaces_and_forgets_the_built_singleton() -> None:
    """A second register() under the same key wins, and its factory is used."""
    container = Container()
    container.register(Database, Database)
    old = container.resolve(Database)
    container.register(Database, Database)
    assert container.resolve(Database) is not old


def test_factory_returning_none_is_still_called_once() -> None:
    """None is a valid singleton value, not a 'not built yet' marker."""
    calls: list[int] = []
    container = Container()
    container.register("nothing", lambda: calls.append(1))
    assert container.resolve("nothing") is None
    assert container.resolve("nothing") is None
    assert calls == [1]


def test_failing_factory_propagates_and_is_retried_next_time() -> None:
    """A factory's exception reaches the caller; the next resolve calls it again."""
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("db down")
        return "connected"

    container = Container()
    container.register("db", flaky)
    with pytest.raises(ConnectionError):
        container.resolve("db")
    assert container.resolve("db") == "connected"
    assert len(attempts) == 2


def test_factories_can_resolve_their_dependencies() -> None:
    """A factory may close over the container to resolve what it needs."""
    container = Container()
    container.register("url", "sqlite://")
    container.register("db", lambda: {"url": container.resolve("url")})
    assert container.resolve("db") == {"url": "sqlite://"}


# -- threads ---------------------------------------------------------------------


def test_singleton_factory_runs_once_when_32_threads_resolve_at_once() -> None:
    """32 threads released by a barrier get one object from one factory call."""
    calls: list[int] = []

    def slow_factory() -> object:
        calls.append(1)
        time.sleep(0.01)  # widen the window in which a racy container would call it again
        return object()

    container = Container()
    container.register("service", slow_factory)
    results = resolve_in_threads(lambda: container.resolve("service"))
    assert len(calls) == 1
    assert all(r is results[0] for r in results)


def test_non_singleton_factory_runs_once_per_resolve_across_threads() -> None:
    """With singleton=False every thread gets its own object."""
    container = Container()
    container.register("service", object, singleton=False)
    results = resolve_in_threads(lambda: container.resolve("service"))
    assert len({id(r) for r in results}) == THREADS


# -- async -----------------------------------------------------------------------


async def test_sync_resolve_of_an_async_factory_names_aresolve() -> None:
    """resolve() of an async factory is a TypeError pointing to aresolve, even once built."""

    async def connect() -> str:
        return "connection"

    container = Container()
    container.register("db", connect)
    with pytest.raises(TypeError, match="aresolve"):
        container.resolve("db")
    assert await container.aresolve("db") == "connection"
    with pytest.raises(TypeError, match="aresolve"):
        container.resolve("db")


async def test_aresolve_also_resolves_sync_factories_and_values() -> None:
    """aresolve() works for every registration, so async code can use it throughout."""
    container = Container()
    container.register(Database, Database)
    container.register("config", {"a": 1})
    assert isinstance(await container.aresolve(Database), Database)
    assert await container.aresolve("config") == {"a": 1}


async def test_async_singleton_runs_once_under_concurrent_aresolve() -> None:
    """50 tasks awaiting the same async singleton share one factory call."""
    calls: list[int] = []
    release = asyncio.Event()

    async def connect() -> object:
        calls.append(1)
        await release.wait()
        return object()

    container = Container()
    container.register("db", connect)
    tasks = [asyncio.create_task(container.aresolve("db")) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == [1]
    assert all(r is results[0] for r in results)
    assert await container.aresolve("db") is results[0]


async def test_async_non_singleton_factory_runs_per_aresolve() -> None:
    """An async factory with singleton=False is awaited on every aresolve."""

    async def make() -> object:
        return object()

    container = Container()
    container.register("x", make, singleton=False)
    assert await container.aresolve("x") is not await container.aresolve("x")


async def test_async_callable_object_is_an_async_factory() -> None:
    """An object whose __call__ is async is awaited by aresolve."""

    class Connect:
        async def __call__(self) -> str:
            return "connected"

    container = Container()
    container.register("db", Connect())
    assert await container.aresolve("db") == "connected"


async def test_failing_async_factory_fails_every_waiter_and_is_retried_later() -> None:
    """Concurrent waiters share the factory's error; the next aresolve calls it again."""
    calls: list[int] = []
    release = asyncio.Event()

    async def flaky() -> str:
        calls.append(1)
        await release.wait()
        if len(calls) == 1:
            raise ConnectionError("db down")
        return "connected"

    container = Container()
    container.register("db", flaky)
    tasks = [asyncio.create_task(container.aresolve("db")) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert await container.aresolve("db") == "connected"
    assert len(calls) == 2


async def test_cancelled_builder_hands_the_build_to_a_waiter() -> None:
    """If the task running an async factory is cancelled, a waiting task builds it instead."""
    calls: list[int] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def connect() -> str:
        calls.append(1)
        started.set()
        await release.wait()
        return f"connection {len(calls)}"

    container = Container()
    container.register("db", connect)
    builder = asyncio.create_task(container.aresolve("db"))
    await started.wait()
    waiter = asyncio.create_task(container.aresolve("db"))
    await asyncio.sleep(0)
    builder.cancel()
    release.set()
    assert await waiter == "connection 2"
    assert builder.cancelled()
    assert len(calls) == 2


async def test_cancelled_waiter_does_not_cancel_the_shared_build() -> None:
    """Cancelling one waiter leaves the factory call running for the others."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def connect() -> str:
        started.set()
        await release.wait()
        return "connection"

    container = Container()
    container.register("db", connect)
    builder = asyncio.create_task(container.aresolve("db"))
    await started.wait()
    waiter = asyncio.create_task(container.aresolve("db"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await builder == "connection"
    assert waiter.cancelled()


def test_async_singleton_runs_once_across_event_loops_in_threads() -> None:
    """Threads each running their own loop share one call of an async singleton factory."""
    calls: list[int] = []

    async def connect() -> object:
        calls.append(1)
        await asyncio.sleep(0.02)  # widen the window in which another loop could start one
        return object()

    container = Container()
    container.register("db", connect)
    results = resolve_in_threads(lambda: asyncio.run(container.aresolve("db")), n=8)
    assert calls == [1]
    assert all(r is results[0] for r in results)


def test_sync_factory_returning_a_coroutine_is_a_type_error_without_warning() -> None:
    """A lambda returning a coroutine is refused with a hint, and the coroutine is closed."""

    async def connect() -> str:
        return "connection"

    container = Container()
    container.register("db", lambda: connect())
    with pytest.raises(TypeError, match="async def"):
        container.resolve("db")


# -- override --------------------------------------------------------------------


def test_override_serves_the_value_and_restores_the_registration() -> None:
    """Inside override() the fake is served; after it, the original singleton again."""
    container = Container()
    container.register(Database, Database)
    real = container.resolve(Database)
    fake = object()
    with container.override(Database, fake) as served:
        assert served is fake
        assert container.resolve(Database) is fake
    assert container.resolve(Database) is real


def test_override_restores_even_when_the_block_raises() -> None:
    """An exception inside the block still restores the previous registration."""
    container = Container()
    container.register("n", 1)
    with pytest.raises(RuntimeError), container.override("n", 2):
        raise RuntimeError("test failed")
    assert container.resolve("n") == 1


def test_overrides_nest() -> None:
    """Nested overrides unwind one level at a time."""
    container = Container()
    container.register("n", 1)
    with container.override("n", 2):
        with container.override("n", 3):
            assert container.resolve("n") == 3
        assert container.resolve("n") == 2
    assert container.resolve("n") == 1


def test_override_of_an_unregistered_key_leaves_it_unregistered() -> None:
    """Overriding a key nobody registered registers it only inside the block."""
    container = Container()
    with container.override("n", 1):
        assert container.has("n")
    assert not container.has("n")


def test_override_serves_a_callable_as_is() -> None:
    """override() never calls its value: a fake function is served as the service."""
    container = Container()
    container.register("agent", lambda: "real agent")

    def fake_agent(task: str) -> str:
        return "fake"

    with container.override("agent", fake_agent):
        assert container.resolve("agent") is fake_agent


# -- the process-wide container ----------------------------------------------------


def test_get_container_returns_the_same_container_until_reset() -> None:
    """get_container() is process-wide; reset_container() makes the next call build anew."""
    first = get_container()
    assert get_container() is first
    reset_container()
    assert get_container() is not first


def test_get_container_creates_one_container_under_a_thread_race(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """32 threads calling get_container() at once see one container, built once."""
    built: list[int] = []

    class SlowContainer(Container):
        def __init__(self) -> None:
            built.append(1)
            time.sleep(0.01)  # widen the window in which a racy get_container would build twice
            super().__init__()

    monkeypatch.setattr(container_module, "Container", SlowContainer)
    results = resolve_in_threads(get_container)
    assert built == [1]
    assert all(r is results[0] for r in results)
