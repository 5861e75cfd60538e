"""The embedded default: publishers POST to /publish on this daemon, nothing upstream."""

from __future__ import annotations

from cyclone_sse.brokers.base import Broker


class HttpBroker(Broker):
    """Everything happens in this process: ``POST /publish`` stores and fans out."""

    name = "http"
