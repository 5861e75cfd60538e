"""Brokers: where published messages come from.  ``BROKERS`` maps ``--broker`` names
to classes; a user's ``--app`` may register more."""

from __future__ import annotations

from typing import Any

from cyclone_sse.brokers.amqp import AmqpBroker
from cyclone_sse.brokers.amqp_stream import AmqpStreamBroker
from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.brokers.http import HttpBroker
from cyclone_sse.brokers.redis import RedisBroker
from cyclone_sse.brokers.zmq import ZmqBroker

BROKERS: dict[str, type[Broker]] = {"http": HttpBroker, "redis": RedisBroker,
                                     "amqp": AmqpBroker, "zmq": ZmqBroker}
#: A broker run differently with a history: (--broker, --history) -> class.
VARIANTS: dict[tuple[str, str], type[Broker]] = {("amqp", "amqp-stream"): AmqpStreamBroker}


def broker_class(settings: Any) -> type[Broker]:
    """The class that runs ``--broker`` with these options."""
    return VARIANTS.get((settings.broker, settings.history), BROKERS[settings.broker])

__all__ = [
    "BROKERS",
    "VARIANTS",
    "AmqpBroker",
    "AmqpStreamBroker",
    "Broker",
    "HttpBroker",
    "Published",
    "RedisBroker",
    "ZmqBroker",
    "broker_class",
]
