"""Tests of heddle.messaging.message_bus: subscription, delivery, isolation, history."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heddle.core.errors import ConfigurationError
from heddle.messaging import BusStatistics, Event, EventType, MessageBus, matches

segments = st.text("abcxyz_", min_size=1, max_size=4)
dotted = st.lists(segments, min_size=1, max_size=4).map(".".join)


async def blocked_forever(event: Event) -> None:
    await asyncio.Event().wait()


# -- patterns ------------------------------------------------------------------


@given(pattern=dotted, event_type=dotted)
def test_exact_pattern_matches_only_its_own_type(pattern: str, event_type: str) -> None:
    """A pattern without '*' matches exactly one event type."""
    assert matches(pattern, event_type) == (pattern == event_type)


@given(prefix=dotted, event_type=dotted)
def test_prefix_pattern_matches_types_under_the_prefix(prefix: str, event_type: str) -> None:
    """'p.*' matches every type that starts with 'p.' and nothing else (not 'p' itself)."""
    assert matches(f"{prefix}.*", event_type) == event_type.startswith(prefix + ".")
    assert not matches(f"{prefix}.*", prefix)


@given(event_type=dotted)
def test_star_matches_everything(event_type: str) -> None:
    """'*' matches every event type."""
    assert matches("*", event_type)


async def test_subscribers_receive_matching_events_only() -> None:
    """Exact, prefix and '*' subscriptions each get the events they match."""
    bus = MessageBus()
    exact: list[str] = []
    prefix: list[str] = []
    everything: list[str] = []
    bus.subscribe("node.failed", lambda e: exact.append(e.event_type))
    bus.subscribe("node.*", lambda e: prefix.append(e.event_type))
    bus.subscribe("*", lambda e: everything.append(e.event_type))
    for event_type in ["workflow.started", "node.started", "node.failed", "nodes.x"]:
        await bus.publish(Event(event_type))
    assert exact == ["node.failed"]
    assert prefix == ["node.started", "node.failed"]
    assert everything == ["workflow.started", "node.started", "node.failed", "nodes.x"]


async def test_enum_member_and_string_subscribe_alike() -> None:
    """Subscribing with an EventType member equals subscribing with its string."""
    bus = MessageBus()
    seen: list[Event] = []
    sid = bus.subscribe(EventType.NODE_FAILED, seen.append)
    await bus.publish(Event("node.failed"))
    assert len(seen) == 1
    assert sid.startswith("node.failed#")


async def test_subscription_made_after_a_publish_gets_later_events_of_that_type() -> None:
    """The per-type route cache is invalidated when subscriptions change."""
    bus = MessageBus()
    await bus.publish(Event("a"))
    seen: list[Event] = []
    sid = bus.subscribe("a", seen.append)
    await bus.publish(Event("a"))
    bus.unsubscribe(sid)
    await bus.publish(Event("a"))
    assert len(seen) == 1


async def test_routing_stays_correct_past_the_route_cache_size() -> None:
    """Publishing more distinct types than the route cache holds still routes every event."""
    bus = MessageBus(max_history=0)
    seen: list[str] = []
    bus.subscribe("t.*", lambda e: seen.append(e.event_type))
    types = [f"t.{i}" for i in range(1100)]
    for event_type in [*types, *types[:5]]:
        await bus.publish(Event(event_type))
    assert seen == [*types, *types[:5]]


# -- sync and async delivery ---------------------------------------------------


async def test_sync_callback_has_run_when_publish_returns() -> None:
    """A plain-function subscriber is called before publish() returns."""
    bus = MessageBus()
    seen: list[Event] = []
    bus.subscribe("*", seen.append)
    event = Event("a")
    await bus.publish(event)
    assert seen == [event]


async def test_async_callback_is_delivered_by_drain() -> None:
    """An async subscriber gets the event once its queue is drained."""
    bus = MessageBus()
    seen: list[Event] = []

    async def record(event: Event) -> None:
        seen.append(event)

    bus.subscribe("*", record)
    event = Event("a")
    await bus.publish(event)
    await bus.drain()
    assert seen == [event]
    assert bus.statistics().delivered == 1


async def test_async_callable_object_and_partial_are_awaited() -> None:
    """Objects with an async __call__ and partials of coroutine functions count as async."""
    bus = MessageBus()
    seen: list[str] = []

    class Recorder:
        async def __call__(self, event: Event) -> None:
            seen.append("object")

    async def tagged(tag: str, event: Event) -> None:
        seen.append(tag)

    bus.subscribe("*", Recorder())
    bus.subscribe("*", functools.partial(tagged, "partial"))
    await bus.publish(Event("a"))
    await bus.drain()
    assert sorted(seen) == ["object", "partial"]
    assert bus.statistics().failed == 0


async def test_each_subscriber_sees_events_in_publish_order_under_concurrent_publishers() -> None:
    """With 50 tasks publishing at once, every subscriber sees the history's order."""
    bus = MessageBus(max_history=10_000)
    rng = random.Random(7)
    seen_async: list[str] = []
    seen_sync: list[str] = []

    async def slow_record(event: Event) -> None:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        seen_async.append(event.id)

    bus.subscribe("*", slow_record)
    bus.subscribe("node.*", lambda e: seen_sync.append(e.id))

    async def publisher(n: int) -> None:
        for i in range(20):
            await asyncio.sleep(0)
            await bus.publish(Event("node.started", {"publisher": n, "i": i}))

    await asyncio.gather(*(publisher(n) for n in range(50)))
    await bus.drain()
    order = [e.id for e in bus.history()]
    assert len(order) == 1000
    assert seen_async == order
    assert seen_sync == order


