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

SMALL = ["--sizes", "20", "--events", "5", "--rate", "50", "--rounds", "1"]


def rows(*servers, options=()):
    """The benchmark's table rows for a small load on ``servers``, by server name
    (``options`` given first: a later ``SMALL`` option overrides its value)."""
    if shutil.which("gcc") is None or shutil.which("taskset") is None:
        pytest.fail("gcc and taskset are needed by extras/bench/latency.py")
    done = subprocess.run(
        [sys.executable, str(ROOT / "extras" / "bench" / "latency.py"), *options, *SMALL,
         *(["--servers", *servers] if servers else [])],
        capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| server | N | connect s | deliveries | complete % |")
    # | server | N | connect s | deliveries | complete % | events/s | p50 | p99 | max
    # | CPU | RSS |
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in lines[2:]]
    assert not servers or [c[0] for c in cells] == list(servers)
    for row in cells:
        assert row[1:2] + row[3:5] == ["20", "100", "100.0"], row  # every delivery
        assert all(re.fullmatch(r"-?[\d.,]+", c) for c in row[5:]), row
        assert 0 < float(row[2]) < 30, row  # the connect time, measured
    return {c[0]: c for c in cells}


def test_the_latency_benchmark_measures_every_delivery_of_a_small_load():
    rows("daemon")


def test_the_websocket_latency_is_measured_against_node_ws(node_modules):  # noqa: F811
    rows("daemon-ws", "node-ws")


def test_the_readmes_latency_command_runs_as_written(node_modules):  # noqa: F811
    """The README's command, on a small load: nchan and Node's ws are started by the
    benchmark itself, beside the daemon over SSE and WebSocket."""
    from tests.manual import manual_text
    commands = re.findall(r"uv run python extras/bench/latency\.py([^\n]*)", manual_text())
    assert commands
    for command in commands:
        options = command.split("#")[0].split()
        servers = rows(options=options)
        named = []
        if "--servers" in options:
            for word in options[options.index("--servers") + 1:]:
                if word.startswith("--"):
                    break
                named.append(word)
        assert named and set(named) == set(servers), (named, servers)
