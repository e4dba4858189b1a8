"""The deadline on every Redis call (``heddle._redis.LoopClients.run``), against a Redis that hangs.

The shared test Redis is never stopped: a proxy in front of it plays the hung
server. ``hold()`` keeps Redis's replies back until ``release()``, as a
stopped server that comes back does; ``freeze()`` drops every later reply on
the connections open now, as a dead network path does. The tests need the
Redis server of ``HEDDLE_TEST_REDIS_URL`` (they skip without it, and fail in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from heddle._redis import LoopClients
from heddle.core.errors import BackendTimeout
from heddle.distributed import RedisCircuitBreakers
from heddle.messaging import Event, RedisMessageBus
from heddle.workflows import CircuitState

pytest.importorskip("redis", reason="needs the redis package: pip install heddle[redis]")

REDIS_URL = os.environ.get("HEDDLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class StallingProxy:
    """A TCP proxy to the test Redis whose replies can be held back or dropped."""

    def __init__(self) -> None:
        self.held = asyncio.Event()  # set once a reply has been held back or dropped
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._frozen: set[asyncio.StreamWriter] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._links: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}{urlsplit(REDIS_URL).path}"

    def hold(self) -> None:
        """Replies wait, on every connection, until release()."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def freeze(self) -> None:
        """The connections open now never get another reply (new ones work)."""
        self._frozen |= self._clients

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        self._flowing.set()
        for writer in self._writers:
            writer.close()  # each pipe then reads EOF and ends
        if self._links:
            await asyncio.wait(self._links)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(asyncio.current_task())  # type: ignore[arg-type]
        parts = urlsplit(REDIS_URL)
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 6379)
        self._writers += [writer, up_writer]
        self._clients.add(writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, replies_to=None),
            self._pipe(up_reader, writer, replies_to=writer),
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        replies_to: asyncio.StreamWriter | None,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if replies_to is not None:
                    if replies_to in self._frozen:
                        self.held.set()
                        continue
                    if not self._flowing.is_set():
                        self.held.set()
                        await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
async def proxy(redis_server: str) -> AsyncIterator[StallingProxy]:
    """A proxy to the test Redis, passing everything on until told otherwise."""
    made = StallingProxy()
    await made.start()
    yield made
    await made.aclose()


async def test_a_hung_call_times_out_and_the_next_one_reads_its_own_reply(
    proxy: StallingProxy, redis_namespace: str
) -> None:
    """A late reply to a timed-out call is never read as the answer to the next call."""
    async with RedisCircuitBreakers(
        proxy.url, threshold=1, namespace=redis_namespace, operation_timeout=0.3
    ) as breakers:
        await breakers.acquire("down")
        await breakers.record_failure("down")
        proxy.hold()
        with pytest.raises(BackendTimeout):
            await breakers.state("down")  # its reply, "open", is held back
        proxy.release()
        assert await breakers.state("up") is CircuitState.CLOSED
        assert await breakers.state("down") is CircuitState.OPEN


async def test_a_caller_cancelled_while_redis_hangs_is_cancelled(
    proxy: StallingProxy, redis_namespace: str
) -> None:
    """An outside cancellation of a call waiting for Redis cancels the caller."""
    async with RedisMessageBus(proxy.url, channel=redis_namespace) as bus:
        proxy.hold()
        publish = asyncio.create_task(bus.publish(Event("x")))
        await proxy.held.wait()  # Redis has answered; the answer is held back
        publish.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publish
        assert publish.cancelled()
        proxy.release()


async def test_a_cancellation_arriving_as_the_deadline_passes_cancels_the_caller() -> None:
    """When the deadline and an outside cancellation meet, the cancellation wins."""
    clients = LoopClients(REDIS_URL)
    started = asyncio.Event()

    async def hangs(client: object) -> None:
        started.set()
        await asyncio.Event().wait()

    # within=0: the deadline's own cancellation is already queued when the call starts.
    call = asyncio.create_task(clients.run("a hung call", hangs, within=0))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert call.cancelled()
    await clients.aclose()


async def test_a_cancellation_swallowed_by_the_call_still_cancels_the_caller() -> None:
    """A library that swallows the caller's cancellation (as wait_for can on 3.11) loses it not."""
    clients = LoopClients(REDIS_URL)
    started = asyncio.Event()

    async def swallows(client: object) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"

    call = asyncio.create_task(clients.run("a call", swallows))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert call.cancelled()
    await clients.aclose()


async def test_the_reader_gives_up_on_a_read_that_never_returns_and_reads_again(
    proxy: StallingProxy, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader's XREAD on a dead connection times out; it reconnects and gets the events."""
    arrived = asyncio.Event()
    seen: list[str] = []

    def record(event: Event) -> None:
        seen.append(event.event_type)
        arrived.set()

    async with (
        RedisMessageBus(proxy.url, channel=redis_namespace, operation_timeout=0.2) as bus,
        RedisMessageBus(REDIS_URL, channel=redis_namespace) as other,
    ):
        bus.subscribe("*", record)  # the reader reads on the connection start() opened
        proxy.freeze()
        with caplog.at_level(logging.WARNING, logger="heddle.bus"):
            await other.publish(Event("meanwhile"))
            async with asyncio.timeout(10):  # a guard: a reader without a deadline hangs here
                await arrived.wait()
        assert seen == ["meanwhile"]
        assert proxy.held.is_set()
    assert "did not answer XREAD" in caplog.text
    assert "retrying in" in caplog.text
