"""The latency benchmark the README shows runs as written: its C client builds with
gcc and measures a small load against a real daemon."""

import re
import shutil
import subprocess
import sys

import pytest

from tests.daemon import ROOT


def test_the_latency_benchmark_measures_every_delivery_of_a_small_load():
    if shutil.which("gcc") is None or shutil.which("taskset") is None:
        pytest.fail("gcc and taskset are needed by extras/bench/latency.py")
    done = subprocess.run(
        [sys.executable, str(ROOT / "extras" / "bench" / "latency.py"), "--sizes", "20",
         "--events", "5", "--rate", "50", "--servers", "daemon"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    row = done.stdout.strip().splitlines()[-1]
    # | daemon | 20 | 100 | 100.0 | events/s | p50 | p99 | max | CPU | RSS |
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["daemon", "20", "100", "100.0"], row
    assert all(re.fullmatch(r"-?[\d.,]+", c) for c in cells[4:]), row
