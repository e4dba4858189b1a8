"""RedisMessageBus: MessageBus's interface, with events crossing processes through a stream.

The tests need the Redis server of ``HEDDLE_TEST_REDIS_URL`` (default
127.0.0.1:6379): they skip without it, and fail in CI. Each uses a channel of
its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from heddle import WorkflowExecutor, WorkflowGraph
from heddle.core.errors import BackendError, BackendTimeout, ConfigurationError
from heddle.messaging import Event, EventType, MessageBus, RedisMessageBus

redis = pytest.importorskip("redis", reason="needs the redis package: pip install heddle[redis]")
aioredis = pytest.importorskip("redis.asyncio")

REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def channel(redis_namespace: str) -> str:
    """A fresh channel on the test Redis (its stream is deleted after the test)."""
    return redis_namespace


@pytest.fixture
async def bus(channel: str) -> AsyncIterator[RedisMessageBus]:
    """A listening bus on the test channel."""
    async with RedisMessageBus(REDIS_URL, channel=channel) as made:
        yield made


@pytest.fixture
async def other(channel: str) -> AsyncIterator[RedisMessageBus]:
    """A second bus on the same channel: another process, as far as the buses can tell."""
    async with RedisMessageBus(REDIS_URL, channel=channel) as made:
        yield made


def python(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """A real child process running ``code`` with heddle from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-c", code, *args], text=True, env=env, **kwargs)


# --- MessageBus's interface -------------------------------------------------------


async def test_it_is_a_message_bus_with_a_stream_per_channel(bus: RedisMessageBus) -> None:
    """A RedisMessageBus is a MessageBus; its stream is '<channel>:events'."""
    assert isinstance(bus, MessageBus)
    assert bus.stream == f"{bus.channel}:events"
    assert bus.channel in repr(bus)


async def test_patterns_and_sync_and_async_callbacks_work_as_on_message_bus(
    bus: RedisMessageBus,
) -> None:
    """Exact, prefix and '*' subscriptions get what they match; async ones after drain()."""
    exact: list[str] = []
    prefix: list[str] = []
    everything: list[str] = []

    async def record(event: Event) -> None:
        everything.append(event.event_type)

    bus.subscribe(EventType.NODE_FAILED, lambda e: exact.append(e.event_type))
    bus.subscribe("node.*", lambda e: prefix.append(e.event_type))
    bus.subscribe("*", record)
    for event_type in ("node.started", "node.failed", "workflow.finished", "nodes.x"):
        await bus.publish(Event(event_type))
    assert exact == ["node.failed"]
    assert prefix == ["node.started", "node.failed"]  # sync: delivered by publish itself
    await bus.drain()
    assert everything == ["node.started", "node.failed", "workflow.finished", "nodes.x"]


async def test_an_event_published_here_reaches_a_subscriber_here_exactly_once(
    bus: RedisMessageBus,
) -> None:
    """Delivered locally by publish() and skipped by the reader: once, not twice."""
    seen: list[str] = []
    bus.subscribe("*", lambda e: seen.append(e.id))
    ids = []
    for _ in range(20):
        event = Event("a")
        ids.append(event.id)
        await bus.publish(event)
    await bus.drain()  # the reader has been through all 20 stream entries
    assert seen == ids
    assert bus.received == 0
    assert bus.statistics().published == 20


async def test_events_of_another_bus_arrive_in_order_once_each(
    bus: RedisMessageBus, other: RedisMessageBus
) -> None:
    """Two buses on one channel: each subscriber gets both buses' events, once each."""
    here: list[int] = []
    there: list[int] = []
    bus.subscribe("n", lambda e: here.append(e.payload["i"]))
    other.subscribe("n", lambda e: there.append(e.payload["i"]))
    for i in range(30):
        await (bus if i % 2 else other).publish(Event("n", {"i": i}))
    await bus.drain()
    await other.drain()
    assert sorted(here) == sorted(there) == list(range(30))
    assert [i for i in here if i % 2 == 0] == list(range(0, 30, 2))  # other's, in its order
    assert (bus.received, other.received) == (15, 15)
    stats = bus.statistics()
    assert (stats.published, stats.delivered) == (15, 30)


