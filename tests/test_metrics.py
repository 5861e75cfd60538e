"""Every number is declared once (``cyclone_sse/metrics.py``): each one /stats shows is
declared, and Prometheus, Graphite, the dashboard and the README carry every declared
one — for the default daemon and for each broker and store that adds numbers."""

from __future__ import annotations

import http.client
import re

from cyclone_sse.export.graphite import metric_lines
from cyclone_sse.handlers.dashboard import METRICS_EVENT
from cyclone_sse.metrics import (
    BY_PATH,
    COUNTER,
    GAUGE,
    HISTOGRAM,
    INFO,
    METRICS,
    leaves,
    render_table,
    reported,
)
from tests.daemon import DEADLINE, ROOT, Daemon
from tests.memory import Connection, make_app, publish, subscribe
from tests.services import free_port, redis_prefix  # noqa: F401
from tests.test_amqp import amqp_daemon


def exported(stats: dict, prometheus: str) -> None:
    """``stats`` declares only declared numbers, and the Prometheus text
    (``prometheus``) and Graphite lines made of it carry each one it reports."""
    undeclared = [path for path in leaves(stats) if path not in BY_PATH]
    assert not undeclared, f"numbers in /stats not declared in cyclone_sse/metrics.py: " \
                           f"{undeclared}"
    lines = metric_lines("cs", stats, 0, most=10)
    sent = {line.split()[0] for line in lines}
    count = 0
    for metric, value in reported(stats):
        if metric.kind == INFO:
            continue
        count += 1
        kind = "gauge" if metric.label else metric.kind
        assert re.search(rf"^# TYPE {metric.exported_name}(_total)? {kind}$", prometheus,
                         re.M), metric.path
        if metric.label:
            assert all(f"cs.channels.{c.replace('.', '_')}" in sent for c, _ in value[:10])
        elif metric.kind == HISTOGRAM:
            assert {f"cs.{metric.path}.count", f"cs.{metric.path}.sum"} <= sent
        else:
            assert f"cs.{metric.path}" in sent, metric.path
            sample = metric.exported_name + ("_total" if metric.kind == COUNTER else "")
            assert re.search(rf"^{sample} [-+.\deE]+$", prometheus, re.M), metric.path
    assert count >= 5


def daemon_numbers(daemon: Daemon) -> tuple[dict, str]:
    status, stats = daemon.request("GET", "/stats")
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return stats, text


def test_the_default_daemon_reports_only_declared_numbers_everywhere():
    app = make_app(policies="room.*=public+presence", pattern_replays=5)
    stream = subscribe(app, "channels=news")
    publish(app, channel="news", message="one")
    assert stream.events()
    stats = app.stats()
    assert stats["fanout_seconds"]["count"] == 1  # one batch fanned out
    text = Connection(app).send("GET", "/metrics").head_and_body()[2].decode()
    exported(stats, text)
    # the busiest channel, labelled; the histogram with its buckets
    assert 'cyclone_sse_channel_subscribers{channel="news"} 1.0' in text
    assert "cyclone_sse_fanout_seconds_count 1.0" in text
    assert "cyclone_sse_refused_pattern_replays_total 0.0" in text  # (was missing)


def test_redis_broker_history_and_presence_numbers_are_declared(tmp_path,
                                                                redis_prefix):  # noqa: F811
    daemon = Daemon(tmp_path, "--broker=redis", f"--redis-prefix={redis_prefix}",
                    "--policies=room.*=public+presence", "--heartbeat=30")
    try:
        daemon.wait_for(r"redis (history|pubsub) connection .* is up", 2)
        stats, text = daemon_numbers(daemon)
        assert {"raw_leader", "outages"} <= set(stats["broker"])
        assert stats["history"]["store"] == "redis" and "presence" in stats
        exported(stats, text)
    finally:
        daemon.stop()


def test_amqp_and_zeromq_broker_numbers_are_declared(tmp_path):
    (tmp_path / "amqp").mkdir()
    (tmp_path / "zmq").mkdir()
    amqp = amqp_daemon(tmp_path / "amqp", "metrics-test")
    try:
        stats, text = daemon_numbers(amqp)
        assert {"received", "rejected", "outages"} <= set(stats["broker"])
        exported(stats, text)
    finally:
        amqp.stop()
    zmq = Daemon(tmp_path / "zmq", "--broker=zmq", f"--zmq-bind=tcp://127.0.0.1:{free_port()}")
    try:
        stats, text = daemon_numbers(zmq)
        assert stats["broker"]["name"] == "zmq"
        exported(stats, text)
    finally:
        zmq.stop()


def test_the_manual_lists_every_declared_number():
    """docs/reference/metrics.rst is built from the declaration (the site's build, in
    tests/test_docs.py, renders it); the table lists each metric."""
    from tests.manual import page
    assert ".. cyclone-sse-metrics::" in page("reference/metrics")
    table = render_table()
    assert all(f"``{m.path}``" in table for m in METRICS)


def test_the_dashboard_lists_every_declared_count_and_gauge():
    listed = {m["path"] for m in __import__("json").loads(
        METRICS_EVENT.decode().split("data: ", 1)[1])}
    assert listed == {m.path for m in METRICS if m.kind in (COUNTER, GAUGE) and not m.label}
    page = (ROOT / "media" / "dashboard.html").read_text()
    assert 'addEventListener("metrics"' in page and 'id="numbers"' in page


def test_each_declaration_is_complete_and_named_once():
    assert len(BY_PATH) == len(METRICS)
    names = [m.exported_name for m in METRICS if m.kind != INFO]
    assert len(set(names)) == len(names)
    for metric in METRICS:
        assert metric.kind in (COUNTER, GAUGE, HISTOGRAM, INFO), metric
        assert metric.help.endswith((".", ")")) and len(metric.help) > 10, metric
        assert re.fullmatch(r"cyclone_sse_[a-z_]+", metric.exported_name), metric
