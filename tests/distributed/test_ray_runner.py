"""RayRunner: workflows on a real local Ray cluster, started once for this module."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from heddle import RetryPolicy, WorkflowExecutor, WorkflowGraph
from heddle.agents import describe_agent
from heddle.core.errors import ConfigurationError, NoAttemptContext
from heddle.distributed import AgentNotSerializable, RayRunner
from heddle.distributed.ray_runner import _Actor, _AgentHost, _owner_and_method
from heddle.workflows.current import AttemptContext, attempt_scope, current

try:
    import ray
except ImportError:  # the heddle[ray] extra is not installed
    ray = None

pytestmark = [
    pytest.mark.slow,
    # Ray's own noise, not ours: keep the module's warnings-as-errors for everything else.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

NO_RETRY = RetryPolicy(max_attempts=1)
RETRY = RetryPolicy(max_attempts=4, initial_delay=0.2, jitter=False)
# How long to wait for Ray to do something it does in its own time (restart an
# actor, deliver a kill or a cancel): generous, since a loaded 2-CPU machine can
# take tens of seconds to start a worker process. Never the expected wait.
PATIENCE = 60.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def runner(service_unavailable: Callable[[str], None]) -> Iterator[RayRunner]:
    """A runner that starts a 2-CPU local Ray once for the module and stops it after."""
    if ray is None:
        service_unavailable("ray is not installed (pip install 'heddle[ray]')")
    if ray.is_initialized():  # pragma: no cover - someone else's cluster: leave it alone
        pytest.fail("Ray is already initialised in this test process")
    # Agents defined here travel by value: workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.setenv("RAY_DEDUP_LOGS", "0")
        runner = RayRunner(
            "local",  # a new cluster, whatever RAY_ADDRESS says
            num_actors=2,
            max_concurrency=50,
            init_kwargs={
                "num_cpus": 2,
                "include_dashboard": False,
                "log_to_driver": False,
            },
        )
        try:
            runner.start()
        except Exception as exc:
            ray.shutdown()
            service_unavailable(f"Ray could not start a local cluster: {exc!r}")
        yield runner
        runner.shutdown()
    assert not ray.is_initialized(), "the runner started Ray, so its shutdown stops it"


# --- agents (pickled by value into the actors) -----------------------------------------


async def add_one(task: int) -> int:
    return task + 1


async def scale(factor: int, task: int) -> int:
    await asyncio.sleep(0)
    return task * factor


def square_plus(offset: int, task: int) -> int:
    return task * task + offset


def total(task: dict[str, Any]) -> int:
    return sum(v for v in task.values() if isinstance(v, int))


async def boom(task: Any) -> Any:
    raise ValueError(f"bad {task}")


async def sleep_half_second(task: Any) -> int:
    await asyncio.sleep(0.5)
    return os.getpid()


async def timed_sleep(task: Any) -> tuple[float, float]:
    """Sleep half a second on the actor; return when it started and ended (wall clock)."""
    start = time.time()
    await asyncio.sleep(0.5)
    return start, time.time()


def wait_for_ticks(path: str, task: Any) -> int:
    """Block (as a sync agent) until the driver's heartbeat has written 5 ticks to ``path``."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            ticks = int(Path(path).read_text() or 0)
        except (OSError, ValueError):
            ticks = 0
        if ticks >= 5:
            return ticks
        time.sleep(0.01)
    raise TimeoutError("the driver's event loop did not tick while the agent waited")


def sync_sleep(task: float) -> float:
    time.sleep(task)
    return task


async def whoami(task: Any) -> int:
    await asyncio.sleep(0.05)
    return os.getpid()


class Tally:
    """A stateful async agent: counts its calls."""

    name = "tally"

    def __init__(self) -> None:
        self.calls = 0

    async def arun(self, task: Any) -> tuple[int, int, Any]:
        self.calls += 1
        return self.calls, os.getpid(), task


class SyncTally:
    """A stateful sync agent."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def run(self, task: Any) -> int:
        self.seen.append(task)
        return len(self.seen)


class Counter:
    """A stateful async agent for the mixed graph: adds 100 x its call count."""

    def __init__(self) -> None:
        self.calls = 0

    async def arun(self, task: int) -> int:
        self.calls += 1
        return task + 100 * self.calls


class Adder:
    """A callable object; a bound method of it is an agent too."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def __call__(self, task: int) -> int:
        return task + self.n

    def times(self, task: int) -> int:
        return task * self.n