async def test_async_callback_may_publish_and_drain_waits_for_the_cascade() -> None:
    """An async subscriber that publishes follow-up events is drained to the end."""
    bus = MessageBus()
    seen: list[str] = []

    async def cascade(event: Event) -> None:
        depth = event.payload["depth"]
        seen.append(f"depth {depth}")
        if depth < 3:
            await bus.publish(Event("step", {"depth": depth + 1}))

    bus.subscribe("step", cascade)
    await bus.publish(Event("step", {"depth": 0}))
    await bus.drain()
    assert seen == ["depth 0", "depth 1", "depth 2", "depth 3"]


async def test_drain_inside_a_callback_does_not_wait_for_itself() -> None:
    """A subscriber that calls drain() does not deadlock on its own delivery."""
    bus = MessageBus()
    other: list[Event] = []

    async def drains(event: Event) -> None:
        await bus.drain()

    async def record(event: Event) -> None:
        other.append(event)

    bus.subscribe("*", drains)
    bus.subscribe("*", record)
    await bus.publish(Event("a"))
    await asyncio.wait_for(bus.drain(), timeout=5)
    assert len(other) == 1


async def test_async_context_manager_drains_on_exit() -> None:
    """Leaving 'async with bus' delivers what is queued; aclose() is idempotent."""
    seen: list[Event] = []

    async def record(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    async with MessageBus() as bus:
        bus.subscribe("*", record)
        await bus.publish(Event("a"))
    assert len(seen) == 1
    await bus.aclose()
    await bus.aclose()


async def test_aclose_gives_up_on_a_hung_subscriber_after_its_timeout() -> None:
    """Hung subscriber, 1,000 events queued: aclose(timeout) drops them all in about that time."""
    before = asyncio.all_tasks()
    bus = MessageBus()  # delivery_timeout 30 s: draining would take 1,000 x 30 s
    bus.subscribe("*", blocked_forever)
    for _ in range(1000):
        await bus.publish(Event("e"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bus.aclose(timeout=0.2)
    assert loop.time() - started < 10  # not one 30 s delivery timeout, let alone 1,000
    stats = bus.statistics()
    assert (stats.dropped, stats.pending, stats.delivered, stats.timed_out) == (1000, 0, 0, 0)
    assert asyncio.all_tasks() == before


async def test_aclose_delivers_everything_that_arrives_within_its_timeout() -> None:
    """Deliveries that finish before the deadline are delivered, none dropped."""
    seen: list[int] = []

    async def record(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.payload["i"])

    bus = MessageBus()
    bus.subscribe("*", record)
    for i in range(100):
        await bus.publish(Event("e", {"i": i}))
    await bus.aclose(timeout=5)
    assert seen == list(range(100))
    assert bus.statistics().dropped == 0


async def test_a_subscriber_that_ignores_cancellation_does_not_hold_up_aclose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aclose() logs a delivery that swallows its cancellation and returns without it."""
    release = asyncio.Event()

    async def stubborn(event: Event) -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    bus = MessageBus()
    bus.subscribe("*", stubborn)
    await bus.publish(Event("e"))
    with caplog.at_level(logging.WARNING, logger="heddle.bus"):
        await bus.aclose(timeout=0.05)
    assert "ignored the cancellation" in caplog.text
    release.set()
    await bus.drain()  # the stubborn delivery ends once released
    assert bus.statistics().pending == 0


async def test_drain_with_a_timeout_says_whether_everything_was_delivered() -> None:
    """drain(timeout) returns False while a delivery is stuck, stopping nothing; True once done."""
    release = asyncio.Event()
    seen: list[str] = []

    async def waits(event: Event) -> None:
        await release.wait()
        seen.append(event.event_type)

    bus = MessageBus()
    bus.subscribe("*", waits)
    await bus.publish(Event("a"))
    await bus.publish(Event("b"))
    assert await bus.drain(timeout=0.05) is False
    assert await bus.drain(timeout=0) is False
    release.set()
    assert await bus.drain(timeout=5) is True
    assert seen == ["a", "b"]
    assert bus.statistics().dropped == 0


@pytest.mark.parametrize("seconds", [-1, float("nan"), "1", True])
async def test_bad_close_and_drain_timeouts_are_configuration_errors(seconds: Any) -> None:
    """aclose() and drain() take seconds >= 0 or None; anything else names 'timeout'."""
    bus = MessageBus()
    for call in (bus.drain, bus.aclose):
        with pytest.raises(ConfigurationError) as caught:
            await call(seconds)
        assert caught.value.parameter == "timeout"


def test_one_bus_serves_several_event_loops() -> None:
    """Events still queued when one asyncio.run ends are delivered in the next one."""
    bus = MessageBus()
    seen: list[str] = []
    first_loop = True

    async def record(event: Event) -> None:
        if first_loop:
            await blocked_forever(event)  # cancelled when the first loop shuts down
        seen.append(event.event_type)

    bus.subscribe("*", record)

    async def first() -> None:
        await bus.publish(Event("in-flight"))
        await bus.publish(Event("queued"))
        await asyncio.sleep(0)

    asyncio.run(first())
    assert bus.statistics().pending == 1
    first_loop = False

    async def second() -> None:
        await bus.publish(Event("later"))
        await bus.drain()

    asyncio.run(second())
    assert seen == ["queued", "later"]
    stats = bus.statistics()
    assert (stats.dropped, stats.delivered, stats.pending) == (1, 2, 0)


def test_drain_on_a_new_loop_delivers_what_an_ended_loop_left_queued() -> None:
    """A worker cancelled before it ever ran is replaced; drain() alone delivers its events."""
    bus = MessageBus()
    seen: list[str] = []

    async def record(event: Event) -> None:
        seen.append(event.event_type)

    bus.subscribe("*", record)

    async def publish_and_leave() -> None:
        await bus.publish(Event("a"))
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # as a loop shutdown would, before the delivery task first runs

    asyncio.run(publish_and_leave())
    assert seen == []
    asyncio.run(bus.drain())
    assert seen == ["a"]
    assert bus.statistics().dropped == 0


async def test_delivery_task_cancelled_before_it_ran_is_replaced_on_the_next_publish() -> None:
    """If the delivery task is cancelled before it starts, the next publish starts a new one."""
    bus = MessageBus()
    seen: list[int] = []

    async def record(event: Event) -> None:
        seen.append(event.payload["n"])

    bus.subscribe("*", record)
    await bus.publish(Event("a", {"n": 1}))
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()
    await asyncio.sleep(0)
    await bus.publish(Event("a", {"n": 2}))
    for _ in range(3):
        await asyncio.sleep(0)
    assert seen == [1, 2]


def test_callback_that_finishes_while_the_loop_shuts_down_counts_as_delivered() -> None:
    """A callback that handles its cancellation and returns is delivered; the task still ends."""
    bus = MessageBus()
    cleaned_up: list[bool] = []

    async def tidy(event: Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaned_up.append(True)

    bus.subscribe("*", tidy)

    async def publish_and_leave() -> None:
        await bus.publish(Event("a"))
        await asyncio.sleep(0)

    asyncio.run(publish_and_leave())
    stats = bus.statistics()
    assert cleaned_up == [True]
    assert (stats.delivered, stats.dropped, stats.pending) == (1, 0, 0)


# -- isolation -----------------------------------------------------------------


async def test_raising_sync_subscriber_does_not_reach_publisher_or_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising sync callback is logged with its id and counted; the rest still get the event."""
    bus = MessageBus()
    before: list[Event] = []
    after: list[Event] = []
    bus.subscribe("*", before.append)

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    sid = bus.subscribe("*", broken)
    bus.subscribe("*", after.append)
    event = Event("node.failed", workflow_id="wf-9")
    with caplog.at_level(logging.ERROR, logger="heddle.bus"):
        await bus.publish(event)
    assert before == after == [event]
    (record,) = caplog.records
    assert record.name == "heddle.bus"
    assert sid in record.getMessage()
    assert event.id in record.getMessage()
    assert "wf-9" in record.getMessage()
    assert record.subscription_id == sid  # type: ignore[attr-defined]
    assert record.exc_info is not None
    stats = bus.statistics()
    assert (stats.failed, stats.delivered) == (1, 2)


async def test_raising_async_subscriber_is_isolated_and_later_events_still_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An async callback that raises on one event keeps receiving the following ones."""
    bus = MessageBus()
    seen: list[int] = []

    async def picky(event: Event) -> None:
        if event.payload["n"] == 1:
            raise ValueError("no ones")
        seen.append(event.payload["n"])

    sid = bus.subscribe("*", picky)
    with caplog.at_level(logging.ERROR, logger="heddle.bus"):
        for n in range(3):
            await bus.publish(Event("a", {"n": n}))
        await bus.drain()
    assert seen == [0, 2]
    assert [r.subscription_id for r in caplog.records] == [sid]  # type: ignore[attr-defined]
    assert bus.statistics().failed == 1


async def test_callback_raising_cancelled_error_by_itself_is_a_failure() -> None:
    """A callback that raises CancelledError (not the bus being cancelled) is counted as failed."""
    bus = MessageBus()
    seen: list[int] = []

    async def odd(event: Event) -> None:
        if event.payload["n"] == 0:
            raise asyncio.CancelledError
        seen.append(event.payload["n"])

    bus.subscribe("*", odd)
    await bus.publish(Event("a", {"n": 0}))
    await bus.publish(Event("a", {"n": 1}))
    await bus.drain()
    assert seen == [1]
    assert bus.statistics().failed == 1


async def test_sync_callback_returning_a_coroutine_is_reported_not_left_unawaited() -> None:
    """A non-async callback that returns a coroutine is a counted failure, with no warning."""
    bus = MessageBus()

    async def work(event: Event) -> None:
        return None

    bus.subscribe("*", lambda e: work(e))
    await bus.publish(Event("a"))
    assert bus.statistics().failed == 1


async def test_base_exceptions_from_a_sync_callback_are_not_swallowed() -> None:
    """KeyboardInterrupt and friends propagate: isolation is for ordinary exceptions."""
    bus = MessageBus()

    def interrupt(event: Event) -> None:
        raise KeyboardInterrupt

    bus.subscribe("*", interrupt)
    with pytest.raises(KeyboardInterrupt):
        await bus.publish(Event("a"))


# -- slow subscribers ----------------------------------------------------------


async def test_hung_async_subscriber_does_not_stall_the_publisher() -> None:
    """publish() returns at once while a subscriber is stuck; its events wait in its queue."""
    bus = MessageBus(delivery_timeout=None)
    release = asyncio.Event()
    slow: list[Event] = []
    fast: list[Event] = []

    async def stuck(event: Event) -> None:
        await release.wait()
        slow.append(event)

    bus.subscribe("*", stuck)
    bus.subscribe("*", fast.append)
    for _ in range(100):
        await asyncio.wait_for(bus.publish(Event("a")), timeout=5)
        await asyncio.sleep(0)
    assert len(fast) == 100
    assert slow == []
    assert bus.statistics().pending == 99  # the first one is in flight
    release.set()
    await bus.drain()
    assert slow == fast


async def test_delivery_that_overruns_the_timeout_is_cancelled_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An async delivery past delivery_timeout is cancelled, logged, and the next one proceeds."""
    bus = MessageBus(delivery_timeout=0.01)
    seen: list[int] = []
    cancelled = asyncio.Event()

    async def hangs_on_first(event: Event) -> None:
        if event.payload["n"] == 0:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        seen.append(event.payload["n"])

    bus.subscribe("*", hangs_on_first)
    with caplog.at_level(logging.WARNING, logger="heddle.bus"):
        await bus.publish(Event("a", {"n": 0}))
        await bus.publish(Event("a", {"n": 1}))
        await bus.drain()
    assert cancelled.is_set()
    assert seen == [1]
    stats = bus.statistics()
    assert (stats.timed_out, stats.delivered, stats.failed) == (1, 1, 0)
    assert "took longer than" in caplog.text


async def test_one_watchdog_times_out_several_stuck_subscribers() -> None:
    """Two subscribers stuck at once are both cancelled; a quick delivery before is not."""
    bus = MessageBus(delivery_timeout=0.02)
    done: list[str] = []

    async def quick_then_stuck(event: Event) -> None:
        if event.payload["n"] == 1:
            await asyncio.Event().wait()
        done.append(f"a{event.payload['n']}")

    async def always_stuck(event: Event) -> None:
        await asyncio.sleep(0)
        if event.payload["n"] == 1:
            await asyncio.Event().wait()
        done.append(f"b{event.payload['n']}")

    bus.subscribe("*", quick_then_stuck)
    bus.subscribe("*", always_stuck)
    await bus.publish(Event("a", {"n": 0}))
    await bus.drain()
    await bus.publish(Event("a", {"n": 1}))
    await bus.publish(Event("a", {"n": 2}))
    await bus.drain()
    assert sorted(done) == ["a0", "a2", "b0", "b2"]
    stats = bus.statistics()
    assert (stats.timed_out, stats.delivered) == (2, 4)


async def test_delivery_starting_after_the_first_deadline_gets_its_own_deadline() -> None:
    """A delivery that starts while the watchdog is armed for an earlier one still times out."""
    bus = MessageBus(delivery_timeout=0.05)
    finished: list[int] = []

    async def second_hangs(event: Event) -> None:
        if event.payload["n"] == 1:
            await asyncio.Event().wait()
        finished.append(event.payload["n"])

    bus.subscribe("*", second_hangs)
    await bus.publish(Event("a", {"n": 0}))
    await asyncio.sleep(0.03)  # the watchdog armed for the first delivery is still pending
    await bus.publish(Event("a", {"n": 1}))
    await bus.drain()
    assert finished == [0]
    assert bus.statistics().timed_out == 1


async def test_callback_that_swallows_the_timeout_cancel_leaves_no_stray_cancel() -> None:
    """A callback ignoring its cancellation counts as timed out, and later deliveries run fully."""
    bus = MessageBus(delivery_timeout=0.02)
    later: list[int] = []

    async def stubborn(event: Event) -> None:
        if event.payload["n"] == 0:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return  # swallowed: the bus must not leave the cancel request pending
        for _ in range(3):
            await asyncio.sleep(0)
        later.append(event.payload["n"])

    bus.subscribe("*", stubborn)
    await bus.publish(Event("a", {"n": 0}))
    await bus.publish(Event("a", {"n": 1}))
    await bus.drain()
    assert later == [1]
    stats = bus.statistics()
    assert (stats.timed_out, stats.delivered, stats.failed, stats.dropped) == (1, 1, 0, 0)


async def test_idle_bus_holds_no_task() -> None:
    """Once drained, the bus has no task left on the loop (nothing to leak at loop shutdown)."""
    bus = MessageBus()

    async def record(event: Event) -> None:
        await asyncio.sleep(0)

    bus.subscribe("*", record)
    for _ in range(3):
        await bus.publish(Event("a"))
    await bus.drain()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_callback_raising_timeout_error_itself_is_a_failure_not_a_timeout() -> None:
    """A TimeoutError raised by the callback is a failure; only the bus's deadline is a timeout."""
    bus = MessageBus(delivery_timeout=60)

    async def raises_timeout(event: Event) -> None:
        raise TimeoutError("upstream")

    bus.subscribe("*", raises_timeout)
    await bus.publish(Event("a"))
    await bus.drain()
    stats = bus.statistics()
    assert (stats.failed, stats.timed_out) == (1, 0)


async def test_full_queue_drops_the_oldest_events_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past max_pending, the oldest queued events are dropped, counted, logged once."""
    bus = MessageBus(max_pending=2)
    seen: list[int] = []

    async def record(event: Event) -> None:
        seen.append(event.payload["n"])

    bus.subscribe("*", record)
    with caplog.at_level(logging.WARNING, logger="heddle.bus"):
        for n in range(5):
            await bus.publish(Event("a", {"n": n}))
        await bus.drain()
    assert seen == [3, 4]
    assert bus.statistics().dropped == 3
    assert len(caplog.records) == 1
    assert "dropping its oldest" in caplog.text


# -- subscribe and unsubscribe -------------------------------------------------


async def test_unsubscribe_reports_whether_the_subscription_existed() -> None:
    """unsubscribe() is True once, then False; unknown ids are False."""
    bus = MessageBus()
    sid = bus.subscribe("a", lambda e: None)
    assert bus.statistics().subscribers == 1
    assert bus.unsubscribe(sid) is True
    assert bus.unsubscribe(sid) is False
    assert bus.unsubscribe("nope#1") is False  # type: ignore[arg-type]
    assert bus.statistics().subscribers == 0


async def test_unsubscribe_inside_a_callback_is_safe_and_immediate() -> None:
    """A callback may unsubscribe itself and another; neither is called again, even now."""
    bus = MessageBus()
    calls: list[str] = []
    ids: dict[str, Any] = {}

    def first(event: Event) -> None:
        calls.append("first")
        bus.unsubscribe(ids["first"])
        bus.unsubscribe(ids["second"])

    def second(event: Event) -> None:
        calls.append("second")

    ids["first"] = bus.subscribe("*", first)
    ids["second"] = bus.subscribe("*", second)
    await bus.publish(Event("a"))
    await bus.publish(Event("a"))
    assert calls == ["first"]


async def test_subscribe_inside_a_callback_takes_effect_from_the_next_event() -> None:
    """A subscription added during a publish does not get that event, but gets the next."""
    bus = MessageBus()
    late: list[int] = []

    def adds_one(event: Event) -> None:
        if event.payload.get("n") == 0:
            bus.subscribe("*", lambda e: late.append(e.payload["n"]))

    bus.subscribe("*", adds_one)
    await bus.publish(Event("a", {"n": 0}))
    await bus.publish(Event("a", {"n": 1}))
    assert late == [1]


async def test_unsubscribing_discards_queued_events() -> None:
    """Events queued for an async subscriber are not delivered after it unsubscribes."""
    bus = MessageBus()
    seen: list[Event] = []

    async def record(event: Event) -> None:
        seen.append(event)

    sid = bus.subscribe("*", record)
    await bus.publish(Event("a"))
    await bus.publish(Event("a"))
    assert bus.unsubscribe(sid)
    await bus.drain()
    assert seen == []


# -- history -------------------------------------------------------------------


async def test_history_is_bounded_and_oldest_first() -> None:
    """Only the last max_history events are kept, oldest first."""
    bus = MessageBus(max_history=3)
    events = [Event("a", {"n": n}) for n in range(5)]
    for event in events:
        await bus.publish(event)
    assert bus.history() == events[2:]
    assert bus.max_history == 3


async def test_history_filters_by_pattern_and_limit_keeps_the_most_recent() -> None:
    """history(type, limit) returns the most recent matching events, still oldest first."""
    bus = MessageBus()
    events = [Event(t) for t in ["node.started", "workflow.started", "node.failed", "node.started"]]
    for event in events:
        await bus.publish(event)
    assert bus.history("node.started") == [events[0], events[3]]
    assert bus.history("node.*", limit=2) == [events[2], events[3]]
    assert bus.history(limit=1) == [events[3]]
    assert bus.history(limit=0) == []
    assert bus.history("*", limit=10) == events


async def test_max_history_zero_keeps_nothing_but_still_delivers() -> None:
    """max_history=0 disables the history; subscribers still get every event."""
    bus = MessageBus(max_history=0)
    seen: list[Event] = []
    bus.subscribe("*", seen.append)
    await bus.publish(Event("a"))
    assert bus.history() == []
    assert len(seen) == 1


async def test_statistics_count_published_events_and_subscribers() -> None:
    """statistics() is a frozen snapshot of the counters."""
    bus = MessageBus()
    bus.subscribe("a", lambda e: None)
    bus.subscribe("b", lambda e: None)
    await bus.publish(Event("a"))
    await bus.publish(Event("c"))
    assert bus.statistics() == BusStatistics(
        published=2, delivered=1, failed=0, timed_out=0, dropped=0, pending=0, subscribers=2
    )
    assert "subscribers=2" in repr(bus)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["", "node*", "*.failed", ".*", "a.*.b", " a", "**"])
def test_bad_subscription_pattern_is_a_configuration_error(pattern: str) -> None:
    """Patterns other than a type, '*' or 'prefix.*' are refused at subscribe()."""
    with pytest.raises(ConfigurationError) as info:
        MessageBus().subscribe(pattern, lambda e: None)
    assert info.value.parameter == "event_type"


def test_non_string_pattern_is_a_type_error() -> None:
    """subscribe() with a non-string event type raises TypeError."""
    with pytest.raises(TypeError, match="event_type must be a str"):
        MessageBus().subscribe(None, lambda e: None)  # type: ignore[arg-type]


def test_non_callable_callback_is_a_type_error() -> None:
    """subscribe() with something that cannot be called raises TypeError at the call."""
    with pytest.raises(TypeError, match="callback must be callable"):
        MessageBus().subscribe("a", "print")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_history": -1}, "max_history"),
        ({"max_history": "10"}, "max_history"),
        ({"max_history": 1.5}, "max_history"),
        ({"max_history": True}, "max_history"),
        ({"max_pending": 0}, "max_pending"),
        ({"delivery_timeout": 0}, "delivery_timeout"),
        ({"delivery_timeout": -1.0}, "delivery_timeout"),
        ({"delivery_timeout": float("nan")}, "delivery_timeout"),
        ({"delivery_timeout": "1"}, "delivery_timeout"),
    ],
)
def test_bad_constructor_arguments_are_configuration_errors(
    kwargs: dict[str, Any], parameter: str
) -> None:
    """MessageBus() refuses bad settings with a ConfigurationError naming the parameter."""
    with pytest.raises(ConfigurationError) as info:
        MessageBus(**kwargs)
    assert info.value.parameter == parameter


@pytest.mark.parametrize("limit", [-1, 1.0, "3", True])
def test_bad_history_limit_is_a_configuration_error(limit: Any) -> None:
    """history(limit=...) must be an int >= 0."""
    with pytest.raises(ConfigurationError):
        MessageBus().history(limit=limit)


async def test_publishing_something_other_than_an_event_is_a_type_error() -> None:
    """publish() takes Event objects only."""
    with pytest.raises(TypeError, match="takes an Event"):
        await MessageBus().publish({"event_type": "a"})  # type: ignore[arg-type]
