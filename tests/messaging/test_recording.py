"""Tests of heddle.messaging.recording.RecordingBus and of the package's public names."""

from __future__ import annotations

import inspect

import heddle.messaging
from heddle.messaging import Event, MessageBus, RecordingBus


async def test_recording_bus_keeps_every_event_beyond_max_history() -> None:
    """The recording is unbounded even when the history keeps one event."""
    bus = RecordingBus(max_history=1)
    for n in range(5):
        await bus.publish(Event("node.started", {"n": n}))
    assert [e.payload["n"] for e in bus.events] == [0, 1, 2, 3, 4]
    assert len(bus.history()) == 1


async def test_recording_bus_is_a_message_bus_that_still_delivers() -> None:
    """Subscribers of a RecordingBus get events as on any MessageBus."""
    bus = RecordingBus()
    seen: list[Event] = []
    bus.subscribe("*", seen.append)
    await bus.publish(Event("a"))
    assert isinstance(bus, MessageBus)
    assert seen == bus.events


async def test_types_of_type_and_for_workflow_filter_the_recording() -> None:
    """types(), of_type() and for_workflow() answer the usual test questions."""
    bus = RecordingBus()
    for event_type, wf in [
        ("workflow.started", "wf-1"),
        ("node.started", "wf-1"),
        ("node.started", "wf-2"),
        ("node.failed", "wf-1"),
    ]:
        await bus.publish(Event(event_type, workflow_id=wf))
    assert bus.types() == ["workflow.started", "node.started", "node.started", "node.failed"]
    assert bus.types("node.*") == ["node.started", "node.started", "node.failed"]
    assert [e.workflow_id for e in bus.of_type("node.started")] == ["wf-1", "wf-2"]
    assert [e.event_type for e in bus.for_workflow("wf-2")] == ["node.started"]


async def test_clear_forgets_the_recording_only() -> None:
    """clear() empties the recording; history and statistics stay."""
    bus = RecordingBus()
    await bus.publish(Event("a"))
    bus.clear()
    assert bus.events == []
    assert len(bus.history()) == 1
    assert bus.statistics().published == 1


async def test_events_property_is_a_copy() -> None:
    """Changing the list returned by .events does not change the recording."""
    bus = RecordingBus()
    await bus.publish(Event("a"))
    bus.events.clear()
    assert len(bus.events) == 1


def test_package_all_is_sorted_and_lists_every_public_name() -> None:
    """heddle.messaging.__all__ is sorted and equals the package's public, non-module names."""
    public = {
        name
        for name, value in vars(heddle.messaging).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert list(heddle.messaging.__all__) == sorted(heddle.messaging.__all__)
    assert set(heddle.messaging.__all__) == public