def die_once(marker: str, task: Any) -> str:
    """Kill this worker process on the first call (the marker file says whether it was)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


class DieOnce:
    """A stateful (sync) agent whose worker dies on its first call."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.calls = 0

    def run(self, task: Any) -> int:
        self.calls += 1
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.calls

    def pid(self, task: Any) -> int:
        """Which process holds this copy (a call that changes nothing)."""
        return os.getpid()


class ExitOnce:
    """A stateful agent whose actor ends for good on its first call."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def arun(self, task: Any) -> str:
        return await exit_once(self.marker, task)


async def exit_once(marker: str, task: Any) -> str:
    """End this actor for good (no restart) on the first call."""
    if not os.path.exists(marker):  # noqa: ASYNC240 - a test agent's marker file
        Path(marker).touch()  # noqa: ASYNC240
        import ray as worker_ray

        worker_ray.actor.exit_actor()
    return "replaced"


async def sleep_until_cancelled(marker: str, task: Any) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        Path(marker).write_text("cancelled")  # noqa: ASYNC240 - a test agent's marker file
        raise


async def attempt_on_loop(task: Any) -> tuple[AttemptContext, int]:
    """An async agent returning its attempt and the process it ran in."""
    await asyncio.sleep(0)
    return current(), os.getpid()


def attempt_in_thread(task: Any) -> tuple[AttemptContext, int]:
    """The same as a sync agent (it runs in the actor's threads)."""
    return current(), os.getpid()


class AttemptReader:
    """A stateful async agent reading its attempt."""

    async def arun(self, task: Any) -> tuple[AttemptContext, int]:
        return await attempt_on_loop(task)


class SyncAttemptReader:
    """A stateful sync agent reading its attempt."""

    def run(self, task: Any) -> tuple[AttemptContext, int]:
        return attempt_in_thread(task)


def mixed_graph() -> WorkflowGraph:
    """20 nodes: async and sync functions, partials, a lambda, stateful objects, a failure."""
    g = WorkflowGraph("mixed").add_node("src", add_one)
    for k in range(5):
        g.add_node(f"a{k}", functools.partial(scale, k + 2)).add_edge("src", f"a{k}")
        if k < 4:
            g.add_node(f"s{k}", functools.partial(square_plus, k)).add_edge(f"a{k}", f"s{k}")
    counter = Counter()
    g.add_node("t1", counter).add_node("t2", counter).add_node("t3", counter)
    g.add_edge("src", "t1").add_edge("t1", "t2").add_edge("t2", "t3")
    adder = Adder(10)
    g.add_node("call", adder).add_node("bound", adder.times).add_node("sync_obj", SyncTally())
    g.add_edge("s0", "call").add_edge("s1", "bound").add_edge("s2", "sync_obj")
    g.add_node("lam", lambda task: task * 3).add_edge("s3", "lam")
    g.add_node("bad", boom, retry=NO_RETRY).add_node("after_bad", add_one)
    g.add_edge("a4", "bad").add_edge("bad", "after_bad")
    g.add_node("join", total)
    for name in ("call", "bound", "sync_obj", "lam", "t3"):
        g.add_edge(name, "join")
    assert len(g) == 20
    return g


async def once_answered(call: Callable[[], Awaitable[T]]) -> T:
    """What ``call()`` returns once its actor answers: Ray fails calls while it restarts one."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            return await call()
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)  # a restarting actor may refuse at once: poll, do not spin


async def pool_ready(runner: RayRunner) -> None:
    """Wait until every pool actor answers (a call cancelled while queued never starts)."""
    for actor in runner._pool:
        await once_answered(actor.handle.pid.remote)


def read_when_written(path: Path, timeout: float = PATIENCE) -> str:
    """The file's text once it exists (an actor writes it a moment after the driver moves on)."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text()


def outcome(result: Any) -> dict[str, tuple[Any, ...]]:
    return {
        name: (r["status"], r["content"], r["error"], r["attempts"])
        for name, r in result.results.items()
    }


# --- tests ------------------------------------------------------------------------------


async def test_a_graph_of_20_nodes_gives_the_local_runners_results(runner: RayRunner) -> None:
    """Async, sync, partial, lambda, stateful and failing nodes: same outcome as LocalRunner."""
    local = await WorkflowExecutor().execute(mixed_graph(), input=3)
    remote = await WorkflowExecutor(runner=runner).execute(mixed_graph(), input=3)
    assert outcome(remote) == outcome(local)
    assert remote.content("t3") == 4 + 100 + 200 + 300  # one object's state across three nodes
    assert remote.nodes_with_status("failed") == ["bad"]
    assert remote.nodes_with_status("skipped") == ["after_bad"]
    assert remote.results["bad"]["error"] == "ValueError: bad 24"


async def test_stateful_agent_keeps_its_state_on_its_own_actor(runner: RayRunner) -> None:
    """One agent object counts up across nodes and runs, on one actor; the driver's copy stays."""
    tally = Tally()
    g = WorkflowGraph("tally").add_node("x", tally).add_node("y", tally).add_edge("x", "y")
    executor = WorkflowExecutor(runner=runner)
    first = await executor.execute(g, input="a")
    second = await executor.execute(g, input="b")
    counts = [r.content(n)[0] for r in (first, second) for n in ("x", "y")]
    pids = {r.content(n)[1] for r in (first, second) for n in ("x", "y")}
    assert counts == [1, 2, 3, 4]
    assert len(pids) == 1 and os.getpid() not in pids
    assert tally.calls == 0
    assert runner.release(tally) is True
    assert runner.release(tally) is False  # it has no actor any more
    third = await executor.execute(g, input="c")
    assert [third.content(n)[0] for n in ("x", "y")] == [1, 2]  # a new actor, a new copy


async def test_plain_functions_spread_over_the_pool(runner: RayRunner) -> None:
    """Concurrent calls of a stateless function go to both pool actors."""
    g = WorkflowGraph("spread")
    for k in range(8):
        g.add_node(f"n{k}", whoami)
    result = await WorkflowExecutor(max_concurrent=8, runner=runner).execute(g)
    assert len({result.content(f"n{k}") for k in range(8)}) == 2


async def test_async_agents_overlap_on_the_actors(runner: RayRunner) -> None:
    """20 x 0.5 s async sleeps at max_concurrent=20 run at the same time on the actors."""
    g = WorkflowGraph("sleeps")
    for k in range(20):
        g.add_node(f"n{k}", timed_sleep)
    executor = WorkflowExecutor(max_concurrent=20, runner=runner)
    await executor.execute(g)  # warm: the function is unpickled on each actor
    result = await executor.execute(g)
    assert result.ok
    spans = [result.content(f"n{k}") for k in range(20)]
    # How many sleeps were under way at once: the calls' own start and end times.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak >= 2, f"the sleeps ran one after another: {spans}"


async def test_waiting_for_the_cluster_does_not_block_the_loop(
    runner: RayRunner, tmp_path: Path
) -> None:
    """A heartbeat task keeps ticking while sync agents wait on the actors: the agents
    finish only once they have seen the driver's loop tick five times."""
    ticks_file = tmp_path / "ticks"
    ticks_file.write_text("0")

    async def heartbeat() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
            ticks_file.write_text(str(ticks))

    g = WorkflowGraph("sync-waits")
    for k in range(4):
        g.add_node(f"n{k}", functools.partial(wait_for_ticks, str(ticks_file)))
    beat = asyncio.create_task(heartbeat())
    try:
        result = await WorkflowExecutor(max_concurrent=4, runner=runner).execute(g)
    finally:
        beat.cancel()
    assert result.ok, result.results
    assert all(result.content(f"n{k}") >= 5 for k in range(4))


async def test_a_killed_worker_is_retried_by_the_executor(
    runner: RayRunner, tmp_path: Path
) -> None:
    """A pool actor SIGKILLed mid-call fails that attempt with Ray's error; the retry succeeds."""
    agent = functools.partial(die_once, str(tmp_path / "died"))
    g = WorkflowGraph("crash").add_node("n", agent, retry=RETRY)
    result = await WorkflowExecutor(runner=runner).execute(g)
    assert result.ok, result.results["n"]
    assert result.content("n") == "survived"
    assert result.results["n"]["attempts"] >= 2
    assert (tmp_path / "died").exists()
    await pool_ready(runner)  # Ray restarts the killed actor: the pool is whole again


async def test_a_killed_stateful_actor_restarts_from_the_first_copy(
    runner: RayRunner, tmp_path: Path
) -> None:
    """A stateful agent's actor SIGKILLed mid-call restarts from the copy made at first use."""
    agent = DieOnce(str(tmp_path / "died"))
    session = runner.open(1)
    where = describe_agent(agent.pid, node="probe")  # a bound method: the object's own actor
    first_pid = await session.call(where, None)  # first use: the actor copies the object now
    agent.calls = 100  # the driver's object moves on; a restart must not pick this up
    g = WorkflowGraph("crash-obj").add_node("n", agent, retry=NO_RETRY)
    executor = WorkflowExecutor(runner=runner)
    died = await executor.execute(g)
    assert died.results["n"]["status"] == "failed"
    assert (died.results["n"]["error"] or "").startswith("ActorUnavailableError")
    # Ray restarts the actor in its own time: wait until the new process answers.
    assert await once_answered(lambda: session.call(where, None)) != first_pid
    again = await executor.execute(g)
    assert again.content("n") == 1  # the first-use copy (0 calls), not the driver's (100)


async def test_a_run_does_not_wait_for_a_pool_actor_that_already_answered(
    runner: RayRunner,
) -> None:
    """A run's start waits only for new actors, not for one that is down (here: frozen)."""
    await pool_ready(runner)
    pid = await runner._pool[0].handle.pid.remote()
    os.kill(pid, signal.SIGSTOP)  # like a restart: calls to it get no answer for now
    try:
        async with asyncio.timeout(PATIENCE):
            await runner.open(1).start()
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_an_actor_that_exits_for_good_is_replaced(runner: RayRunner, tmp_path: Path) -> None:
    """An actor that will not restart is swapped for a new one; the retry runs there."""
    await pool_ready(runner)  # the retry goes to the other actor: it must be up
    agent = functools.partial(exit_once, str(tmp_path / "exited"))
    g = WorkflowGraph("exit").add_node("n", agent, retry=RETRY)
    result = await WorkflowExecutor(runner=runner).execute(g)
    assert result.ok, result.results["n"]
    assert result.content("n") == "replaced"
    assert result.results["n"]["attempts"] == 2
    assert len(runner._pool) == 2


async def test_a_stateful_actor_that_exits_for_good_is_replaced(
    runner: RayRunner, tmp_path: Path
) -> None:
    """A dedicated actor that will not restart is recreated from the driver's copy."""
    g = WorkflowGraph("exit-obj").add_node("n", ExitOnce(str(tmp_path / "exited")), retry=RETRY)
    result = await WorkflowExecutor(runner=runner).execute(g)
    assert result.ok, result.results["n"]
    assert result.content("n") == "replaced"
    assert result.results["n"]["attempts"] == 2


async def test_a_timeout_cancels_the_call_on_the_actor(runner: RayRunner, tmp_path: Path) -> None:
    """The node times out, and the agent's coroutine on the actor sees CancelledError."""
    marker = tmp_path / "cancelled"
    agent = functools.partial(sleep_until_cancelled, str(marker))
    g = WorkflowGraph("slow").add_node("n", agent, timeout=0.5, retry=NO_RETRY)
    await pool_ready(runner)
    result = await WorkflowExecutor(runner=runner).execute(g)
    assert result.results["n"]["status"] == "failed"
    assert "NodeTimeoutError" in (result.results["n"]["error"] or "")
    assert await asyncio.to_thread(read_when_written, marker) == "cancelled"


async def test_fail_fast_cancels_calls_in_flight(runner: RayRunner, tmp_path: Path) -> None:
    """fail_fast cancels the sibling still running on the cluster."""
    marker = tmp_path / "cancelled"
    g = WorkflowGraph("ff")
    g.add_node("slow", functools.partial(sleep_until_cancelled, str(marker)))
    g.add_node("bad", boom, retry=NO_RETRY)
    await pool_ready(runner)
    result = await WorkflowExecutor(fail_fast=True, runner=runner).execute(g)
    assert result.nodes_with_status("failed") == ["bad"]
    assert await asyncio.to_thread(read_when_written, marker) == "cancelled"


async def test_an_agents_exception_comes_back_as_itself(runner: RayRunner) -> None:
    """One attempt raises the agent's own exception type, not Ray's wrapper."""
    session = runner.open(1)
    with pytest.raises(ValueError, match="bad 7") as info:
        await session.call(describe_agent(boom, node="n"), 7)
    assert type(info.value) is ValueError
    await session.aclose()


async def test_agents_on_the_workers_see_the_drivers_attempt(runner: RayRunner) -> None:
    """Async and sync functions and objects on the actors read the attempt they are called in."""
    attempt = AttemptContext("run-7", "g", node="n", agent="a", attempt=2, iteration=1, item=3)
    objects = [AttemptReader(), SyncAttemptReader()]
    agents = [attempt_on_loop, attempt_in_thread, *objects]
    session = runner.open(4)
    try:
        with attempt_scope(attempt):
            seen = [await session.call(describe_agent(agent, node="n"), None) for agent in agents]
        for agent in agents:  # called outside any attempt, they have none to read
            with pytest.raises(NoAttemptContext):
                await session.call(describe_agent(agent, node="n"), None)
    finally:
        for obj in objects:
            runner.release(obj)
        await session.aclose()
    assert [ctx for ctx, _ in seen] == [attempt] * 4
    assert os.getpid() not in {pid for _, pid in seen}


def loop_again(content: Any) -> bool:
    return True


async def test_a_loop_run_on_ray_sees_each_iteration_in_heddle_current(runner: RayRunner) -> None:
    """Through the executor: agents on the actors read their node, attempt and iteration."""
    g = WorkflowGraph("ray-loop").add_node("a", attempt_on_loop).add_node("b", attempt_in_thread)
    g.add_edge("a", "b").add_edge("b", "a", when=loop_again, max_iterations=2)
    result = await WorkflowExecutor(max_concurrent=2, runner=runner).execute(g, workflow_id="rl")
    assert result.ok
    seen = [
        (ctx.workflow_id, ctx.graph, ctx.node, ctx.attempt, ctx.iteration)
        for name in ("a", "b")
        for ctx, _pid in (r["content"] for r in result.iterations(name))
    ]
    assert seen == [
        ("rl", "ray-loop", "a", 1, 0),
        ("rl", "ray-loop", "a", 1, 1),
        ("rl", "ray-loop", "b", 1, 0),
        ("rl", "ray-loop", "b", 1, 1),
    ]


async def test_an_unpicklable_agent_is_named(runner: RayRunner) -> None:
    """A stateful agent holding a lock fails with AgentNotSerializable naming it."""

    class Locked:
        name = "locked-agent"

        def __init__(self) -> None:
            self.lock = threading.Lock()

        async def arun(self, task: Any) -> Any:
            return task

    session = runner.open(1)
    with pytest.raises(AgentNotSerializable, match="locked-agent") as info:
        await session.call(describe_agent(Locked(), node="n"), 1)
    assert info.value.agent == "locked-agent"
    lock = threading.Lock()

    def uses_lock(task: Any) -> Any:
        with lock:
            return task

    with pytest.raises(AgentNotSerializable, match="uses_lock"):
        await session.call(describe_agent(uses_lock, node="n"), 1)


async def test_an_unpicklable_task_is_named(runner: RayRunner) -> None:
    """A task Ray cannot pickle fails with AgentNotSerializable naming the agent."""
    session = runner.open(1)
    with pytest.raises(AgentNotSerializable, match="add_one"):
        await session.call(describe_agent(add_one, node="n"), threading.Lock())


async def test_shutdown_kills_the_actors_and_the_runner_starts_again(runner: RayRunner) -> None:
    """After aclose() the old actors are gone and the next call starts a fresh pool."""
    second = RayRunner()  # joins the module's Ray, so does not own it
    g = WorkflowGraph("one").add_node("n", whoami)
    first_pid = (await WorkflowExecutor(runner=second).execute(g)).content("n")
    assert len(second._pool) == 2  # one per CPU of the cluster
    old = second._pool[0].handle
    async with second:
        pass
    assert ray is not None and ray.is_initialized()
    # ray.kill() only sends the kill: a call made at once may still be answered.
    deadline = time.monotonic() + PATIENCE
    with pytest.raises(ray.exceptions.RayActorError):  # noqa: PT012
        while time.monotonic() < deadline:
            await old.pid.remote()
            await asyncio.sleep(0.1)
    again = await WorkflowExecutor(runner=second).execute(g)
    assert again.ok and again.content("n") != first_pid
    await second.aclose()
    await second.aclose()  # idempotent


# --- without a cluster ------------------------------------------------------------------


async def test_agent_host_runs_functions_and_its_own_agent() -> None:
    """The actor body in-process: async and sync functions, a cached one, an owned agent."""
    if ray is None:
        pytest.skip("ray is not installed")
    dumps = ray.cloudpickle.dumps
    host = _AgentHost(None, "pool", 2)
    assert await host.call("t1", dumps(add_one), True, "add_one", 1) == 2
    assert await host.call("t1", b"not read: cached", True, "add_one", 2) == 3
    assert await host.call("t2", dumps(functools.partial(square_plus, 1)), False, "sq", 3) == 10
    assert await host.pid() == os.getpid()
    owned = _AgentHost(dumps(SyncTally()), "sync", 1)
    assert [await owned.call_owned("run", False, t) for t in "ab"] == [1, 2]
    adder = _AgentHost(dumps(Adder(5)), "adder", 1)
    assert await adder.call_owned(None, True, 1) == 6


async def test_agent_host_sets_the_shipped_attempt_around_the_call() -> None:
    """The actor body makes the shipped attempt current for the call only, in threads too."""
    if ray is None:
        pytest.skip("ray is not installed")
    dumps = ray.cloudpickle.dumps
    attempt = AttemptContext("run-1", "g", node="n", agent="a", attempt=1)
    host = _AgentHost(None, "pool", 1)
    for token, fn, is_async in (("t1", attempt_on_loop, True), ("t2", attempt_in_thread, False)):
        got, _ = await host.call(token, dumps(fn), is_async, "a", None, attempt)
        assert got == attempt
        with pytest.raises(NoAttemptContext):
            await host.call(token, b"cached", is_async, "a", None, None)
    owned = _AgentHost(dumps(SyncAttemptReader()), "reader", 1)
    assert (await owned.call_owned("run", False, None, attempt))[0] == attempt
    with pytest.raises(NoAttemptContext):
        current()  # nothing of the calls' attempts is left behind here


async def test_agent_host_names_an_agent_it_cannot_load() -> None:
    """A payload the worker cannot unpickle (say, a module missing there) names the agent."""
    if ray is None:
        pytest.skip("ray is not installed")
    host = _AgentHost(None, "pool", 1)
    with pytest.raises(AgentNotSerializable, match="'ghost' cannot be loaded") as info:
        await host.call("t", b"garbage", True, "ghost", 1)
    assert info.value.agent == "ghost"
    copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(info.value))
    assert (type(copy), copy.agent, str(copy)) == (AgentNotSerializable, "ghost", str(info.value))


