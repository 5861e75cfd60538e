"""Brokers: where published messages come from.  ``BROKERS`` maps ``--broker`` names
to classes; a user's ``--app`` may register more."""

from __future__ import annotations

from cyclone_sse.brokers.amqp import AmqpBroker
from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.brokers.http import HttpBroker
from cyclone_sse.brokers.redis import RedisBroker

BROKERS: dict[str, type[Broker]] = {"http": HttpBroker, "redis": RedisBroker,
                                     "amqp": AmqpBroker}

__all__ = ["BROKERS", "AmqpBroker", "Broker", "HttpBroker", "Published", "RedisBroker"]
