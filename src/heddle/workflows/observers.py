"""Whatever watches a run: the bus, the checkpointer's event log, the CLI's progress.

Each is a :class:`RunObserver` in one list the run is given. The run builds
an :class:`~heddle.messaging.events.Event` only when that list is not empty,
and hands it to each observer in turn.

An observer that raises does not fail the work it observes: the run logs the
first such error of the run and goes on. The one exception is the
checkpointer's event log: a store that cannot record a durable run stops it
(the run reads ``interrupted`` and resumes once the store is back).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from heddle.messaging.events import Event
from heddle.messaging.message_bus import MessageBus

__all__ = ["BusObserver", "EventLog", "Isolated", "RunObserver"]

logger = logging.getLogger("heddle.executor")


@runtime_checkable
class RunObserver(Protocol):
    """Sees every event of the runs it is given to, in order, on the run's event loop.

    ``on_event`` should return quickly: the run awaits it. To do slow work,
    hand the event to a task or a queue of your own.

    >>> class Printer:
    ...     async def on_event(self, event):
    ...         print(event.event_type, event.payload.get("node", ""))
    """

    async def on_event(self, event: Event) -> None: ...


class Isolated:
    """Wraps an observer so that its errors are logged (once per run), never raised."""

    __slots__ = ("failures", "inner", "workflow_id")

    def __init__(self, inner: RunObserver, workflow_id: str) -> None:
        self.inner = inner
        self.workflow_id = workflow_id
        self.failures = 0

    async def on_event(self, event: Event) -> None:
        try:
            await self.inner.on_event(event)
        except Exception as exc:
            self.failures += 1
            if self.failures == 1:
                logger.warning(
                    "workflow %r: could not publish %s to %r (%s: %s); the run goes on, "
                    "further failures of this observer in this run are not logged",
                    self.workflow_id,
                    self.inner,
                    event.event_type,
                    type(exc).__name__,
                    _message(exc),
                    extra={"workflow_id": self.workflow_id},
                )


class BusObserver:
    """Publishes a run's events on a :class:`MessageBus` (a Redis outage does not fail the run)."""

    __slots__ = ("bus",)

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    def __repr__(self) -> str:
        return repr(self.bus)

    async def on_event(self, event: Event) -> None:
        await self.bus.publish(event)


class EventLog:
    """Keeps a run's events in its checkpointer, fenced by the run's owner.

    Not isolated: an error here is the store failing, and stops the run.
    """

    __slots__ = ("checkpointer", "owner")

    def __init__(self, checkpointer: _EventStore, owner: str | None) -> None:
        self.checkpointer = checkpointer
        self.owner = owner

    async def on_event(self, event: Event) -> None:
        assert event.workflow_id is not None
        await self.checkpointer.add_event(event.workflow_id, event.to_dict(), owner=self.owner)


class _EventStore(Protocol):
    async def add_event(
        self, workflow_id: str, event: dict[str, object], *, owner: str | None = None
    ) -> None: ...


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<its message could not be produced>"
