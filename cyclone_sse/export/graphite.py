"""Graphite export (``--export=graphite``): the carbon plaintext protocol over TCP, or
over UDP (``--export-protocol=udp``) as the 2013 original sent it.

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
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from cyclone_sse.export.prometheus import busiest
from cyclone_sse.metrics import HISTOGRAM, INFO, reported
from cyclone_sse.options import Settings

log = Logger()

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:]")


def metric_lines(prefix: str, stats: Mapping[str, Any], now: int,
                 most: int = 100) -> list[str]:
    """Carbon lines for every metric /stats reports (``cyclone_sse.metrics``); channel
    names become safe path parts, a histogram its count and sum."""
    lines = []

    def add(name: str, value: object) -> None:
        lines.append(f"{prefix}.{name} {value} {now}")

    for metric, value in reported(stats):
        if metric.kind == INFO:
            continue
        if metric.label:
            for channel, count in busiest(value, most):
                add("channels." + _UNSAFE.sub("_", channel.replace(".", "_")), count)
        elif metric.kind == HISTOGRAM:
            for part in ("count", "sum"):
                add(f"{metric.path}.{part}", value[part])
        else:
            add(metric.path, value)
    return lines


#: Largest UDP datagram sent (lines are never split across two).
DATAGRAM = 1400


class GraphiteExporter(MultiService):
    """Sends /stats to carbon every ``--export-interval`` seconds (a ``TimerService``)
    over a kept-open TCP connection (a ``ClientService``) or in UDP datagrams."""

    def __init__(self, app: Any, settings: Settings, reactor: Any) -> None:
        super().__init__()
        self.app = app
        self.reactor = reactor
        self.settings = settings
        self.prefix = settings.export_path.rstrip(".")
        self.udp: Any = None
        self.client: ClientService | None = None
        if settings.export_protocol == "tcp":
            endpoint = HostnameEndpoint(reactor, settings.export_host, settings.export_port)
            self.client = ClientService(endpoint, Factory.forProtocol(Protocol), clock=reactor)
            self.client.setServiceParent(self)
        timer = TimerService(settings.export_interval, self.export)
        timer.clock = reactor
        timer.setServiceParent(self)
        self._warned = False

    def startService(self) -> None:
        if self.client is None:
            self.udp = self.reactor.listenUDP(0, DatagramProtocol())
        super().startService()

    def stopService(self) -> Any:
        if self.udp is not None:
            self.udp.stopListening()
        return super().stopService()

    def lines(self) -> list[str]:
        return metric_lines(self.prefix, self.app.stats(), int(self.reactor.seconds()),
                            self.settings.metrics_channels)

    def export(self) -> None:
        if self.client is not None:
            d = self.client.whenConnected(failAfterFailures=1)
            d.addCallbacks(self._send, self._unreachable)
        else:
            resolved = self.reactor.resolve(self.settings.export_host)
            resolved.addCallbacks(self._send_datagrams, self._unreachable)

    def _send(self, protocol: Protocol) -> None:
        self._warned = False
        data = ("\n".join(self.lines()) + "\n").encode()
        protocol.transport.write(data)  # type: ignore[union-attr]

    def _send_datagrams(self, address: str) -> None:
        self._warned = False
        datagram = b""
        for line in self.lines():
            raw = line.encode() + b"\n"
            if datagram and len(datagram) + len(raw) > DATAGRAM:
                self.udp.write(datagram, (address, self.settings.export_port))
                datagram = b""
            datagram += raw
        if datagram:
            self.udp.write(datagram, (address, self.settings.export_port))

    def _unreachable(self, failure: Any) -> None:
        if not self._warned:  # log the outage once, not every interval
            self._warned = True
            log.warn("graphite export skipped: {error}", error=failure.getErrorMessage())
