"""Graphite export (``--export=graphite``): the carbon plaintext protocol over TCP.

Every ``--export-interval`` seconds one line per number in /stats is sent as
``<export-path>.<name> <value> <unix time>``; per-channel subscriber counts go under
``<export-path>.channels.<channel>`` (the busiest ``--metrics-channels``).  The
connection is kept open and re-made with backoff when carbon goes away; an interval
with no connection is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.application.internet import ClientService, TimerService
from twisted.application.service import MultiService
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from cyclone_sse.export.prometheus import busiest
from cyclone_sse.options import Settings

log = Logger()

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:]")


def metric_lines(prefix: str, stats: Mapping[str, Any], now: int,
                 most: int = 100) -> list[str]:
    """Flatten /stats into carbon lines; channel names become safe path parts."""
    lines = []

    def add(name: str, value: object) -> None:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)):
            lines.append(f"{prefix}.{name} {value} {now}")

    for key, value in stats.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                add(f"{key}.{sub}", subvalue)
        elif key != "subscriptions":
            add(key, value)
    for channel, count in busiest(stats.get("subscriptions", []), most):
        add("channels." + _UNSAFE.sub("_", channel.replace(".", "_")), count)
    return lines


class GraphiteExporter(MultiService):
    """Sends /stats to carbon every ``--export-interval`` seconds (a ``TimerService``)
    over a kept-open connection (a ``ClientService``)."""

    def __init__(self, app: Any, settings: Settings, reactor: Any) -> None:
        super().__init__()
        self.app = app
        self.reactor = reactor
        self.prefix = settings.export_path.rstrip(".")
        endpoint = HostnameEndpoint(reactor, settings.export_host, settings.export_port)
        self.client = ClientService(endpoint, Factory.forProtocol(Protocol), clock=reactor)
        self.client.setServiceParent(self)
        timer = TimerService(settings.export_interval, self.export)
        timer.clock = reactor
        timer.setServiceParent(self)
        self._warned = False

    def export(self) -> None:
        d = self.client.whenConnected(failAfterFailures=1)
        d.addCallbacks(self._send, self._unreachable)

    def _send(self, protocol: Protocol) -> None:
        self._warned = False
        lines = metric_lines(self.prefix, self.app.stats(), int(self.reactor.seconds()),
                             self.app.settings_obj.metrics_channels)
        protocol.transport.write(("\n".join(lines) + "\n").encode())  # type: ignore[union-attr]

    def _unreachable(self, failure: Any) -> None:
        if not self._warned:  # log the outage once, not every interval
            self._warned = True
            log.warn("graphite export skipped: {error}", error=failure.getErrorMessage())
