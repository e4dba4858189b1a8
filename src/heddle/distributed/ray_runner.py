"""Run agent calls on a Ray cluster: ``WorkflowExecutor(runner=RayRunner())``.

The executor keeps scheduling, retries, timeouts, circuit breakers, events and
checkpoints; :class:`RayRunner` only performs attempts, each one a call on a
Ray *actor*:

* **Plain functions** (``def`` or ``async def``, ``functools.partial``) are
  stateless and go to a pool of ``num_actors`` async actors, each taking up to
  ``max_concurrency`` calls at once: async agents run as coroutines on the
  actor's event loop, sync agents in the actor's thread pool. A call goes to
  the least-loaded actor. (One Ray *task* per node would not do: tasks queue
  for worker slots, so 20 concurrent 0.5 s sleeps took 5.6 s as tasks and
  0.52 s as coroutines in one async actor.)
* **Stateful agents** (objects with ``arun``/``run``, callable objects, bound
  methods) get one dedicated actor each, holding a copy of the object made on
  first use: its state persists from call to call *on the actor*; the
  driver's object is not updated. The actor lives until the runner closes
  or :meth:`RayRunner.release` is called with the object.
* A function is pickled (cloudpickle) once per runner and unpickled once per
  actor; an agent that cannot be pickled, or whose code cannot be loaded on
  the worker, fails with :class:`AgentNotSerializable` naming it.
* Results are awaited as asyncio futures, so the event loop never blocks; the
  first call connects to Ray and starts the pool in a thread for the same
  reason.
* Cancelling an attempt (timeout, ``fail_fast``, a cancelled run) cancels the
  Ray call too: an async agent gets :class:`asyncio.CancelledError` inside the
  actor. A sync agent's thread, as with the local runner, runs to its end;
  unlike the local runner, a retry does not wait for it (the driver cannot
  see that thread end).
* Actors restart when their process dies (``max_restarts=-1``) and Ray never
  re-runs a call by itself (``max_task_retries=0``): the attempt fails with
  Ray's :class:`~ray.exceptions.RayActorError` and the executor's
  :class:`RetryPolicy` decides. An actor that exits for good is replaced. A
  restarted stateful actor starts again from the first-use copy.
* The attempt's :class:`~heddle.workflows.current.AttemptContext` goes with
  each call, so ``heddle.current()`` works in the agent on the worker, sync
  or async, as it does locally.

Ray is imported only when a :class:`RayRunner` is built, so
``import heddle.distributed`` works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

from heddle.agents import AgentSpec, await_if_needed
from heddle.core._checks import check_int
from heddle.core._resource import AsyncResource
from heddle.core.errors import AgentNotSerializable, ConfigurationError, NoAttemptContext
from heddle.workflows.current import AttemptContext, attempt_scope, current

__all__ = ["AgentNotSerializable", "RayRunner"]

_INSTALL_HINT = "heddle.distributed.RayRunner needs Ray: pip install 'heddle[ray]'"
_MAX_DEFAULT_ACTORS = 16  # the default pool: one actor per cluster CPU, at most this many
_FUNCTION_CACHE = 1024  # pickled functions remembered per runner and per actor


def _import_ray() -> Any:
    """Import Ray on first need; a clear ImportError names the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})", name="ray") from exc
    return ray


def _dumps(obj: object, agent: str) -> bytes:
    ray = _import_ray()
    try:
        return bytes(ray.cloudpickle.dumps(obj))
    except Exception as exc:
        raise AgentNotSerializable(
            agent, f"agent {agent!r} cannot be sent to Ray: {type(exc).__name__}: {exc}"
        ) from exc


def _loads(payload: bytes, agent: str) -> Any:
    ray = _import_ray()
    try:
        return ray.cloudpickle.loads(payload)
    except Exception as exc:
        raise AgentNotSerializable(
            agent,
            f"agent {agent!r} cannot be loaded on the Ray worker (pid {os.getpid()}): "
            f"{type(exc).__name__}: {exc}; is its module importable there? "
            "(ship it with RayRunner(init_kwargs={'runtime_env': {'py_modules': [...]}}))",
        ) from exc


