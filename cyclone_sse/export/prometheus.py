"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

The numbers are the ones /stats shows, read when Prometheus scrapes (nothing is counted
twice on the hot path), as ``cyclone_sse.metrics`` declares them: totals become counters
(``*_total``), current values gauges, and each channel's subscriber count
``cyclone_sse_channel_subscribers{channel="..."}`` for the busiest ``--metrics-channels``
channels.
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

from cyclone_sse.metrics import COUNTER, HISTOGRAM, INFO, reported

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatsCollector:
    """A prometheus_client collector over ``App.stats()``: every metric of
    ``cyclone_sse.metrics.METRICS`` that this daemon reports."""

    def __init__(self, app: Any, with_channels: bool = True) -> None:
        self.app = app
        self.with_channels = with_channels

    def collect(self) -> Iterator[Metric]:
        stats = self.app.stats(self.with_channels)
        for metric, value in reported(stats):
            name = metric.exported_name
            if metric.kind == INFO:
                continue
            if metric.label:
                family = GaugeMetricFamily(name, metric.help, labels=[metric.label])
                for label, count in busiest(value, self.app.settings_obj.metrics_channels):
                    family.add_metric([label], count)
                yield family
            elif metric.kind == HISTOGRAM:
                latency = self.app.registry.latency
                yield HistogramMetricFamily(name, metric.help, buckets=latency.cumulative(),
                                            sum_value=latency.sum)
            elif metric.kind == COUNTER:
                yield CounterMetricFamily(name, metric.help, value=value)
            else:
                yield GaugeMetricFamily(name, metric.help, value=value)


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
