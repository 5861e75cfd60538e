"""Brokers: where published messages come from.  ``BROKERS`` maps ``--broker`` names
to classes; a user's ``--app`` may register more."""

from __future__ import annotations

from cyclone_sse.brokers.base import Broker, Published
from cyclone_sse.brokers.http import HttpBroker

BROKERS: dict[str, type[Broker]] = {"http": HttpBroker}

__all__ = ["BROKERS", "Broker", "HttpBroker", "Published"]
