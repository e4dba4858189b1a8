"""A message bus that remembers everything, for tests (re-exported by :mod:`heddle.testing`)."""

from __future__ import annotations

from heddle.messaging.events import Event
from heddle.messaging.message_bus import MessageBus, _check_pattern, matches

__all__ = ["RecordingBus"]


class RecordingBus(MessageBus):
    """A :class:`MessageBus` that also keeps every published event, unbounded.

    Subscribers and the bounded history work as on any bus; the recording is
    extra, so a test can hand this bus to the code under test and then look
    at what was published::

        bus = RecordingBus()
        await WorkflowExecutor(bus=bus).execute(graph)
        assert bus.types()[0] == "workflow.started"
    """

    def __init__(
        self,
        max_history: int = 1000,
        *,
        max_pending: int = 10_000,
        delivery_timeout: float | None = 30.0,
    ) -> None:
        super().__init__(max_history, max_pending=max_pending, delivery_timeout=delivery_timeout)
        self._recorded: list[Event] = []

    async def publish(self, event: Event) -> None:
        """Record ``event``, then publish it as :meth:`MessageBus.publish` does."""
        if isinstance(event, Event):
            self._recorded.append(event)
        await super().publish(event)

    @property
    def events(self) -> list[Event]:
        """Every event published so far, oldest first (a copy)."""
        return list(self._recorded)

    def types(self, event_type: str | None = None) -> list[str]:
        """The types of the recorded events in publish order, optionally filtered by pattern."""
        return [e.event_type for e in self.of_type(event_type or "*")]

    def of_type(self, event_type: str) -> list[Event]:
        """The recorded events matching ``event_type`` (an exact type, ``"*"`` or ``"x.*"``)."""
        pattern = _check_pattern(event_type)
        return [e for e in self._recorded if matches(pattern, e.event_type)]

    def for_workflow(self, workflow_id: str) -> list[Event]:
        """The recorded events of one workflow run."""
        return [e for e in self._recorded if e.workflow_id == workflow_id]

    def clear(self) -> None:
        """Forget the recorded events (the bounded history and the counters stay)."""
        self._recorded.clear()
