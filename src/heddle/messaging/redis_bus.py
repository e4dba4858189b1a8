"""RedisMessageBus: the message bus across processes and machines, through a Redis stream.

Every bus on the same server and ``channel`` shares one Redis stream,
``{channel}:events``. Delivery semantics:

* ``await bus.publish(event)`` appends the event (``Event.to_dict()`` as
  JSON) to the stream with ``XADD ... MAXLEN ~ max_history``, then delivers
  it to this bus's own subscribers exactly as :class:`MessageBus` does (sync
  callbacks have run when it returns; async ones have it queued). If Redis
  cannot take the event, ``publish`` raises
  :class:`~heddle.core.errors.BackendError` (a
  :class:`~heddle.core.errors.BackendTimeout` if Redis did not answer within
  ``operation_timeout``) and nobody gets it; the workflow executor counts
  such an event as lost and goes on with the run.
* Each bus that has subscribers runs one reader task that ``XREAD``\\ s new
  stream entries (blocking) and delivers those published by *other* buses to
  its subscribers. An event therefore reaches each subscriber once: a bus
  skips its own entries, which it delivered when publishing them. Each
  ``XREAD`` waits up to 2 s (``operation_timeout`` if shorter) for new
  entries; one that fails, or that a hung server leaves unanswered for that
  long plus ``operation_timeout``, is logged and retried, with growing pauses.
* **At most once.** A subscriber gets the events published while its bus is
  listening, each once, in stream order (so each publisher's events in the
  order it published them). Events published while a process was down, or
  before it started listening, are not redelivered; they remain readable with
  :meth:`RedisMessageBus.shared_history` while the stream holds them. A bus
  that falls further behind than the stream's length loses the events trimmed
  meanwhile. Use a consumer group of your own on the same stream if you need
  at-least-once processing.
* ``await bus.start()`` (or ``async with bus``) returns once the bus listens:
  every event published anywhere after that reaches its subscribers.
  ``subscribe()`` inside a running event loop starts listening too, without
  waiting. ``await bus.drain()`` waits until every event already in the
  stream has been delivered here, and every queued delivery is done.
* Subscriber isolation, per-subscriber queues, the delivery timeout, the
  bounded close and the rule that a slow subscriber cannot stall the
  publisher are MessageBus's: the reader hands events to the same dispatch.

``history()`` is MessageBus's, in memory: the events this bus published or
received while listening. ``await bus.shared_history()`` reads the stream, the
events of every process (the last ``max_history`` of them).

Nothing loop-bound is created in ``__init__``; the reader lives on the loop
that started it and is cancelled with it, and the next loop starts another,
resuming after the last event delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from dataclasses import replace
from typing import Any, Self

from heddle._redis import (
    OPERATION_TIMEOUT,
    LoopClients,
    check_seconds,
    check_url,
    import_redis,
    redacted,
)
from heddle.core._checks import check_int
from heddle.core.errors import BackendError, ConfigurationError
from heddle.messaging.events import Event
from heddle.messaging.message_bus import (
    BusStatistics,
    Callback,
    MessageBus,
    SubscriptionId,
    _check_pattern,
    _check_timeout,
    matches,
)

__all__ = ["RedisMessageBus"]

logger = logging.getLogger("heddle.bus")

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_BATCH = 256  # entries per XREAD
# How long one XREAD waits for new entries before asking again: this, or
# operation_timeout if shorter (a short deadline asks for hangs to be noticed
# soon, the reader's too). Its deadline is that wait plus operation_timeout.
_BLOCK_MS = 2_000
_PAGE = 500  # entries per XREVRANGE in shared_history()
_RETRY_MIN, _RETRY_MAX = 0.1, 5.0  # reader's reconnect delays (seconds), doubling

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

StreamId = tuple[int, int]


def _parse_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _entries(reply: Any) -> list[Any]:
    """The entries of the one stream in an XREAD reply, RESP2 (a list) or RESP3 (a dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        return list(entries[0]) if entries and isinstance(entries[0], list) else list(entries)
    return list(reply[0][1])


def _field(fields: Any, name: bytes) -> bytes | None:
    value = fields.get(name) if isinstance(fields, dict) else None
    return value if isinstance(value, bytes) else None


class RedisMessageBus(MessageBus):
    """A :class:`MessageBus` whose events reach the subscribers of every process
    using the same Redis server and ``channel``.

    ``url`` is a redis-py URL; ``channel`` names the shared stream
    (``{channel}:events``); ``max_history`` bounds both the stream (trimmed
    approximately, ``MAXLEN ~``) and this bus's in-memory history.
    ``max_pending`` and ``delivery_timeout`` are MessageBus's.
    ``operation_timeout`` (seconds, default 5) is the deadline of each call
    to Redis: past it, :meth:`publish` raises
    :class:`~heddle.core.errors.BackendTimeout` rather than wait for a hung
    server. See the module docstring for the delivery semantics (at most
    once, in stream order). Needs ``pip install heddle[redis]``.

    ::

        async with RedisMessageBus("redis://127.0.0.1:6379/0") as bus:
            bus.subscribe("node.*", print)       # events of every process
            await WorkflowExecutor(bus=bus).execute(graph)
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        channel: str = "heddle",
        max_history: int = 1000,
        max_pending: int = 10_000,
        delivery_timeout: float | None = 30.0,
        operation_timeout: float = OPERATION_TIMEOUT,
    ) -> None:
        import_redis()  # fail now, with the install hint
        super().__init__(max_history, max_pending=max_pending, delivery_timeout=delivery_timeout)
        if max_history < 1:
            raise ConfigurationError(
                "max_history must be >= 1 for a RedisMessageBus: it is the stream's length",
                parameter="max_history",
            )
        if not isinstance(channel, str) or not channel or not channel.isprintable():
            raise ConfigurationError(
                f"channel must be a non-empty printable str, got {channel!r}", parameter="channel"
            )
        timeout = check_seconds(operation_timeout, "operation_timeout")
        self._clients = LoopClients(check_url(url), timeout=timeout)
        self._channel = channel
        self._stream = f"{channel}:events"
        # Marks this bus's own entries, which its reader skips.
        self._origin = uuid.uuid4().hex.encode()
        self._reader: asyncio.Task[None] | None = None
        self._last_id: bytes | None = None  # the last stream entry the reader has handled
        self._caught_up: list[tuple[StreamId, asyncio.Future[None]]] = []
        self._received = 0

    def __repr__(self) -> str:
        return (
            f"<RedisMessageBus {redacted(self._clients.url)} channel={self._channel!r} "
            f"subscribers={len(self._subscriptions)} history={len(self._history)}/"
            f"{self.max_history}>"
        )

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def stream(self) -> str:
        """The Redis key of the shared stream."""
        return self._stream

    @property
    def operation_timeout(self) -> float:
        """How long one call to Redis may take, in seconds."""
        return self._clients.timeout

    @property
    def received(self) -> int:
        """How many events published by other buses this one has delivered."""
        return self._received

    # -- listening ---------------------------------------------------------------

    def subscribe(self, event_type: str, callback: Callback) -> SubscriptionId:
        """As :meth:`MessageBus.subscribe`; also receives the events of other processes.

        Called inside a running event loop, it starts this bus's reader (use
        :meth:`start` to wait until it listens).
        """
        sid = super().subscribe(event_type, callback)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # started by the next start(), publish() or drain()
        else:
            self._ensure_reader()
        return sid

    async def start(self) -> None:
        """Listen for the events of other processes; returns once listening. Idempotent.

        Every event published (by any process) after this returns reaches
        this bus's subscribers. Raises :class:`~heddle.core.errors.BackendError`
        if Redis cannot be reached.
        """
        if self._last_id is None:
            tail = await self._tail_id()
            if self._last_id is None:
                self._last_id = tail
        self._ensure_reader()

    def _ensure_reader(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._reader
        if task is None or task.done() or task.get_loop() is not loop:
            self._reader = loop.create_task(self._read(), name=f"heddle-bus-reader:{self._stream}")

    async def _tail_id(self) -> bytes:
        """The id of the stream's last entry (``0-0`` if it is empty)."""
        last = await self._clients.run(
            f"XREVRANGE of {self._stream!r}",
            lambda client: client.xrevrange(self._stream, "+", "-", count=1),
        )
        if not last:
            return b"0-0"
        raw = last[0][0]
        return raw if isinstance(raw, bytes) else str(raw).encode()

    async def _read(self) -> None:
        delay = _RETRY_MIN
        me = asyncio.current_task()
        block_ms = max(1, min(_BLOCK_MS, round(self._clients.timeout * 1000)))  # 0: for ever
        within = block_ms / 1000 + self._clients.timeout
        while True:
            if me is not None and me.cancelling():
                # A cancellation that a library swallowed: honour it anyway.
                raise asyncio.CancelledError
            try:
                if self._last_id is None:
                    tail = await self._tail_id()
                    if self._last_id is None:
                        self._last_id = tail
                    self._wake_drains()
                reply = await self._read_after(self._last_id, block_ms, within)
            except BackendError as exc:
                logger.warning("bus reader of %s: %s; retrying in %.1fs", self._stream, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            delay = _RETRY_MIN
            for entry_id, fields in _entries(reply):
                self._last_id = entry_id
                if _field(fields, b"origin") != self._origin:
                    await self._deliver_remote(entry_id, fields)
            self._wake_drains()

    async def _read_after(self, last_id: bytes, block_ms: int, within: float) -> Any:
        """XREAD the entries after ``last_id``, waiting up to ``block_ms`` for new ones."""
        return await self._clients.run(
            f"XREAD of {self._stream!r}",
            lambda client: client.xread({self._stream: last_id}, count=_BATCH, block=block_ms),
            within=within,
        )

    async def _deliver_remote(self, entry_id: bytes, fields: Any) -> None:
        event = self._decode(entry_id, fields)
        if event is not None:
            self._received += 1
            await super().publish(event)

    def _decode(self, entry_id: object, fields: Any) -> Event | None:
        raw = _field(fields, b"event")
        try:
            return Event.from_dict(json.loads(raw if raw is not None else b"null"))
        except (ValueError, TypeError) as exc:
            logger.warning(
                "skipping stream entry %s of %s: not a heddle event (%s)",
                entry_id.decode(errors="replace") if isinstance(entry_id, bytes) else entry_id,
                self._stream,
                exc,
            )
            return None

    def _wake_drains(self) -> None:
        if not self._caught_up or self._last_id is None:
            return
        done = _parse_id(self._last_id)
        waiting = []
        for target, future in self._caught_up:
            if target <= done:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._caught_up = waiting

    # -- publishing ----------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Append ``event`` to the shared stream, then deliver it to this bus's subscribers.

        Raises TypeError if the payload is not JSON, and
        :class:`~heddle.core.errors.BackendError` if Redis cannot take the event
        (:class:`~heddle.core.errors.BackendTimeout` if it did not answer within
        ``operation_timeout``); then nobody gets it.
        """
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event, got {type(event).__name__}")
        try:
            data = _ENCODER.encode(event.to_dict())
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the payload of a {event.event_type!r} event must be JSON to cross processes: "
                f"{exc}"
            ) from exc
        if self._subscriptions:
            self._ensure_reader()
        await self._clients.run(
            f"XADD to {self._stream!r}",
            lambda client: client.xadd(
                self._stream,
                {"event": data, "origin": self._origin},
                maxlen=self.max_history,
                approximate=True,
            ),
        )
        await super().publish(event)

    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - see MessageBus
        """Wait until every event in the stream now has been delivered here (if this bus
        listens) and every queued delivery is done.

        Returns True then; with a ``timeout`` (seconds), False if it passes
        first. Redis is asked once how far the stream goes, within
        ``operation_timeout``: :class:`~heddle.core.errors.BackendError` if it
        cannot tell.
        """
        seconds = _check_timeout(timeout, "timeout")
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        if self._subscriptions:
            self._ensure_reader()
        task = self._reader
        if task is not None and not task.done() and task.get_loop() is loop:
            tail = await self._tail_id()
            last = self._last_id
            if tail != b"0-0" and (last is None or _parse_id(last) < _parse_id(tail)):
                future = loop.create_future()
                self._caught_up.append((_parse_id(tail), future))
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait({future}, timeout=remaining)
                if not done:
                    future.cancel()  # _wake_drains() forgets it
                    return False
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        return await MessageBus.drain(self, remaining)

    async def aclose(self, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109 - see MessageBus
        """Stop listening, deliver what is queued, close the connections. Idempotent.

        All of it within ``timeout`` seconds (default 30; ``None`` for no
        limit), as :meth:`MessageBus.aclose`: past it, the deliveries still
        running are cancelled and those still queued dropped. Closing sends no
        command to Redis, so a hung server does not hold it up. The bus stays
        usable, as a MessageBus does: subscribing or publishing again
        reconnects (and listens from then on).
        """
        seconds = _check_timeout(timeout, "timeout")
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        task, self._reader = self._reader, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is loop:
                # Again and again, should a library swallow the cancellation.
                while not task.done() and (deadline is None or loop.time() < deadline):
                    pause = 0.1 if deadline is None else min(0.1, deadline - loop.time())
                    await asyncio.wait({task}, timeout=pause)
                    task.cancel()
                if task.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                else:
                    logger.error("the bus reader of %s did not stop; left running", self._stream)
        self._last_id = None
        waiting, self._caught_up = self._caught_up, []
        for _, future in waiting:
            future.cancel()
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        await super().aclose(remaining)
        await self._clients.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- inspection ----------------------------------------------------------------

    async def shared_history(
        self, event_type: str | None = None, limit: int | None = None
    ) -> list[Event]:
        """The events in the shared stream (every process's), oldest first.

        Like :meth:`history`: ``event_type`` filters by pattern, ``limit`` keeps
        the most recent ``limit``. At most the last ``max_history`` entries are
        read, whatever the stream's approximate trimming left in it.
        """
        check_int(limit, "limit", minimum=0, none_ok=True)
        pattern = "*" if event_type is None else _check_pattern(event_type)
        found: list[Event] = []
        upper: bytes = b"+"
        scanned = 0
        while scanned < self.max_history and (limit is None or len(found) < limit):
            page = await self._page_before(upper, min(_PAGE, self.max_history - scanned)) or []
            for entry_id, fields in itertools.islice(page, self.max_history - scanned):
                scanned += 1
                event = self._decode(entry_id, fields)
                if event is not None and matches(pattern, event.event_type):
                    found.append(event)
                    if limit is not None and len(found) >= limit:
                        break
            if len(page) < _PAGE:
                break
            last = page[-1][0]
            upper = b"(" + (last if isinstance(last, bytes) else str(last).encode())
        found.reverse()
        return found

    async def _page_before(self, upper: bytes, count: int) -> Any:
        """XREVRANGE: up to ``count`` entries from ``upper`` down, newest first."""
        return await self._clients.run(
            f"XREVRANGE of {self._stream!r}",
            lambda client: client.xrevrange(self._stream, upper, "-", count=count),
        )

    def statistics(self) -> BusStatistics:
        """MessageBus's counters; ``published`` counts only this bus's own publishes
        (see :attr:`received` for the others')."""
        stats = super().statistics()
        return replace(stats, published=stats.published - self._received)
