"""Tests of heddle.messaging.events: the Event value and the lifecycle types."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heddle.core.errors import ConfigurationError
from heddle.messaging import Event, EventType

event_types = st.text(
    st.characters(codec="utf-8", exclude_characters="*"), min_size=1, max_size=30
).filter(lambda s: s == s.strip())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def test_new_event_has_uuid4_hex_id_and_aware_utc_timestamp() -> None:
    """A fresh event gets a 32-character hex id and a timestamp in UTC."""
    before = datetime.now(UTC)
    event = Event("node.started")
    parsed = uuid.UUID(hex=event.id)
    assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
    assert parsed.hex == event.id
    assert event.timestamp.tzinfo is UTC
    assert before <= event.timestamp <= datetime.now(UTC)


def test_each_event_gets_its_own_id_and_timestamp() -> None:
    """Two events never share an id, and later events are not timestamped earlier."""
    first, second = Event("a"), Event("a")
    assert first.id != second.id
    assert first.timestamp <= second.timestamp


def test_signature_matches_the_issue() -> None:
    """event_type and payload are positional; source and workflow_id keyword-only."""
    event = Event("node.failed", {"node": "x"}, source="executor", workflow_id="wf-1")
    assert (event.event_type, dict(event.payload), event.source, event.workflow_id) == (
        "node.failed",
        {"node": "x"},
        "executor",
        "wf-1",
    )
    with pytest.raises(TypeError):
        Event("a", None, "executor")  # type: ignore[call-arg]


def test_event_is_frozen() -> None:
    """Assigning to a field of an event fails."""
    event = Event("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event_type = "b"  # type: ignore[misc]


def test_payload_is_a_read_only_copy() -> None:
    """Mutating the dict given as payload, or the payload itself, cannot change the event."""
    given_payload = {"node": "a"}
    event = Event("a", given_payload)
    given_payload["node"] = "changed"
    assert event.payload["node"] == "a"
    with pytest.raises(TypeError):
        event.payload["node"] = "b"  # type: ignore[index]


def test_missing_payload_is_an_empty_mapping() -> None:
    """payload=None gives an empty mapping, so subscribers need no None check."""
    assert dict(Event("a").payload) == {}
    assert dict(Event("a", None).payload) == {}


def test_event_type_enum_member_is_stored_as_plain_string() -> None:
    """An EventType member becomes its plain string value."""
    event = Event(EventType.NODE_STARTED)
    assert type(event.event_type) is str
    assert event.event_type == "node.started"
    assert EventType("node.started") is EventType.NODE_STARTED


@pytest.mark.parametrize("bad", ["", "node.*", "*", "a*b", " node.started", "node.started "])
def test_bad_event_type_is_a_configuration_error(bad: str) -> None:
    """An empty type, wildcards or surrounding spaces are refused, naming the parameter."""
    with pytest.raises(ConfigurationError) as info:
        Event(bad)
    assert info.value.parameter == "event_type"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_type": 3}, "event_type must be a str"),
        ({"event_type": "a", "payload": [1]}, "payload must be a mapping"),
        ({"event_type": "a", "payload": {1: "x"}}, "payload keys must be strings"),
        ({"event_type": "a", "source": 1}, "source must be a str"),
        ({"event_type": "a", "workflow_id": 1}, "workflow_id must be a str"),
        ({"event_type": "a", "timestamp": "2025-01-01"}, "timestamp must be a datetime"),
    ],
)
def test_wrong_argument_types_are_type_errors(kwargs: dict[str, Any], message: str) -> None:
    """Arguments of the wrong type raise a TypeError that says which one."""
    with pytest.raises(TypeError, match=message):
        Event(**kwargs)


def test_naive_timestamp_is_refused() -> None:
    """A naive datetime (the user's design's bug) is refused: its time zone is unknown."""
    with pytest.raises(ConfigurationError, match="timezone-aware") as info:
        Event("a", timestamp=datetime(2025, 11, 15, 12, 0))
    assert info.value.parameter == "timestamp"


def test_aware_timestamp_in_another_zone_is_converted_to_utc() -> None:
    """An aware timestamp keeps its instant and is stored in UTC."""
    paris = timezone(timedelta(hours=1))
    event = Event("a", timestamp=datetime(2025, 11, 15, 13, 0, tzinfo=paris))
    assert event.timestamp == datetime(2025, 11, 15, 12, 0, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC


def test_empty_id_is_refused() -> None:
    """An explicitly empty id is a ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        Event("a", id="")
    assert info.value.parameter == "id"


