"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

The numbers are the ones /stats shows, read when Prometheus scrapes (nothing is counted
twice on the hot path): totals become counters (``*_total``), current values gauges, and
each channel's subscriber count ``cyclone_sse_channel_subscribers{channel="..."}`` for
the busiest ``--metrics-channels`` channels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# /stats name → (metric name, help); the exposition adds "_total" to counters.
_COUNTERS = {
    "events_published": ("events_published", "Events published (stored, then fanned out)."),
    "deliveries": ("deliveries", "Events written to subscribers."),
    "replays": ("replays", "Reconnections that asked for a replay."),
    "replayed_events": ("replayed_events", "Events sent by replays."),
    "replay_gaps": ("replay_gaps", "Replays that could not be complete (history-gap sent)."),
    "slow_disconnects": ("slow_disconnects", "Streams closed: their client stopped reading."),
    "connections_total": ("connections_accepted", "Subscriber connections accepted."),
    "request_timeouts": ("request_timeouts", "Connections closed: a request phase timed out."),
    "refused_pipelined": ("refused_pipelined", "Streams closed: a request was sent on them."),
    "refused_connections": ("refused_connections", "Connections answered 503: over a limit."),
    "closed_at_file_limit": ("closed_at_file_limit",
                             "Connections closed unanswered: the open-file limit (EMFILE)."),
    "client_publishes": ("client_publishes", "Events published by WebSocket clients."),
    "refused_client_publishes": ("refused_client_publishes",
                                 "WebSocket client publishes refused (policy, rate, input)."),
}


class StatsCollector:
    """A prometheus_client collector over ``App.stats()``."""

    def __init__(self, app: Any, with_channels: bool = True) -> None:
        self.app = app
        self.with_channels = with_channels

    def collect(self) -> Iterator[Metric]:
        stats = self.app.stats(self.with_channels)
        for key, (name, help_text) in _COUNTERS.items():
            yield CounterMetricFamily(f"cyclone_sse_{name}", help_text, value=stats[key])
        yield GaugeMetricFamily("cyclone_sse_connections", "Open subscriber connections.",
                                value=stats["connections"])
        yield GaugeMetricFamily("cyclone_sse_channels", "Channels and patterns listened to.",
                                value=stats["channels"])
        latency = self.app.registry.latency
        yield HistogramMetricFamily(
            "cyclone_sse_fanout_seconds", "From an event queued for fan-out (published, "
            "or announced by the broker) to its last write, per batch.",
            buckets=latency.cumulative(), sum_value=latency.sum)
        yield GaugeMetricFamily("cyclone_sse_open_connections",
                                "Open HTTP connections (streams, polls, requests).",
                                value=stats["open_connections"])
        yield GaugeMetricFamily("cyclone_sse_uptime_seconds", "Seconds since start.",
                                value=stats["uptime"])
        broker = stats["broker"]
        yield GaugeMetricFamily("cyclone_sse_broker_connected",
                                "1 while the broker is reachable.",
                                value=1 if broker.get("connected") else 0)
        channels = GaugeMetricFamily("cyclone_sse_channel_subscribers",
                                     "Subscribers per channel or pattern (the busiest "
                                     "--metrics-channels).", labels=["channel"])
        for channel, count in busiest(stats["subscriptions"],
                                      self.app.settings_obj.metrics_channels):
            channels.add_metric([channel], count)
        yield channels


def busiest(pairs: list[list[Any]], most: int) -> list[list[Any]]:
    """The ``most`` channels with the most subscribers (0: none), so that ten thousand
    channels do not make ten thousand series."""
    if not most:
        return []
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))[:most]


def render(app: Any, with_channels: bool = True) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(app, with_channels))  # type: ignore[arg-type]
    return generate_latest(registry)
