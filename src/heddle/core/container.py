"""The dependency-injection container: register how to build a service, resolve it where used.

A key is any hashable: usually the service's type (``Database``), else a
name (``"llm.client"``). What is registered under it is either

* a **factory**, a callable taking no arguments (a class, a function, a
  lambda, or an ``async def``), called on :meth:`Container.resolve`; with
  ``singleton=True`` (the default) it is called once and its result kept; or
* a **value**, returned as it is.

:meth:`Container.register` tells them apart by ``callable()``: a callable is a
factory. To register a callable *as the service* (a function, a class, an
agent object with ``__call__``), use :meth:`Container.register_value`.

A singleton factory runs exactly once even when many threads, or many tasks
of one event loop, resolve it at the same moment; an async factory is
resolved with ``await container.aresolve(key)``. :meth:`Container.override`
swaps a registration for the length of a ``with`` block, for tests.

:func:`get_container` returns one process-wide container, created once
under double-checked locking (a lock-free read, then a locked re-check), so
threads racing to create it get the same one; :func:`reset_container`
forgets it (for tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from heddle.core.errors import ConfigurationError

__all__ = ["Container", "get_container", "reset_container"]

T = TypeVar("T")

_MISSING: Any = object()  # "not built yet"; None is a legitimate service value


class _Abandoned(Exception):
    """The task building an async singleton was cancelled: a waiter should try again."""


def _name(key: Hashable) -> str:
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    return repr(key)


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__
    return call is not None and inspect.iscoroutinefunction(call)


class _Registration:
    """What is registered under one key, and (for a singleton) what it built."""

    __slots__ = ("building", "factory", "instance", "is_async", "lock", "singleton")

    def __init__(self, factory: Callable[[], Any] | None, instance: Any, singleton: bool) -> None:
        self.factory = factory
        self.instance = instance
        self.singleton = singleton
        self.is_async = factory is not None and _is_async_callable(factory)
        # RLock: a factory resolving its own key recurses into a RecursionError
        # instead of deadlocking.
        self.lock = threading.RLock()
        # While an async singleton is being built: where its result will appear.
        # A concurrent.futures.Future is thread-safe and bound to no event loop.
        self.building: concurrent.futures.Future[Any] | None = None


class Container:
    """A registry of services: register factories or values by key, resolve them by key.

    >>> container = Container()
    >>> container.register("greeting", lambda: "hello")
    >>> container.resolve("greeting")
    'hello'
    """

    def __init__(self) -> None:
        self._registrations: dict[Hashable, _Registration] = {}
        self._lock = threading.Lock()  # guards changes to _registrations

    def __repr__(self) -> str:
        return f"<Container(services={len(self._registrations)})>"

    # -- registering ---------------------------------------------------------

    def register(
        self, key: Hashable, factory_or_instance: object, *, singleton: bool = True
    ) -> None:
        """Register a factory (anything callable) or an instance under ``key``.

        A factory is called with no arguments; with ``singleton=True`` only
        once. Registering a key again replaces the earlier registration and
        forgets what it built. To register a callable as the service itself,
        use :meth:`register_value`.
        """
        if callable(factory_or_instance):
            self.register_factory(key, factory_or_instance, singleton=singleton)
        elif not singleton:
            raise ConfigurationError(
                f"singleton=False needs a factory, but {factory_or_instance!r} registered under "
                f"{_name(key)} is an instance; register a callable that builds a new one",
                parameter="singleton",
            )
        else:
            self.register_value(key, factory_or_instance)

    def register_factory(
        self, key: Hashable, factory: Callable[[], Any], *, singleton: bool = True
    ) -> None:
        """Register ``factory`` (sync or ``async def``, no arguments) under ``key``."""
        if not callable(factory):
            raise TypeError(f"factory for {_name(key)} must be callable, got {factory!r}")
        if not isinstance(singleton, bool):
            raise ConfigurationError(
                f"singleton must be True or False, got {singleton!r}", parameter="singleton"
            )
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # some builtins have no signature: trust them
            pass
        else:
            try:
                signature.bind()
            except TypeError:
                raise TypeError(
                    f"factory for {_name(key)} must be callable with no arguments, but "
                    f"{factory!r} takes {signature}; wrap it: lambda: factory(...)"
                ) from None
        self._set(key, _Registration(factory, _MISSING, singleton))

    def register_value(self, key: Hashable, value: object) -> None:
        """Register ``value`` itself under ``key``, even if it is callable."""
        self._set(key, _Registration(None, value, True))

    def _set(self, key: Hashable, registration: _Registration) -> None:
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"a container key must be hashable, got {key!r}") from None
        with self._lock:
            self._registrations[key] = registration

    def has(self, key: Hashable) -> bool:
        """Whether something is registered under ``key``."""
        return key in self._registrations

    __contains__ = has

    # -- resolving -----------------------------------------------------------

    def _lookup(self, key: Hashable) -> _Registration:
        try:
            return self._registrations[key]
        except KeyError:
            known = ", ".join(sorted(_name(k) for k in self._registrations)) or "nothing"
            raise KeyError(
                f"nothing is registered under {_name(key)}; registered: {known}"
            ) from None

    @overload
    def resolve(self, key: type[T]) -> T: ...
    @overload
    def resolve(self, key: Hashable) -> Any: ...
    def resolve(self, key: Any) -> Any:
        """The service registered under ``key``, built now if need be.

        Raises :class:`KeyError` naming the key (and what is registered) when
        nothing is, and :class:`TypeError` when its factory is async (use
        :meth:`aresolve`). A factory's own exception propagates, and the next
        resolve calls it again.
        """
        registration = self._lookup(key)
        if registration.is_async:
            raise TypeError(
                f"the factory for {_name(key)} is async; use 'await container.aresolve(...)'"
            )
        return self._resolve_sync(key, registration)

    def _resolve_sync(self, key: Hashable, registration: _Registration) -> Any:
        instance = registration.instance
        if instance is not _MISSING:
            return instance
        if not registration.singleton:
            return self._build(key, registration)
        # Double-checked: the fast path above takes no lock once the service exists.
        with registration.lock:
            if registration.instance is _MISSING:
                registration.instance = self._build(key, registration)
            return registration.instance

    @staticmethod
    def _build(key: Hashable, registration: _Registration) -> Any:
        assert registration.factory is not None  # only values have no factory, and they are built
        value = registration.factory()
        if inspect.iscoroutine(value):
            value.close()  # never awaited: close it so Python does not warn
            raise TypeError(
                f"the factory for {_name(key)} returned a coroutine; declare it 'async def' "
                "and use 'await container.aresolve(...)'"
            )
        return value

    @overload
    async def aresolve(self, key: type[T]) -> T: ...
    @overload
    async def aresolve(self, key: Hashable) -> Any: ...
    async def aresolve(self, key: Any) -> Any:
        """Like :meth:`resolve`, and also builds services whose factory is ``async def``.

        Concurrent callers of an async singleton (tasks of one loop, or loops in
        several threads) share one call of its factory. If that factory raises,
        they all see the error and the next resolve tries again; if the caller
        running it is cancelled, one of the others takes over.
        """
        registration = self._lookup(key)
        if not registration.is_async:
            return self._resolve_sync(key, registration)
        factory = registration.factory
        assert factory is not None
        if not registration.singleton:
            return await factory()
        while True:
            with registration.lock:
                if registration.instance is not _MISSING:
                    return registration.instance
                building = registration.building
                if building is None:
                    building = registration.building = concurrent.futures.Future()
                    owner = True
                else:
                    owner = False
            if owner:
                return await self._abuild(registration, building)
            try:
                # shield: a cancelled waiter must not cancel the shared build
                return await asyncio.shield(asyncio.wrap_future(building))
            except _Abandoned:
                continue

    @staticmethod
    async def _abuild(registration: _Registration, building: concurrent.futures.Future[Any]) -> Any:
        assert registration.factory is not None
        try:
            value = await registration.factory()
        except BaseException as exc:
            with registration.lock:
                registration.building = None
            building.set_exception(exc if isinstance(exc, Exception) else _Abandoned())
            raise
        with registration.lock:
            registration.instance = value
            registration.building = None
        building.set_result(value)
        return value

    # -- testing -------------------------------------------------------------

    @contextmanager
    def override(self, key: Hashable, value: object) -> Iterator[object]:
        """Serve ``value`` (as is, even if callable) under ``key`` inside the ``with`` block.

        On exit, even by an exception, the previous registration comes back,
        including a singleton it had already built; if there was none, the key
        is unregistered again. Overrides nest like the ``with`` blocks do.
        """
        with self._lock:
            previous = self._registrations.get(key)
        self.register_value(key, value)
        try:
            yield value
        finally:
            with self._lock:
                if previous is None:
                    self._registrations.pop(key, None)
                else:
                    self._registrations[key] = previous


_container: Container | None = None
_container_lock = threading.Lock()


def get_container() -> Container:
    """The process-wide container, created on first use (once, even under a thread race)."""
    global _container
    container = _container
    if container is None:
        with _container_lock:
            if _container is None:  # double-checked: another thread may have won
                _container = Container()
            container = _container
    return container


def reset_container() -> None:
    """Forget the process-wide container: the next :func:`get_container` makes a new one."""
    global _container
    with _container_lock:
        _container = None