async def test_unsubscribe_stops_remote_deliveries_too(
    bus: RedisMessageBus, other: RedisMessageBus
) -> None:
    """After unsubscribe() nothing more reaches the callback, from any process."""
    seen: list[str] = []
    sid = bus.subscribe("*", lambda e: seen.append(e.event_type))
    await other.publish(Event("before"))
    await bus.drain()
    assert bus.unsubscribe(sid) is True
    assert bus.unsubscribe(sid) is False
    await other.publish(Event("after"))
    await bus.publish(Event("after"))
    await bus.drain()
    assert seen == ["before"]


async def test_a_raising_subscriber_is_isolated_for_remote_events(
    bus: RedisMessageBus, other: RedisMessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber that raises on an event from elsewhere is logged; the others still get it."""
    good: list[str] = []

    def bad(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("*", bad)
    bus.subscribe("*", lambda e: good.append(e.event_type))
    with caplog.at_level(logging.ERROR, logger="heddle.bus"):
        await other.publish(Event("x"))
        await bus.drain()
    assert good == ["x"]
    assert bus.statistics().failed == 1
    assert "subscriber bug" in caplog.text


async def test_a_hung_subscriber_stalls_neither_the_publisher_nor_the_reader(
    channel: str, other: RedisMessageBus
) -> None:
    """With one subscriber stuck, publishing and remote delivery to the others go on."""
    release = asyncio.Event()
    all_fast = asyncio.Event()
    fast: list[int] = []
    slow: list[int] = []

    async def stuck(event: Event) -> None:
        await release.wait()
        slow.append(event.payload["i"])

    def quick(event: Event) -> None:
        fast.append(event.payload["i"])
        if len(fast) == 50:
            all_fast.set()

    async with RedisMessageBus(REDIS_URL, channel=channel, delivery_timeout=None) as bus:
        bus.subscribe("*", stuck)
        bus.subscribe("*", quick)
        for i in range(50):
            await asyncio.wait_for((bus if i % 2 else other).publish(Event("a", {"i": i})), 5)
        await asyncio.wait_for(all_fast.wait(), 10)  # the 25 from `other` came through the reader
        assert sorted(fast) == list(range(50))
        assert slow == []
        release.set()
        await bus.drain()
        assert slow == fast


async def test_drain_waits_until_the_reader_has_caught_up_with_the_stream(
    bus: RedisMessageBus, other: RedisMessageBus
) -> None:
    """600 events from another bus, then drain(): all 600 have been delivered when it returns."""
    seen: list[int] = []
    bus.subscribe("*", lambda e: seen.append(e.payload["i"]))
    for batch in range(0, 600, 200):
        await asyncio.gather(
            *(other.publish(Event("e", {"i": i})) for i in range(batch, batch + 200))
        )
    await bus.drain()
    assert sorted(seen) == list(range(600))


async def test_the_reader_reconnects_and_delivers_what_was_published_meanwhile(
    channel: str, other: RedisMessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    """Its connection killed, the reader logs, reconnects and resumes after its last event."""
    name = f"reader-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    async with RedisMessageBus(f"{REDIS_URL}?client_name={name}", channel=channel) as bus:
        bus.subscribe("*", lambda e: seen.append(e.event_type))
        await other.publish(Event("before"))
        await bus.drain()
        async with aioredis.Redis.from_url(REDIS_URL, decode_responses=True) as admin:
            clients = await admin.client_list()
            (reader,) = [c for c in clients if c["name"] == name and c["cmd"] == "xread"]
            with caplog.at_level(logging.WARNING, logger="heddle.bus"):
                await admin.client_kill_filter(_id=reader["id"])
                await other.publish(Event("meanwhile"))
                await bus.drain()
        assert seen == ["before", "meanwhile"]
    assert "retrying in" in caplog.text


async def test_it_speaks_resp3_too(channel: str, other: RedisMessageBus) -> None:
    """A URL asking for RESP3 (?protocol=3) reads the stream's replies in that shape."""
    seen: list[str] = []
    async with RedisMessageBus(f"{REDIS_URL}?protocol=3", channel=channel) as bus:
        bus.subscribe("*", lambda e: seen.append(e.event_type))
        await other.publish(Event("x"))
        await bus.drain()
        assert [e.event_type for e in await bus.shared_history()] == ["x"]
    assert seen == ["x"]


async def test_history_is_local_and_shared_history_reads_the_stream(
    bus: RedisMessageBus, other: RedisMessageBus, channel: str
) -> None:
    """history() holds what this bus saw; shared_history() every bus's events, filtered alike."""
    late = RedisMessageBus(REDIS_URL, channel=channel)  # not listening: sees only its own
    bus.subscribe("*", lambda e: None)
    for i in range(4):
        await other.publish(Event("node.started", {"i": i}))
        await other.publish(Event("workflow.x", {"i": i}))
    await late.publish(Event("node.late"))
    await bus.drain()
    assert [e.event_type for e in late.history()] == ["node.late"]
    assert len(bus.history()) == 9
    shared = await late.shared_history()
    assert [e.event_type for e in shared][-3:] == ["node.started", "workflow.x", "node.late"]
    assert [e.payload.get("i") for e in await late.shared_history("node.*", limit=2)] == [3, None]
    assert await late.shared_history("workflow.x", limit=0) == []
    assert [e.payload["i"] for e in await late.shared_history("workflow.x")] == [0, 1, 2, 3]
    with pytest.raises(ConfigurationError):
        await late.shared_history(limit=-1)
    await late.aclose()


async def test_the_stream_is_bounded_by_max_history(channel: str) -> None:
    """2,000 events through a bus with max_history=100: Redis keeps about 100, history 100."""
    async with RedisMessageBus(REDIS_URL, channel=channel, max_history=100) as bus:
        for i in range(2000):
            await bus.publish(Event("e", {"i": i}))
        async with aioredis.Redis.from_url(REDIS_URL) as client:
            length = await client.xlen(bus.stream)
        assert 100 <= length < 300  # MAXLEN ~ trims whole macro nodes
        shared = await bus.shared_history()
        assert [e.payload["i"] for e in shared] == list(range(1900, 2000))
        assert len(bus.history()) == 100


async def test_events_round_trip_whole(bus: RedisMessageBus, other: RedisMessageBus) -> None:
    """id, type, payload, source, workflow id and timestamp arrive as they were sent."""
    received: list[Event] = []
    bus.subscribe("*", received.append)
    sent = Event("x", {"n": [1, {"a": None}], "s": "ü"}, source="me", workflow_id="w-1")
    await other.publish(sent)
    await bus.drain()
    assert received == [sent]
    assert received[0].timestamp == sent.timestamp


async def test_a_payload_that_is_not_json_is_refused_before_anything_happens(
    bus: RedisMessageBus,
) -> None:
    """publish() raises TypeError for a non-JSON payload; nothing is delivered or stored."""
    seen: list[Event] = []
    bus.subscribe("*", seen.append)
    with pytest.raises(TypeError, match="JSON"):
        await bus.publish(Event("x", {"f": object()}))
    with pytest.raises(TypeError, match="Event"):
        await bus.publish("x")  # type: ignore[arg-type]
    assert seen == [] and await bus.shared_history() == []


async def test_foreign_entries_in_the_stream_are_skipped_and_logged(
    bus: RedisMessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry that is not a heddle event is logged and skipped; the reader keeps going."""
    seen: list[str] = []
    bus.subscribe("*", lambda e: seen.append(e.event_type))
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        await client.xadd(bus.stream, {"something": "else"})
        await client.xadd(bus.stream, {"event": json.dumps({"id": "1"})})
    with caplog.at_level(logging.WARNING, logger="heddle.bus"):
        await RedisMessageBus(REDIS_URL, channel=bus.channel).publish(Event("ok"))
        await bus.drain()
    assert seen == ["ok"]
    assert caplog.text.count("not a heddle event") == 2


async def test_the_reader_starts_lazily_and_aclose_stops_it(channel: str) -> None:
    """No task before a subscription; subscribe() in a loop starts one; aclose() ends it."""
    bus = RedisMessageBus(REDIS_URL, channel=channel)
    before = asyncio.all_tasks()
    await bus.publish(Event("no subscribers"))
    assert asyncio.all_tasks() == before
    bus.subscribe("*", lambda e: None)
    (reader,) = asyncio.all_tasks() - before
    assert "heddle-bus-reader" in reader.get_name()
    await bus.aclose()
    await bus.aclose()
    assert reader.done()
    assert asyncio.all_tasks() == before


def test_a_subscription_made_before_any_loop_listens_once_a_loop_runs(channel: str) -> None:
    """subscribe() outside any loop binds nothing; start() inside one listens."""
    bus = RedisMessageBus(REDIS_URL, channel=channel)
    seen: list[str] = []
    bus.subscribe("*", lambda e: seen.append(e.event_type))

    async def main() -> None:
        await bus.start()
        await RedisMessageBus(REDIS_URL, channel=channel).publish(Event("remote"))
        await bus.drain()
        await bus.aclose()

    asyncio.run(main())
    assert seen == ["remote"]


def test_one_bus_serves_several_event_loops(channel: str) -> None:
    """asyncio.run() twice: the second loop gets a new reader that resumes after the last event."""
    bus = RedisMessageBus(REDIS_URL, channel=channel)
    publisher = RedisMessageBus(REDIS_URL, channel=channel)
    seen: list[str] = []
    bus.subscribe("*", lambda e: seen.append(e.event_type))

    async def first() -> None:
        await bus.start()
        await publisher.publish(Event("one"))
        await bus.drain()

    async def second() -> None:
        await publisher.publish(Event("two"))  # published before this loop's reader exists
        await bus.drain()
        await bus.aclose()
        await publisher.aclose()

    asyncio.run(first())  # ends with the reader cancelled and the connections closed
    asyncio.run(second())
    assert seen == ["one", "two"]


async def test_the_executor_publishes_through_it_to_other_processes(
    bus: RedisMessageBus, other: RedisMessageBus
) -> None:
    """WorkflowExecutor(bus=RedisMessageBus) publishes its lifecycle; another bus receives it."""
    seen: list[str] = []
    other.subscribe("*", lambda e: seen.append(e.event_type))

    async def double(task: Any) -> Any:
        return 2

    graph = WorkflowGraph("g").add_node("a", double).add_node("b", double).add_edge("a", "b")
    result = await WorkflowExecutor(bus=bus).execute(graph)
    assert result.status == "succeeded"
    await other.drain()
    assert seen == [e.event_type for e in bus.history()]
    assert seen[0] == "workflow.started" and seen[-1] == "workflow.finished"


async def test_an_unreachable_server_fails_publish_and_start_without_the_password() -> None:
    """Without Redis, publish() and start() raise BackendError; nothing shows the password."""
    bus = RedisMessageBus("redis://u:s3cret@127.0.0.1:1/0", channel="x")
    assert "s3cret" not in repr(bus)
    for call in (bus.publish(Event("x")), bus.start()):
        with pytest.raises(BackendError) as caught:
            await call
        assert not isinstance(caught.value, BackendTimeout | redis.RedisError)
        assert caught.value.backend == "Redis at redis://u:***@127.0.0.1:1/0"
        assert "s3cret" not in str(caught.value)
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
    await bus.aclose()


async def test_a_hung_server_fails_publish_with_backend_timeout_and_nobody_gets_it(
    black_hole: str,
) -> None:
    """A server that never answers the XADD: publish() raises BackendTimeout at its deadline."""
    bus = RedisMessageBus(black_hole, channel="x", operation_timeout=0.2)
    seen: list[Event] = []
    bus.subscribe("*", seen.append)  # its reader, on the same hung server, fails quietly
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendTimeout) as caught:
        await bus.publish(Event("x"))
    assert loop.time() - started < 10  # the deadline (0.2 s) ended it; a hung call never ends
    assert (caught.value.timeout, caught.value.backend) == (0.2, f"Redis at {black_hole}")
    assert "XADD" in str(caught.value)
    assert seen == [] and bus.history() == []
    await bus.aclose()


async def test_aclose_gives_up_on_a_hung_subscriber_after_its_timeout(channel: str) -> None:
    """aclose(timeout) stops the reader and drops a hung subscriber's events in about that time."""
    before = asyncio.all_tasks()
    bus = RedisMessageBus(REDIS_URL, channel=channel)

    async def hung(event: Event) -> None:
        await asyncio.Event().wait()

    bus.subscribe("*", hung)
    for _ in range(200):
        await bus.publish(Event("e"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bus.aclose(timeout=0.2)
    assert loop.time() - started < 10  # not one 30 s delivery timeout, let alone 200
    stats = bus.statistics()
    assert (stats.dropped, stats.pending, stats.delivered) == (200, 0, 0)
    assert asyncio.all_tasks() == before


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_history": 0}, "max_history"),
        ({"channel": ""}, "channel"),
        ({"channel": "a\nb"}, "channel"),
        ({"url": "127.0.0.1:6379"}, "url"),
        ({"max_pending": 0}, "max_pending"),
        ({"operation_timeout": 0}, "operation_timeout"),
        ({"delivery_timeout": 0}, "delivery_timeout"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], parameter: str) -> None:
    """Bad settings raise ConfigurationError naming the parameter, before any connection."""
    with pytest.raises(ConfigurationError) as info:
        RedisMessageBus(**kwargs)
    assert info.value.parameter == parameter


# --- across processes -------------------------------------------------------------

ECHO = textwrap.dedent(
    """
    import asyncio, sys
    from heddle.messaging import Event, RedisMessageBus

    async def main(url, channel, count):
        done = asyncio.Event()
        async with RedisMessageBus(url, channel=channel) as bus:
            pings = []

            async def pong(event):
                pings.append(event.payload["i"])
                await bus.publish(Event("pong", {"i": event.payload["i"], "pid": "child"}))
                if len(pings) == count:
                    done.set()

            bus.subscribe("ping", pong)
            print("ready", flush=True)
            await asyncio.wait_for(done.wait(), 30)
        print(pings, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_events_cross_between_real_processes(bus: RedisMessageBus) -> None:
    """A child process answers each of 20 pings from here with a pong: both directions, in order."""
    pongs: list[int] = []
    got_all = asyncio.Event()
    everything: list[str] = []

    def on_pong(event: Event) -> None:
        pongs.append(event.payload["i"])
        if len(pongs) == 20:
            got_all.set()

    bus.subscribe("pong", on_pong)
    bus.subscribe("*", lambda e: everything.append(e.event_type))
    child = python(
        ECHO, REDIS_URL, bus.channel, "20", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None
    assert await asyncio.to_thread(child.stdout.readline) == "ready\n"
    for i in range(20):
        await bus.publish(Event("ping", {"i": i}))
    await asyncio.wait_for(got_all.wait(), 30)
    out, err = await asyncio.to_thread(child.communicate, timeout=30)
    assert child.returncode == 0, err
    assert out.strip() == str(list(range(20)))
    assert pongs == list(range(20))
    assert everything.count("ping") == 20 and everything.count("pong") == 20