def test_to_dict_is_json_ready_with_iso_timestamp() -> None:
    """to_dict gives plain JSON types; the timestamp is ISO 8601 with a +00:00 offset."""
    event = Event("node.succeeded", {"node": "a"}, workflow_id="wf", id="abc")
    data = event.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["timestamp"].endswith("+00:00")
    assert data["payload"] == {"node": "a"}
    assert set(data) == {"id", "event_type", "payload", "source", "workflow_id", "timestamp"}


@given(
    event_type=event_types,
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    source=st.none() | st.text(max_size=8),
    workflow_id=st.none() | st.text(max_size=8),
)
def test_json_round_trip_gives_an_equal_event(
    event_type: str, payload: dict[str, Any], source: str | None, workflow_id: str | None
) -> None:
    """to_dict -> JSON -> from_dict rebuilds an equal event (same id and instant)."""
    event = Event(event_type, payload, source=source, workflow_id=workflow_id)
    assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_from_dict_ignores_unknown_keys() -> None:
    """Keys a newer producer might add are ignored."""
    data = Event("a").to_dict() | {"schema": 2}
    assert Event.from_dict(data).event_type == "a"


def test_from_dict_accepts_missing_optional_keys() -> None:
    """payload, source and workflow_id may be absent."""
    event = Event.from_dict({"id": "x", "event_type": "a", "timestamp": "2025-11-15T12:00:00Z"})
    assert event.timestamp == datetime(2025, 11, 15, 12, 0, tzinfo=UTC)
    assert dict(event.payload) == {}


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"id": None}, "id"),
        ({"event_type": None}, "event_type"),
        ({"event_type": ""}, "event_type"),
        ({"event_type": "node.*"}, "event_type"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": 1700000000}, "timestamp"),
        ({"timestamp": "2025-11-15T12:00:00"}, "timestamp"),
        ({"payload": [1, 2]}, "payload"),
        ({"payload": {1: 2}}, "payload"),
        ({"source": 5}, "source"),
        ({"workflow_id": ["wf"]}, "workflow_id"),
        ({"id": ""}, "id"),
    ],
)
def test_from_dict_rejects_malformed_data_naming_the_key(
    change: dict[str, Any], parameter: str
) -> None:
    """Malformed data raises ConfigurationError whose parameter is the key at fault."""
    data = Event("a").to_dict() | change
    with pytest.raises(ConfigurationError) as info:
        Event.from_dict(data)
    assert info.value.parameter == parameter


@pytest.mark.parametrize("key", ["id", "event_type", "timestamp"])
def test_from_dict_requires_id_type_and_timestamp(key: str) -> None:
    """A missing required key raises ConfigurationError naming it."""
    data = Event("a").to_dict()
    del data[key]
    with pytest.raises(ConfigurationError, match=key) as info:
        Event.from_dict(data)
    assert info.value.parameter == key


def test_from_dict_needs_a_mapping() -> None:
    """Something other than a mapping is a TypeError."""
    with pytest.raises(TypeError, match="mapping"):
        Event.from_dict([("id", "x")])  # type: ignore[arg-type]


def test_events_pickle_and_copy() -> None:
    """Events survive pickle and deepcopy (the read-only payload is rebuilt)."""
    event = Event("a", {"nested": {"x": [1]}}, workflow_id="wf")
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.deepcopy(event) == event


def test_events_are_hashable_and_compare_by_value() -> None:
    """Events can be put in sets; equal fields mean equal events."""
    event = Event("a", {"k": 1})
    twin = Event("a", {"k": 1}, id=event.id, timestamp=event.timestamp)
    assert event == twin
    assert len({event, twin}) == 1


def test_repr_shows_type_payload_and_ids() -> None:
    """The repr is readable in logs: type, plain payload, workflow id, event id."""
    text = repr(Event("node.failed", {"node": "a"}, workflow_id="wf", id="e1"))
    assert text.startswith("Event('node.failed', {'node': 'a'}, workflow_id='wf', id='e1'")


def test_lifecycle_event_types_are_the_documented_strings() -> None:
    """EventType names exactly the lifecycle events the executor publishes."""
    assert [t.value for t in EventType] == [
        "workflow.started",
        "node.started",
        "node.succeeded",
        "node.retrying",
        "node.failed",
        "node.skipped",
        "edge.exhausted",
        "circuit.opened",
        "circuit.half_open",
        "circuit.closed",
        "workflow.finished",
    ]
