"""What the benchmarks read of a server process they start: its CPU time, and when it
listens."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """The process's (user, system) CPU seconds so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def wait_listening(port: int, what: str, seconds: float = 10) -> None:
    """Until 127.0.0.1:``port`` accepts a connection (RuntimeError after ``seconds``)."""
    end = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


class ServerProcess:
    """A server the benchmark started (``proc``, listening on ``port``): its CPU time
    and its end."""

    proc: subprocess.Popen[bytes]
    port: int

    def cpu_split(self) -> tuple[float, float]:
        """The server's (user, system) CPU seconds so far."""
        return cpu_split(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
