"""Brokers: where published messages come from.  ``BROKERS`` maps ``--broker`` names
to classes; a user's ``--app`` may register more."""

from __future__ import annotations

from cyclone_sse.brokers.amqp import AmqpBroker
from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.brokers.http import HttpBroker
from cyclone_sse.brokers.redis import RedisBroker
from cyclone_sse.brokers.zmq import ZmqBroker

BROKERS: dict[str, type[Broker]] = {"http": HttpBroker, "redis": RedisBroker,
                                     "amqp": AmqpBroker, "zmq": ZmqBroker}

__all__ = ["BROKERS", "AmqpBroker", "Broker", "HttpBroker", "Published", "RedisBroker",
           "ZmqBroker"]