def test_stateless_functions_go_to_the_pool_and_objects_to_their_own_actor() -> None:
    """Functions and partials are stateless; objects, callable objects and bound methods are not."""
    tally, sync, adder = Tally(), SyncTally(), Adder(1)
    cases = {
        add_one: None,
        total: None,
        functools.partial(scale, 2): None,
        tally: (tally, "arun"),
        sync: (sync, "run"),
        adder: (adder, None),
        adder.times: (adder, "times"),
    }
    for agent, expected in cases.items():
        assert _owner_and_method(describe_agent(agent, node="n")) == expected, agent


def test_calls_go_to_the_least_loaded_pool_actor() -> None:
    """The actor with the fewest calls in flight gets the next one; ties take turns."""
    if ray is None:
        pytest.skip("ray is not installed")
    runner = RayRunner()
    runner._pool = [_Actor("a", 3), _Actor("b", 1), _Actor("c", 3)]
    assert runner._least_loaded().handle == "b"
    runner._pool = [_Actor("a"), _Actor("b")]
    picks = [runner._least_loaded().handle for _ in range(4)]
    assert picks[0] != picks[1] and picks[:2] == picks[2:]


def test_bad_arguments_are_configuration_errors() -> None:
    """num_actors and max_concurrency must be positive ints; address a string."""
    if ray is None:
        pytest.skip("ray is not installed")
    bad: list[Callable[[], object]] = [
        lambda: RayRunner(num_actors=0),
        lambda: RayRunner(max_concurrency=True),
        lambda: RayRunner(address=6379),  # type: ignore[arg-type]
    ]
    for make in bad:
        with pytest.raises(ConfigurationError):
            make()
    assert "num_actors=None" in repr(RayRunner())


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a RayRunner without Ray raises ImportError telling how to install it."""
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'heddle\[ray\]'"):
        RayRunner()


def test_importing_heddle_does_not_import_ray() -> None:
    """The core and heddle.distributed import without loading Ray."""
    code = "import sys, heddle, heddle.distributed; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