class _AgentHost:
    """The body of one Ray actor: async agents as coroutines, sync agents in threads.

    A pool actor is built with ``owned=None`` and runs any function it is sent
    (:meth:`call`); a dedicated actor is built with one pickled stateful agent
    and only runs that (:meth:`call_owned`). Plain Python, so tests can drive
    it without Ray.
    """

    def __init__(self, owned: bytes | None, name: str, max_threads: int) -> None:
        self._owned_payload = owned
        self._name = name
        self._owned: Any = None
        self._loaded = False
        self._functions: OrderedDict[str, Callable[..., Any]] = OrderedDict()
        self._max_threads = max_threads
        self._threads: ThreadPoolExecutor | None = None

    async def call(
        self,
        token: str,
        payload: bytes,
        is_async: bool,
        name: str,
        task: Any,
        attempt: AttemptContext | None = None,
    ) -> Any:
        """Run the function pickled in ``payload`` (cached under ``token``) on ``task``.

        ``attempt`` (the driver's, if the call was made in one) is current during the call.
        """
        fn = self._functions.get(token)
        if fn is None:
            fn = _loads(payload, name)
            self._functions[token] = fn
            if len(self._functions) > _FUNCTION_CACHE:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(token)
        return await self._invoke(fn, is_async, task, attempt)

    async def call_owned(
        self,
        method: str | None,
        is_async: bool,
        task: Any,
        attempt: AttemptContext | None = None,
    ) -> Any:
        """Run this actor's own agent (its ``method``, or the object itself) on ``task``."""
        if not self._loaded:
            assert self._owned_payload is not None, "call_owned() on a pool actor"
            self._owned = _loads(self._owned_payload, self._name)
            self._loaded = True
        fn = self._owned if method is None else getattr(self._owned, method)
        return await self._invoke(fn, is_async, task, attempt)

    async def pid(self) -> int:
        """The actor's process id (a cheap round trip)."""
        return os.getpid()

    async def _invoke(
        self, fn: Callable[..., Any], is_async: bool, task: Any, attempt: AttemptContext | None
    ) -> Any:
        # The driver's attempt, current again here for heddle.current() in the agent.
        with contextlib.nullcontext() if attempt is None else attempt_scope(attempt):
            if is_async:
                return await await_if_needed(fn(task))
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self._max_threads, "heddle-ray-agent")
            result = await asyncio.get_running_loop().run_in_executor(
                self._threads, contextvars.copy_context().run, fn, task
            )
            return await await_if_needed(result)


@dataclass(slots=True, eq=False)
class _Actor:
    """A driver-side actor handle and the calls this runner has in flight on it."""

    handle: Any
    load: int = 0
    answered: bool = False  # it came up once: start() does not wait for it again


@dataclass(frozen=True, slots=True)
class _Shipped:
    """A function pickled once; ``fn`` is held so its ``id`` is not reused."""

    fn: object
    token: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Owned:
    """A stateful agent's dedicated actor; ``owner`` is held so its ``id`` is not reused."""

    owner: object
    actor: _Actor


def _owner_and_method(spec: AgentSpec) -> tuple[object, str | None] | None:
    """The object whose state an agent carries and the method to call on it; None if stateless."""
    agent = spec.agent
    if inspect.isfunction(agent) or inspect.isbuiltin(agent):
        return None
    if isinstance(agent, functools.partial):
        return None
    if inspect.ismethod(agent):  # a bound method: the state is its object's
        return agent.__self__, agent.__name__
    if spec.call is agent:  # a callable object
        return agent, None
    for method in ("arun", "run"):  # how describe_agent() chose spec.call
        if getattr(agent, method, None) == spec.call:
            return agent, method
    return spec.call, None


