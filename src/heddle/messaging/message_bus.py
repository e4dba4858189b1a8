"""The in-process message bus: publish events, deliver them to subscribers.

Delivery semantics (see ``docs/messaging.md`` for the long form):

* ``await bus.publish(event)`` appends the event to the history, then, for
  each matching subscription in subscription order:

  - a **sync** callback is called right there, before ``publish`` returns;
  - an **async** callback gets the event appended to its own bounded queue,
    which a delivery task for that subscription works through in order.

  So ``publish`` never waits for an async subscriber: a slow or hung one
  cannot stall the publisher (the workflow executor publishes in its hot
  path). ``await bus.drain()`` waits until every queued event is delivered.
* Each subscriber sees events in publish order.
* A callback that raises is isolated: the error is logged on the
  ``heddle.bus`` logger with the subscription id and the event, counted in
  :meth:`MessageBus.statistics`, and never reaches the publisher or the
  other subscribers.
* An async delivery that runs longer than ``delivery_timeout`` is cancelled
  and counted as timed out. A subscriber that falls ``max_pending`` events
  behind loses its oldest queued events (counted as dropped, logged once per
  episode): the newest, such as ``workflow.finished``, are the ones a
  progress display needs.
* Subscribing or unsubscribing inside a callback is safe. Each publish works
  on a snapshot of the matching subscriptions: one added during a publish
  gets the next event, one removed gets nothing more.

* Closing is bounded: ``await bus.aclose(timeout=30.0)`` waits at most
  ``timeout`` seconds for the queued deliveries, then cancels the ones
  running and drops the ones queued (counted as dropped), so a hung
  subscriber cannot hold up a shutdown.

Why the isolation and the queues: the workflow executor publishes in the
middle of a run. Were each callback awaited bare inside ``publish``, one
raising subscriber would abort the publish for every subscriber after it and
raise into the run, and one slow subscriber would stall the run.

Nothing loop-bound is created in ``__init__``, and a delivery task exists
only while its queue is non-empty, so one bus serves several ``asyncio.run``
calls. The bus is not thread-safe: use it from one event loop at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NewType, cast

from heddle.core._checks import check_int, check_seconds
from heddle.core._resource import AsyncResource
from heddle.core.errors import ConfigurationError
from heddle.messaging.events import Event

__all__ = ["BusStatistics", "Callback", "MessageBus", "SubscriptionId", "matches"]

logger = logging.getLogger("heddle.bus")

SubscriptionId = NewType("SubscriptionId", str)

#: A subscriber: ``def f(event)`` or ``async def f(event)`` (its return value is ignored).
Callback = Callable[[Event], Any]

_ROUTE_CACHE_SIZE = 1024  # distinct event types remembered before the cache starts over
# How long aclose() waits, past its deadline, for cancelled deliveries to end.
# A callback that honours cancellation ends at once; one that ignores it is
# logged and left running rather than allowed to hold up the close.
_CANCEL_GRACE = 0.1


def _check_pattern(pattern: object) -> str:
    """Validate a subscription pattern: an exact type, ``"*"`` or ``"prefix.*"``."""
    if not isinstance(pattern, str):
        raise TypeError(f"event_type must be a str, got {type(pattern).__name__}")
    stem = pattern[:-2] if pattern.endswith(".*") else pattern
    if pattern != "*" and (not stem or "*" in stem or stem != stem.strip()):
        raise ConfigurationError(
            "event_type must be a non-empty event type, '*' (everything) or 'prefix.*' "
            f"(every type starting with 'prefix.'), got {pattern!r}",
            parameter="event_type",
        )
    return pattern if type(pattern) is str else str(pattern)


def _check_timeout(value: object, parameter: str, *, zero: bool = True) -> float | None:
    """Seconds (>= 0, or > 0 unless ``zero``; ``math.inf`` allowed), or None for no limit."""
    return check_seconds(value, parameter, exclusive=not zero, none_ok=True)


def matches(pattern: str, event_type: str) -> bool:
    """Whether a subscription to ``pattern`` receives events of ``event_type``.

    >>> matches("node.*", "node.failed"), matches("node.*", "nodes.x"), matches("*", "a")
    (True, False, True)
    """
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__
    return call is not None and inspect.iscoroutinefunction(call)


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """Counters of a :class:`MessageBus` since it was created.

    ``delivered``, ``failed``, ``timed_out`` and ``dropped`` count deliveries
    (one event to one subscriber): completed, raised, overran
    ``delivery_timeout``, or lost (queue overflow, or in flight when its
    delivery task was cancelled). ``pending`` is how many deliveries wait in
    queues now.
    """

    published: int
    delivered: int
    failed: int
    timed_out: int
    dropped: int
    pending: int
    subscribers: int


class _Subscription:
    __slots__ = (
        "active",
        "callback",
        "id",
        "in_flight_since",
        "is_async",
        "overflowing",
        "overran",
        "pattern",
        "pending",
        "task",
    )

    def __init__(
        self, sid: SubscriptionId, pattern: str, callback: Callback, max_pending: int
    ) -> None:
        self.id = sid
        self.pattern = pattern
        self.callback = callback
        self.is_async = _is_async_callable(callback)
        self.active = True
        self.pending: deque[Event] = deque(maxlen=max_pending)
        self.task: asyncio.Task[None] | None = None
        self.overflowing = False
        # For the delivery deadline: when the running delivery started (loop
        # time), and whether the watchdog cancelled it.
        self.in_flight_since: float | None = None
        self.overran = False


class MessageBus(AsyncResource):
    """An in-process publish/subscribe bus with a bounded, queryable history.

    ``max_history`` events are kept (0 keeps none); ``max_pending`` bounds each
    async subscriber's queue; ``delivery_timeout`` (seconds, or ``None`` for
    no limit) bounds one async delivery.

    >>> import asyncio
    >>> bus = MessageBus()
    >>> seen = []
    >>> sid = bus.subscribe("node.*", seen.append)
    >>> asyncio.run(bus.publish(Event("node.started", {"node": "a"})))
    >>> [e.event_type for e in seen]
    ['node.started']
    """

    def __init__(
        self,
        max_history: int = 1000,
        *,
        max_pending: int = 10_000,
        delivery_timeout: float | None = 30.0,
    ) -> None:
        check_int(max_history, "max_history", minimum=0)
        check_int(max_pending, "max_pending", minimum=1)
        _check_timeout(delivery_timeout, "delivery_timeout", zero=False)
        self._history: deque[Event] = deque(maxlen=max_history)
        self._max_pending = max_pending
        self._delivery_timeout = delivery_timeout
        self._subscriptions: dict[SubscriptionId, _Subscription] = {}
        # event type -> the subscriptions it reaches, in subscription order.
        # Cleared whenever the subscriptions change, so a lookup is one dict get.
        self._routes: dict[str, tuple[_Subscription, ...]] = {}
        self._next_id = itertools.count(1)
        # Running delivery tasks and their subscriptions (an unsubscribed one
        # may still be finishing its current delivery).
        self._workers: dict[asyncio.Task[None], _Subscription] = {}
        # One timer enforces every delivery deadline; see _watch().
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_loop: asyncio.AbstractEventLoop | None = None
        self._published = 0
        self._delivered = 0
        self._failed = 0
        self._timed_out = 0
        self._dropped = 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}(subscribers={len(self._subscriptions)}, "
            f"history={len(self._history)}/{self.max_history})>"
        )

    @property
    def max_history(self) -> int:
        """How many events the history keeps."""
        return cast(int, self._history.maxlen)

    # -- subscriptions -------------------------------------------------------

    def subscribe(self, event_type: str, callback: Callback) -> SubscriptionId:
        """Call ``callback(event)`` for every event matching ``event_type`` from now on.

        ``event_type`` is an exact type (``"node.failed"``), ``"*"`` for every
        event, or ``"prefix.*"`` for every type starting with ``"prefix."``.
        ``callback`` may be a plain or an ``async`` function. Returns the id to
        pass to :meth:`unsubscribe`.
        """
        pattern = _check_pattern(event_type)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        sid = SubscriptionId(f"{pattern}#{next(self._next_id)}")
        self._subscriptions[sid] = _Subscription(sid, pattern, callback, self._max_pending)
        self._routes.clear()
        return sid

    def unsubscribe(self, subscription_id: SubscriptionId) -> bool:
        """Stop a subscription; its queued events are discarded. False if it did not exist.

        A delivery already running finishes; nothing else reaches the callback.
        """
        sub = self._subscriptions.pop(subscription_id, None)
        if sub is None:
            return False
        sub.active = False
        sub.pending.clear()
        self._routes.clear()
        return True

    def _route(self, event_type: str) -> tuple[_Subscription, ...]:
        route = tuple(s for s in self._subscriptions.values() if matches(s.pattern, event_type))
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[event_type] = route
        return route

    # -- publishing ----------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Record ``event`` and deliver it to every matching subscriber.

        Sync callbacks have run when this returns; async ones have the event
        queued (use :meth:`drain` to wait for them). Never raises because of a
        subscriber.
        """
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event, got {type(event).__name__}")
        self._history.append(event)
        self._published += 1
        route = self._routes.get(event.event_type)
        if route is None:
            route = self._route(event.event_type)
        for sub in route:
            if not sub.active:  # unsubscribed by an earlier callback of this publish
                continue
            if sub.is_async:
                self._enqueue(sub, event)
                continue
            try:
                result = sub.callback(event)
            except Exception as exc:
                self._failed += 1
                self._log_failure(sub, event, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                self._reject_awaitable(sub, event, result)
                continue
            self._delivered += 1

    def _enqueue(self, sub: _Subscription, event: Event) -> None:
        pending = sub.pending
        if len(pending) == pending.maxlen:
            self._dropped += 1  # the append below pushes the oldest out
            if not sub.overflowing:
                sub.overflowing = True
                logger.warning(
                    "subscriber %s is %d events behind; dropping its oldest queued events",
                    sub.id,
                    len(pending),
                    extra={"subscription_id": sub.id},
                )
        pending.append(event)
        task = sub.task
        # No task; or one cancelled before it ever ran, or of a loop that has
        # gone away: neither will take this event.
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._start_worker(sub)

    def _start_worker(self, sub: _Subscription) -> None:
        # A task from a loop that has since closed (asyncio.run cancels tasks
        # when it ends) is simply replaced: the queue lives on the bus, so
        # events left in it are delivered on the next loop.
        task = asyncio.get_running_loop().create_task(self._deliver(sub))
        sub.task = task
        self._workers[task] = sub  # a strong reference; the task removes itself

    async def _deliver(self, sub: _Subscription) -> None:
        # One delivery task per subscription, alive while its queue is not
        # empty, so an idle bus holds no task on any loop.
        task = cast("asyncio.Task[None]", asyncio.current_task())
        loop = task.get_loop()
        timeout = self._delivery_timeout
        pending = sub.pending
        callback = cast(Callable[[Event], Awaitable[object]], sub.callback)
        sub.overran = False
        try:
            while pending and sub.active:
                event = pending.popleft()
                if timeout is not None:
                    sub.in_flight_since = started = loop.time()
                    if self._watchdog is None or self._watchdog_loop is not loop:
                        self._arm_watchdog(loop, started + timeout)
                try:
                    await callback(event)
                except (Exception, asyncio.CancelledError) as exc:
                    error: BaseException | None = exc
                else:
                    error = None
                sub.in_flight_since = None
                if error is None and not sub.overran and not task.cancelling():
                    self._delivered += 1
                else:
                    self._settle(sub, task, event, error)
        finally:
            sub.in_flight_since = None
            sub.overflowing = False
            if sub.task is task:
                sub.task = None
            self._workers.pop(task, None)

    def _settle(
        self,
        sub: _Subscription,
        task: asyncio.Task[None],
        event: Event,
        error: BaseException | None,
    ) -> None:
        """Account for a delivery that did not simply succeed; re-raise an outside cancellation."""
        overran, sub.overran = sub.overran, False
        if overran:  # the watchdog cancelled this delivery: undo its cancel request
            task.uncancel()
            self._timed_out += 1
            self._log_timeout(sub, event)
        cancelled = task.cancelling() > 0  # from outside: aclose, loop shutdown
        if overran:
            pass
        elif error is None:
            self._delivered += 1  # the callback finished although we are being cancelled
        elif cancelled and isinstance(error, asyncio.CancelledError):
            self._dropped += 1  # interrupted mid-delivery
        else:  # includes a CancelledError the callback raised on its own
            self._failed += 1
            self._log_failure(sub, event, error)
        if cancelled:
            raise error if isinstance(error, asyncio.CancelledError) else asyncio.CancelledError

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._watchdog = loop.call_at(when, self._watch)
        self._watchdog_loop = loop

    def _watch(self) -> None:
        """Timer callback: cancel every delivery past its deadline, re-arm for the next one.

        One timer for the whole bus, not ``asyncio.timeout()`` per delivery:
        arming and cancelling a timer for every event cost more than the rest
        of the delivery put together. Deliveries only note their start time.
        """
        loop = cast(asyncio.AbstractEventLoop, self._watchdog_loop)
        self._watchdog = None
        timeout = cast(float, self._delivery_timeout)
        now = loop.time()
        next_deadline = math.inf
        for task, sub in list(self._workers.items()):
            since = sub.in_flight_since
            if since is None or sub.overran or task.done() or task.get_loop() is not loop:
                continue
            if now >= since + timeout:
                sub.overran = True
                task.cancel()
            else:
                next_deadline = min(next_deadline, since + timeout)
        if next_deadline < math.inf:
            self._arm_watchdog(loop, next_deadline)

    def _log_timeout(self, sub: _Subscription, event: Event) -> None:
        logger.warning(
            "subscriber %s took longer than %gs on %s event %s; delivery cancelled",
            sub.id,
            self._delivery_timeout,
            event.event_type,
            event.id,
            extra={"subscription_id": sub.id, "event_id": event.id},
        )

    def _log_failure(self, sub: _Subscription, event: Event, exc: BaseException) -> None:
        logger.error(
            "subscriber %s failed on %s event %s (workflow %s): %s: %s",
            sub.id,
            event.event_type,
            event.id,
            event.workflow_id,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"subscription_id": sub.id, "event_id": event.id},
        )

    def _reject_awaitable(self, sub: _Subscription, event: Event, result: object) -> None:
        if inspect.iscoroutine(result):
            result.close()  # never awaited: close it so Python does not warn
        self._failed += 1
        self._log_failure(
            sub,
            event,
            TypeError(
                f"the callback of {sub.id} returned an awaitable but is not an async function; "
                "declare it with 'async def' so the bus awaits it"
            ),
        )

    # A `timeout` parameter (ASYNC109) rather than asyncio.timeout() around the call:
    # drain() returns False instead of raising, and aclose() cancels and counts the
    # deliveries left.
    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until every queued delivery (including ones queued meanwhile) is done.

        Returns True then. With a ``timeout`` (seconds), returns False if it
        passes first; the deliveries go on (:meth:`aclose` stops them).
        Deliveries left queued by an event loop that has since ended are
        resumed on the current loop. Called from inside an async callback,
        it does not wait for that callback's own subscription.
        """
        seconds = _check_timeout(timeout, "timeout")
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        me = asyncio.current_task()
        while True:
            for stale in [t for t in self._workers if t.done()]:
                del self._workers[stale]  # cancelled before it ever ran
            for sub in self._subscriptions.values():
                task = sub.task
                if sub.pending and (task is None or task.done() or task.get_loop() is not loop):
                    self._start_worker(sub)
            waiting = [t for t in self._workers if t is not me and t.get_loop() is loop]
            if not waiting:
                return True
            if deadline is None:
                await asyncio.wait(waiting)
            elif loop.time() >= deadline:
                return False
            else:
                await asyncio.wait(waiting, timeout=deadline - loop.time())

    async def aclose(self, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109
        """Deliver what is queued, within ``timeout`` seconds, and leave no task behind.

        Waits up to ``timeout`` seconds (default 30; ``None`` for no limit)
        for the queued deliveries, as :meth:`drain` does. Past it, the
        deliveries still running are cancelled and those still queued are
        discarded; both count as ``dropped``. Idempotent. The bus stays
        usable: publishing again starts delivering again, which is what lets
        one bus outlive several event loops.
        """
        # Not self.drain(): a subclass's drain may do more (RedisMessageBus's reads the stream).
        if not await MessageBus.drain(self, timeout):
            await self._stop_deliveries()

    async def _stop_deliveries(self) -> None:
        """Drop every queued delivery, cancel the running ones and wait until they end."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        queued = sum(len(sub.pending) for sub in self._subscriptions.values())
        for sub in self._subscriptions.values():
            sub.pending.clear()
        self._dropped += queued
        running = [
            t for t in self._workers if t is not me and not t.done() and t.get_loop() is loop
        ]
        logger.warning(
            "closing the bus: %d queued deliveries dropped, %d running ones cancelled",
            queued,
            len(running),
        )
        for task in running:
            task.cancel()  # the delivery counts itself as dropped (see _settle)
        if not running:
            return
        _, stuck = await asyncio.wait(running, timeout=_CANCEL_GRACE)
        for task in stuck:
            sub = self._workers[task]  # removed only when the task ends
            logger.error(
                "subscriber %s ignored the cancellation of its delivery; left running",
                sub.id,
                extra={"subscription_id": sub.id},
            )

    # -- inspection ----------------------------------------------------------

    def history(self, event_type: str | None = None, limit: int | None = None) -> list[Event]:
        """Recorded events, oldest first.

        ``event_type`` filters with the same patterns as :meth:`subscribe`;
        ``limit`` keeps only the most recent ``limit`` of them.
        """
        check_int(limit, "limit", minimum=0, none_ok=True)
        if event_type is None:
            if limit is None:
                return list(self._history)
            found = list(itertools.islice(reversed(self._history), limit))
        else:
            pattern = _check_pattern(event_type)
            recent = (e for e in reversed(self._history) if matches(pattern, e.event_type))
            found = list(recent if limit is None else itertools.islice(recent, limit))
        found.reverse()
        return found

    def statistics(self) -> BusStatistics:
        """A snapshot of the bus's counters."""
        return BusStatistics(
            published=self._published,
            delivered=self._delivered,
            failed=self._failed,
            timed_out=self._timed_out,
            dropped=self._dropped,
            pending=sum(len(s.pending) for s in self._subscriptions.values()),
            subscribers=len(self._subscriptions),
        )
