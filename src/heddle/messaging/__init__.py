"""Events and the in-process message bus.

The workflow executor publishes :class:`EventType` lifecycle events on a
:class:`MessageBus`; anything can subscribe to them, by exact type, by
prefix (``"node.*"``) or to everything (``"*"``).
"""

from heddle.messaging.events import Event, EventType
from heddle.messaging.message_bus import (
    BusStatistics,
    Callback,
    MessageBus,
    SubscriptionId,
    matches,
)
from heddle.messaging.recording import RecordingBus
from heddle.messaging.redis_bus import RedisMessageBus

__all__ = [
    "BusStatistics",
    "Callback",
    "Event",
    "EventType",
    "MessageBus",
    "RecordingBus",
    "RedisMessageBus",
    "SubscriptionId",
    "matches",
]
