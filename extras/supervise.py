"""What the one-command examples (extras/django_contacts, extras/sockjs_sync) share:
waiting for their parts to answer, and running them until Ctrl-C (or SIGTERM), then
stopping them all."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request


def wait_http(url: str, seconds: float = 30) -> None:
    """Until ``url`` answers (any status)."""
    end = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"{url} did not come up") from None
            time.sleep(0.2)


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM stops an example as Ctrl-C does (its parts stopped too)."""
    signal.signal(signal.SIGTERM, _interrupted)


def supervise(processes: list[subprocess.Popen[bytes]], urls: list[str], ready: str) -> None:
    """Wait until every url answers, print ``ready``, and run until a part stops or the
    user stops it (Ctrl-C, or SIGTERM after ``stop_on_sigterm``); then stop every part."""
    try:
        for url in urls:
            wait_http(url)
        print(ready, flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        raise SystemExit("a part stopped: see its output above")
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
