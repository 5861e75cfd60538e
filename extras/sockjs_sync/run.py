"""The Django + ZeroMQ + SockJS article's system in one command: a ZeroMQ FORWARDER
(pyzmq's ``zmq.proxy``, XSUB in, XPUB out), the cyclone-sse daemon reading it
(``--broker=zmq``) and serving SockJS on ``/echo`` (``--sockjs-channels=sync``), and
the Django site whose view publishes each change through the FORWARDER::

    uv run python extras/sockjs_sync/run.py

Open http://127.0.0.1:8000/ in two browsers and change the notes in one: both show it
at once.  Ctrl-C stops everything.  ``--port`` (Django, 8000), ``--daemon-port``
(8888) and ``--zmq-port`` (5559: XSUB; the next one is XPUB) move them.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent


def forwarder(xsub: str, xpub: str) -> None:
    """The article's FORWARDER: what publishers send to ``xsub`` goes out on ``xpub``."""
    import zmq
    context = zmq.Context.instance()
    front, back = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
    front.bind(xsub)
    back.bind(xpub)
    zmq.proxy(front, back)


def wait_http(url: str, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"{url} did not come up") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--daemon-port", type=int, default=8888)
    parser.add_argument("--zmq-port", type=int, default=5559)
    args = parser.parse_args()
    xsub = f"tcp://127.0.0.1:{args.zmq_port}"
    xpub = f"tcp://127.0.0.1:{args.zmq_port + 1}"
    threading.Thread(target=forwarder, args=(xsub, xpub), daemon=True).start()
    daemon_url = f"http://127.0.0.1:{args.daemon_port}"
    processes = [
        subprocess.Popen([str(BIN / "twistd"), "-n", "--pidfile=", "cyclone-sse",
                          f"--port={args.daemon_port}", "--broker=zmq",
                          f"--zmq-connect={xpub}", "--sockjs-prefix=/echo",
                          "--sockjs-channels=sync"], cwd=ROOT),
        subprocess.Popen([sys.executable, str(HERE / "site.py"), str(args.port),
                          daemon_url, xsub], cwd=HERE),
    ]
    try:
        wait_http(f"{daemon_url}/healthz")
        wait_http(f"http://127.0.0.1:{args.port}/")
        print(f"ready: open http://127.0.0.1:{args.port}/ in two browsers", flush=True)
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


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    main()
