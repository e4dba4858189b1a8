"""Events: what happened, when (in UTC), where, and in which workflow run.

An :class:`Event` is an immutable value. Its ``timestamp`` is timezone-aware
UTC (by default, the time the event is made): naive local time cannot be
compared across machines, time zones or a daylight-saving change, so a naive
timestamp is refused and an aware one in another zone is converted.
:meth:`Event.to_dict` and :meth:`Event.from_dict` round-trip an event through
JSON so it can cross a process boundary.

:class:`EventType` names the lifecycle events the workflow executor publishes.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from heddle.core.errors import ConfigurationError

__all__ = ["Event", "EventType"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class EventType(enum.StrEnum):
    """The lifecycle events of a workflow run, in the order a run can produce them.

    Members are strings, so ``bus.subscribe(EventType.NODE_FAILED, ...)`` and
    ``bus.subscribe("node.failed", ...)`` are the same subscription.
    """

    WORKFLOW_STARTED = "workflow.started"
    NODE_STARTED = "node.started"
    NODE_SUCCEEDED = "node.succeeded"
    NODE_RETRYING = "node.retrying"
    NODE_FAILED = "node.failed"
    NODE_SKIPPED = "node.skipped"
    EDGE_EXHAUSTED = "edge.exhausted"
    CIRCUIT_OPENED = "circuit.opened"
    CIRCUIT_HALF_OPEN = "circuit.half_open"
    CIRCUIT_CLOSED = "circuit.closed"
    WORKFLOW_FINISHED = "workflow.finished"


# Event types already validated, mapped to their plain-str form (bounded: a
# program publishing endless distinct types just validates them each time).
_KNOWN_TYPES: dict[str, str] = {}
_KNOWN_TYPES_MAX = 4096


def _uuid4_hex() -> str:
    # What uuid.uuid4().hex returns (16 random bytes from os.urandom, version
    # and variant bits set), at a third of the cost: no UUID object.
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _check_timestamp(timestamp: object) -> datetime:
    if not isinstance(timestamp, datetime):
        raise TypeError(f"timestamp must be a datetime, got {type(timestamp).__name__}")
    if timestamp.utcoffset() is None:
        raise ConfigurationError(
            f"timestamp must be timezone-aware, got the naive {timestamp.isoformat()}",
            parameter="timestamp",
        )
    return timestamp if timestamp.tzinfo is UTC else timestamp.astimezone(UTC)


def _check_event_type(event_type: object) -> str:
    if not isinstance(event_type, str):
        raise TypeError(f"event_type must be a str, got {type(event_type).__name__}")
    if not event_type or "*" in event_type or event_type != event_type.strip():
        raise ConfigurationError(
            f"event_type must be a non-empty string without '*' or surrounding spaces "
            f"(wildcards are for subscribing), got {event_type!r}",
            parameter="event_type",
        )
    # A StrEnum member becomes its plain value: reprs and JSON stay simple.
    return event_type if type(event_type) is str else str(event_type)


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Event:
    """One thing that happened, published on a :class:`~heddle.messaging.MessageBus`.

    ``payload`` is a read-only mapping with string keys (a shallow copy of what
    was given; keep its values JSON-serialisable if the event is to cross a
    process boundary). ``id`` (a uuid4 hex) and ``timestamp`` (now, in UTC)
    are filled in unless given; an aware timestamp in another zone is
    converted to UTC, a naive one is refused.

    >>> event = Event("node.succeeded", {"node": "search"}, workflow_id="wf-1")
    >>> event.payload["node"], event.timestamp.tzinfo
    ('search', datetime.timezone.utc)
    """

    event_type: str
    payload: Mapping[str, Any] = field(hash=False)
    source: str | None
    workflow_id: str | None
    id: str
    timestamp: datetime

    def __init__(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        workflow_id: str | None = None,
        id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        # The executor builds a few events per node: the common case is kept
        # to dict lookups and type() checks, the careful checks run on a miss.
        setattr_ = object.__setattr__
        checked_type = _KNOWN_TYPES.get(event_type) if isinstance(event_type, str) else None
        if checked_type is None:
            checked_type = _check_event_type(event_type)
            if len(_KNOWN_TYPES) < _KNOWN_TYPES_MAX:
                _KNOWN_TYPES[checked_type] = checked_type
        setattr_(self, "event_type", checked_type)
        if payload is None:
            setattr_(self, "payload", _EMPTY)
        else:
            if type(payload) is dict:
                copied = payload.copy()
            elif isinstance(payload, Mapping):
                copied = dict(payload)
            else:
                raise TypeError(f"payload must be a mapping or None, got {type(payload).__name__}")
            for key in copied:
                if not isinstance(key, str):
                    raise TypeError(f"payload keys must be strings, got {list(copied)!r}")
            setattr_(self, "payload", MappingProxyType(copied))
        if source is not None and not isinstance(source, str):
            raise TypeError(f"source must be a str or None, got {type(source).__name__}")
        if workflow_id is not None and not isinstance(workflow_id, str):
            raise TypeError(f"workflow_id must be a str or None, got {type(workflow_id).__name__}")
        setattr_(self, "source", source)
        setattr_(self, "workflow_id", workflow_id)
        if id is None:
            id = _uuid4_hex()
        elif not isinstance(id, str) or not id:
            raise ConfigurationError(f"id must be a non-empty str, got {id!r}", parameter="id")
        setattr_(self, "id", id)
        setattr_(
            self,
            "timestamp",
            datetime.now(UTC) if timestamp is None else _check_timestamp(timestamp),
        )

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("source", self.source), ("workflow_id", self.workflow_id))
            if value is not None
        )
        return (
            f"Event({self.event_type!r}, {dict(self.payload)!r}{extra}, "
            f"id={self.id!r}, timestamp={self.timestamp.isoformat()!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # A mappingproxy cannot be pickled; rebuild from plain values instead.
        return (_rebuild, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the timestamp as ISO 8601 with ``+00:00``)."""
        return {
            "id": self.id,
            "event_type": self.event_type,
            "payload": dict(self.payload),
            "source": self.source,
            "workflow_id": self.workflow_id,
            "timestamp": self.timestamp.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict`'s output.

        ``id``, ``event_type`` and ``timestamp`` are required; unknown keys are
        ignored, so a newer producer can add fields without breaking older
        consumers. Anything malformed raises
        :class:`~heddle.core.errors.ConfigurationError` naming the key.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"Event.from_dict() needs a mapping, got {type(data).__name__}")
        for key in ("id", "event_type", "timestamp"):
            if key not in data:
                raise ConfigurationError(f"event data has no {key!r}: {data!r}", parameter=key)
        for key in ("id", "event_type", "timestamp", "source", "workflow_id"):
            value = data.get(key)
            required = key in ("id", "event_type", "timestamp")
            if (value is not None or required) and not isinstance(value, str):
                raise ConfigurationError(
                    f"event data {key!r} must be a string, got {value!r}", parameter=key
                )
        raw_timestamp: str = data["timestamp"]
        try:
            timestamp = datetime.fromisoformat(raw_timestamp)
        except ValueError:
            raise ConfigurationError(
                f"event data 'timestamp' is not ISO 8601: {raw_timestamp!r}", parameter="timestamp"
            ) from None
        payload = data.get("payload")
        if payload is not None and not (
            isinstance(payload, Mapping) and all(isinstance(k, str) for k in payload)
        ):
            raise ConfigurationError(
                f"event data 'payload' must be an object with string keys, got {payload!r}",
                parameter="payload",
            )
        try:
            return cls(
                data["event_type"],
                payload,
                source=data.get("source"),
                workflow_id=data.get("workflow_id"),
                id=data["id"],
                timestamp=timestamp,
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"bad event data: {exc}", parameter=exc.parameter) from None


def _rebuild(data: Mapping[str, Any]) -> Event:
    return Event.from_dict(data)