class RayRunner(AsyncResource):
    """Runs agent calls on a Ray cluster; give it to ``WorkflowExecutor(runner=...)``.

    ``address``: ``None`` uses Ray if this process is already connected,
    else calls ``ray.init()`` (which joins the cluster in ``RAY_ADDRESS`` or
    the latest one started on this machine, or starts a local one); a string
    (``"ray://head:10001"``, ``"auto"``, ``"10.0.0.5:6379"``) connects there.
    ``init_kwargs`` go to ``ray.init`` (``num_cpus``, ``runtime_env``, ...).

    ``num_actors`` is the size of the pool that runs plain functions (default:
    one per cluster CPU, at most 16); ``max_concurrency`` the calls each actor
    (pool or dedicated) runs at once, and the size of its thread pool for sync
    agents. ``actor_options`` go to every actor's ``.options()`` (``num_cpus``,
    ``num_gpus``, ``resources``, ``runtime_env``, ...).

    The pool starts on first use and serves every run until :meth:`aclose`
    (or :meth:`shutdown`), which kills the actors and, if this runner called
    ``ray.init``, disconnects from Ray. The runner is reusable after that.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_actors: int | None = None,
        max_concurrency: int = 100,
        actor_options: Mapping[str, Any] | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise ConfigurationError(
                f"address must be a string or None, got {type(address).__name__}",
                parameter="address",
            )
        check_int(num_actors, "num_actors", minimum=1, none_ok=True)
        check_int(max_concurrency, "max_concurrency", minimum=1)
        self._ray = _import_ray()
        self.address = address
        self.num_actors = num_actors
        self.max_concurrency = max_concurrency
        self.actor_options = dict(actor_options or {})
        self.init_kwargs = dict(init_kwargs or {})
        self._lock = threading.Lock()  # connect, start the pool, create a dedicated actor
        self._owns_ray = False
        self._host: Any = None  # ray.remote(_AgentHost), made on connect
        self._pool: list[_Actor] = []
        self._turn = 0
        self._functions: OrderedDict[int, _Shipped] = OrderedDict()
        self._owned: dict[int, _Owned] = {}

    def __repr__(self) -> str:
        return (
            f"RayRunner(address={self.address!r}, num_actors={self.num_actors}, "
            f"max_concurrency={self.max_concurrency})"
        )

    def open(self, max_concurrent: int) -> _RaySession:
        """A session for one execution; the actors outlive it."""
        return _RaySession(self)

    # -- lifecycle -----------------------------------------------------------------------------

    def _connect(self) -> None:
        """Connect to Ray and start the pool (blocking: called in a thread, under the lock)."""
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
            self._owns_ray = True
        if self._host is None:
            self._host = ray.remote(_AgentHost)
        if not self._pool:
            count = self.num_actors
            if count is None:
                cpus = int(ray.cluster_resources().get("CPU", 1))
                count = max(1, min(cpus, _MAX_DEFAULT_ACTORS))
            self._pool = [_Actor(self._new_actor(None, "pool")) for _ in range(count)]

    def _new_actor(self, owned: bytes | None, name: str) -> Any:
        options = {
            "max_concurrency": self.max_concurrency,
            "max_restarts": -1,
            "max_task_retries": 0,
            **self.actor_options,
        }
        return self._host.options(**options).remote(owned, name, self.max_concurrency)

    def start(self, timeout: float | None = None) -> Self:
        """Connect to Ray and wait until the pool is up, blocking; else the first call does it.

        Starting a local Ray takes seconds, and the first attempt waits for it
        *within its node's timeout*: call this before the first run to keep
        that out of the run, or to fail early when Ray cannot start. Call it
        from the main thread, where Ray can install its SIGTERM handler.
        ``timeout`` bounds the wait for the actors (Ray's ``GetTimeoutError``),
        which never come up if ``actor_options`` ask for what the cluster lacks.

        Each run calls this too, and waits only for actors that never
        answered (new ones). An actor that Ray is restarting is not waited
        for: Ray fails calls to it until it is back, which would fail every
        run starting meanwhile; its calls fail as attempts instead, for the
        executor's retry policy.
        """
        self._connect_once()
        new = [actor for actor in self._pool if not actor.answered]
        if new:
            self._ray.get([actor.handle.pid.remote() for actor in new], timeout=timeout)
            for actor in new:
                actor.answered = True
        return self

    def _connect_once(self) -> None:
        with self._lock:
            self._connect()

    def _start_owned(self, owner: object, name: str) -> _Owned:
        with self._lock:
            self._connect()
            owned = self._owned.get(id(owner))
            if owned is None:  # two first calls raced here: one actor, not two
                owned = _Owned(owner, _Actor(self._new_actor(_dumps(owner, name), name)))
                self._owned[id(owner)] = owned
            return owned

    def shutdown(self) -> None:
        """Kill this runner's actors; disconnect from Ray if this runner connected. Idempotent.

        ``ray.kill`` is asynchronous: an old actor handle may still answer for
        a moment, but the runner never uses one again.
        """
        ray = self._ray
        with self._lock:
            actors = [*self._pool, *(owned.actor for owned in self._owned.values())]
            self._pool, self._owned, self._host = [], {}, None
            self._functions.clear()
            if ray.is_initialized():
                for actor in actors:
                    with contextlib.suppress(Exception):  # already dead, or Ray going away
                        ray.kill(actor.handle, no_restart=True)
            if self._owns_ray:
                self._owns_ray = False
                ray.shutdown()

    def release(self, agent: object) -> bool:
        """Kill the dedicated actor of a stateful ``agent``; False if it has none.

        Each stateful agent object keeps an actor process until the runner
        closes: release objects made per request, or reuse them. A later call
        of the object starts a new actor from the object as it is then.
        """
        owner = agent.__self__ if inspect.ismethod(agent) else agent
        with self._lock:
            owned = self._owned.pop(id(owner), None)
        if owned is None or owned.owner is not owner:
            return False
        with contextlib.suppress(Exception):  # already dead, or Ray going away
            self._ray.kill(owned.actor.handle, no_restart=True)
        return True

    async def aclose(self) -> None:
        """:meth:`shutdown` without blocking the event loop."""
        await asyncio.to_thread(self.shutdown)

    # -- calls ---------------------------------------------------------------------------------

    def _shipped(self, spec: AgentSpec) -> _Shipped:
        key = id(spec.call)
        shipped = self._functions.get(key)
        if shipped is None or shipped.fn is not spec.call:
            shipped = _Shipped(spec.call, uuid.uuid4().hex, _dumps(spec.call, spec.name))
            self._functions[key] = shipped
            if len(self._functions) > _FUNCTION_CACHE:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(key)
        return shipped

    def _least_loaded(self) -> _Actor:
        pool = self._pool
        n = len(pool)
        start = self._turn = (self._turn + 1) % n  # ties go round-robin
        best = pool[start]
        for k in range(1, n):
            actor = pool[(start + k) % n]
            if actor.load < best.load:
                best = actor
        return best

    async def _submit(
        self, spec: AgentSpec, task: Any, attempt: AttemptContext | None
    ) -> tuple[_Actor, Any]:
        target = _owner_and_method(spec)
        if target is None:
            shipped = self._shipped(spec)
            if not self._pool:
                await asyncio.to_thread(self._connect_once)
            actor = self._least_loaded()
            method = actor.handle.call.remote
            args: tuple[Any, ...] = (shipped.token, shipped.payload, spec.is_async, spec.name)
        else:
            owner, name = target
            owned = self._owned.get(id(owner))
            if owned is None or owned.owner is not owner:
                owned = await asyncio.to_thread(self._start_owned, owner, spec.name)
            actor = owned.actor
            method = actor.handle.call_owned.remote
            args = (name, spec.is_async)
        try:
            return actor, method(*args, task, attempt)
        except TypeError as exc:  # Ray could not pickle the task
            raise AgentNotSerializable(
                spec.name, f"the task for agent {spec.name!r} cannot be sent to Ray: {exc}"
            ) from exc

    async def call(
        self, spec: AgentSpec, task: Any, *, attempt: AttemptContext | None = None
    ) -> Any:
        """One attempt of ``spec`` on ``task`` on the cluster; raises what the agent raised.

        ``attempt`` is what ``heddle.current()`` returns in the agent on the worker.
        """
        ray = self._ray
        actor, ref = await self._submit(spec, task, attempt)
        actor.load += 1
        try:
            return await ref
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # already finished, or Ray going away
                ray.cancel(ref)
            raise
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
                raise cause from exc
            raise
        except ray.exceptions.ActorDiedError:
            self._replace(actor)
            raise
        finally:
            actor.load -= 1

    def _replace(self, dead: _Actor) -> None:
        """Forget an actor that will not restart; the next call gets a fresh one."""
        with self._lock:
            for i, actor in enumerate(self._pool):
                if actor is dead:
                    self._pool[i] = _Actor(self._new_actor(None, "pool"))
                    return
            for key, owned in list(self._owned.items()):
                if owned.actor is dead:
                    del self._owned[key]  # recreated from the driver's copy on next use


def _current_attempt() -> AttemptContext | None:
    """The attempt this call is made in, to ship with it; None outside one."""
    try:
        return current()
    except NoAttemptContext:
        return None


class _RaySession:
    """One execution's view of a :class:`RayRunner`: the actors are the runner's."""

    __slots__ = ("_runner",)

    def __init__(self, runner: RayRunner) -> None:
        self._runner = runner

    async def start(self) -> None:
        # Connect and wait for new pool actors before the run's first attempt, so
        # their start-up never eats into a node's timeout. Blocking work: off the loop.
        await asyncio.to_thread(self._runner.start)

    async def call(self, spec: AgentSpec, task: Any) -> Any:
        return await self._runner.call(spec, task, attempt=_current_attempt())

    async def aclose(self) -> None:
        pass
