"""The latency benchmark the README shows runs as written: its C client builds with
gcc and measures a small load against a real daemon, over SSE and over WebSocket, and
against Node's ``ws`` (npm), the WebSocket server the README compares with."""

import re
import shutil
import subprocess
import sys

import pytest

from tests.daemon import ROOT
from tests.test_jquery import node_modules  # noqa: F401  (the npm clients, installed)


def rows(*servers):
    """The benchmark's table rows for a small load on ``servers``, by server name."""
    if shutil.which("gcc") is None or shutil.which("taskset") is None:
        pytest.fail("gcc and taskset are needed by extras/bench/latency.py")
    done = subprocess.run(
        [sys.executable, str(ROOT / "extras" / "bench" / "latency.py"), "--sizes", "20",
         "--events", "5", "--rate", "50", "--servers", *servers],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| server | N | connect s | deliveries | complete % |")
    # | server | N | connect s | deliveries | complete % | events/s | p50 | p99 | max
    # | CPU | RSS |
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in lines[2:]]
    assert [c[0] for c in cells] == list(servers)
    for row in cells:
        assert row[1:2] + row[3:5] == ["20", "100", "100.0"], row  # every delivery
        assert all(re.fullmatch(r"-?[\d.,]+", c) for c in row[5:]), row
        assert 0 < float(row[2]) < 30, row  # the connect time, measured
    return {c[0]: c for c in cells}


def test_the_latency_benchmark_measures_every_delivery_of_a_small_load():
    rows("daemon")


def test_the_websocket_latency_is_measured_against_node_ws(node_modules):  # noqa: F811
    rows("daemon-ws", "node-ws")
