"""Every number the daemon reports, declared once: ``METRICS`` gives each its place in
/stats, its kind, its Prometheus name and what it counts.  /stats is the components'
own numbers; Prometheus, Graphite, the dashboard's table and the manual's table are
built from this declaration (``tests/test_metrics.py`` fails on a number in /stats that
is not declared here, and on an export that misses a declared one)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

COUNTER, GAUGE, HISTOGRAM, INFO = "counter", "gauge", "histogram", "info"


@dataclass(frozen=True)
class Metric:
    """One reported number: ``path`` in /stats (``broker.connected``: a field of a
    part's own numbers), its ``kind``, ``help``, and where it is reported (``when``:
    every daemon, or the brokers, stores or options that report it)."""

    path: str
    kind: str
    help: str
    when: str = ""
    prometheus: str = ""  # the name after ``cyclone_sse_`` (default: path, "." as "_")
    label: str = ""  # a labelled series: one value per label value (``subscriptions``)

    @property
    def exported_name(self) -> str:
        """Its Prometheus family name (a counter's samples add ``_total``)."""
        return "cyclone_sse_" + (self.prometheus or self.path.replace(".", "_"))


_REDIS = "Redis broker"
_REDIS_HISTORY = "Redis history"

METRICS: tuple[Metric, ...] = (
    Metric("version", INFO, "The daemon's version."),
    Metric("pid", INFO, "Its process id (which daemon answered, when several share a port)."),
    Metric("uptime", GAUGE, "Seconds since start.", prometheus="uptime_seconds"),
    Metric("connections", GAUGE, "Open subscriber connections (streams, polls, WebSockets)."),
    Metric("open_connections", GAUGE, "Open HTTP connections (subscribers and requests)."),
    Metric("max_connections", GAUGE, "The connection limit (--max-connections)."),
    Metric("channels", GAUGE, "Channels and patterns listened to."),
    Metric("subscriptions", GAUGE, "Subscribers per channel or pattern (/stats: every one, "
           "where names may be shown; Prometheus and Graphite: the busiest "
           "--metrics-channels).", prometheus="channel_subscribers", label="channel"),
    Metric("events_published", COUNTER, "Events published (stored, then fanned out)."),
    Metric("deliveries", COUNTER, "Events written to subscribers."),
    Metric("fanout_seconds", HISTOGRAM, "From an event queued for fan-out (published, or "
           "announced by the broker) to its last write, per batch (/stats: count and sum)."),
    Metric("replays", COUNTER, "Reconnections that asked for a replay."),
    Metric("replayed_events", COUNTER, "Events sent by replays."),
    Metric("replay_gaps", COUNTER, "Replays that could not be complete (history-gap sent)."),
    Metric("refused_pattern_replays", COUNTER, "Pattern replays refused past "
           "--pattern-replays (429)."),
    Metric("slow_disconnects", COUNTER, "Streams closed: their client stopped reading "
           "(--max-pending)."),
    Metric("connections_total", COUNTER, "Subscriber connections accepted.",
       prometheus="connections_accepted"),
    Metric("refused_connections", COUNTER, "Connections answered 503: over a limit."),
    Metric("closed_at_file_limit", COUNTER, "Connections closed unanswered: the open-file "
           "limit (EMFILE)."),
    Metric("request_timeouts", COUNTER, "Connections closed: a request phase timed out (408)."),
    Metric("refused_pipelined", COUNTER, "Streams closed: a request was sent on them."),
    Metric("client_publishes", COUNTER, "Events published by WebSocket clients."),
    Metric("refused_client_publishes", COUNTER, "WebSocket client publishes refused (policy, "
           "rate, input)."),
    Metric("grip_held", GAUGE, "Clients held for a --grip-proxy backend (streams, "
           "responses and WebSockets)."),
    Metric("sockjs.sessions", GAUGE, "SockJS sessions over HTTP transports open now."),
    *(Metric(f"sockjs.{kind}", GAUGE, f"Of those, sessions whose client waits on {what}.")
      for kind, what in (
        ("xhr_streaming", "an xhr_streaming request"), ("eventsource", "an eventsource "
         "request"), ("htmlfile", "an htmlfile request"), ("xhr", "an xhr poll"),
        ("jsonp", "a jsonp poll"))),
    Metric("sockjs.websocket", GAUGE, "SockJS sessions over WebSockets open now."),
    Metric("grip_recoveries", COUNTER, "Gaps in a GRIP-held stream recovered from the "
           "backend's Grip-Link next link."),
    Metric("broker.name", INFO, "The broker (http, redis, amqp, zmq)."),
    Metric("broker.connected", GAUGE, "1 while the broker is reachable."),
    Metric("broker.outages", COUNTER, "Times the broker's connection was lost.",
           "Redis or AMQP broker"),
    Metric("broker.received", COUNTER, "Messages received from the broker.",
           "AMQP or ZeroMQ broker"),
    Metric("broker.rejected", COUNTER, "Messages from the broker refused (bad name, size or "
           "form).", "AMQP or ZeroMQ broker"),
    Metric("broker.raw_leader", GAUGE, "1 while this daemon stores raw Redis publishes for "
           "the deployment.", _REDIS),
    Metric("broker.raw_all", GAUGE, "1 while this daemon hears every raw Redis channel.",
           _REDIS),
    Metric("broker.raw_standby", GAUGE, "Raw messages held until the leader acknowledges "
           "them.", _REDIS),
    Metric("broker.raw_recovered", COUNTER, "Raw messages a new leader stored for a gone "
           "one.", _REDIS),
    Metric("broker.raw_dropped", COUNTER, "Raw messages dropped past the standby bound.",
           _REDIS),
    Metric("broker.last_seq", GAUGE, "The newest event seq this daemon has seen.", _REDIS),
    Metric("broker.foreign_skipped", COUNTER, "Events of another history epoch skipped.",
           _REDIS),
    Metric("history.store", INFO, "The history store, when not in memory.", _REDIS_HISTORY),
    Metric("history.connected", GAUGE, "1 while the history store is reachable.",
           _REDIS_HISTORY),
    Metric("history.channels", GAUGE, "Channels with retained events.", "memory history"),
    Metric("history.events", GAUGE, "Events retained.", "memory history"),
    Metric("history.bytes", GAUGE, "Bytes the history holds (Redis: the deployment's, as of "
           "this daemon's last publish)."),
    Metric("history.new_epochs", COUNTER, "Times the store started a new epoch (its data "
           "was lost: clients get history-gap).", _REDIS_HISTORY),
    Metric("history.not_durable", COUNTER, "Publishes answered 503: the WAIT for replicas "
           "timed out.", _REDIS_HISTORY),
    Metric("history.redirects", COUNTER, "MOVED and ASK answers followed.", "Redis Cluster"),
    Metric("history.primaries", GAUGE, "Cluster primaries holding slots.", "Redis Cluster"),
    Metric("presence.shared", GAUGE, "1 when presence is shared through Redis.",
           "+presence policies"),
    Metric("presence.connected", GAUGE, "1 while presence's Redis connections are up.",
           "+presence with Redis"),
    Metric("presence.channels", GAUGE, "Channels with members here.", "+presence policies"),
    Metric("presence.members", GAUGE, "Members here.", "+presence policies"),
    Metric("presence.joins", COUNTER, "Joins here.", "+presence policies"),
)

BY_PATH: dict[str, Metric] = {m.path: m for m in METRICS}


def value_at(stats: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in /stats, or None where this daemon does not report it."""
    value: Any = stats
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def reported(stats: Mapping[str, Any]) -> Iterator[tuple[Metric, Any]]:
    """Every declared metric /stats reports, with its value (booleans as 0 or 1)."""
    for metric in METRICS:
        value = value_at(stats, metric.path)
        if value is None:
            continue
        yield metric, int(value) if isinstance(value, bool) else value


def leaves(stats: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The path of every value in /stats (what a test checks is declared)."""
    for key, value in stats.items():
        path = prefix + key
        if isinstance(value, Mapping) and path not in BY_PATH:
            yield from leaves(value, path + ".")
        else:
            yield path


def render_table() -> str:
    """The manual's metric table (reStructuredText)."""
    header = ("/stats", "Prometheus", "kind", "what it counts")
    rows = []
    for m in METRICS:
        exported = "(not exported)" if m.kind == INFO else f"``{m.exported_name}``"
        if m.kind == COUNTER:
            exported = f"``{m.exported_name}_total``"
        if m.label:
            exported = f"``{m.exported_name}{{{m.label}}}``"
        what = m.help + (f" ({m.when} only)" if m.when else "")
        rows.append((f"``{m.path}``", exported, m.kind, what))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

    def line(cells: tuple[str, str, str, str]) -> str:
        return "  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=False)),
                          cells[3]]).rstrip()

    rule = "  ".join(["=" * w for w in widths] + ["=" * 14])
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_table())
