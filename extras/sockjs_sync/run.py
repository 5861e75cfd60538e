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
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from extras.supervise import stop_on_sigterm, supervise  # noqa: E402


def forwarder(xsub: str, xpub: str) -> None:
    """The article's FORWARDER: what publishers send to ``xsub`` goes out on ``xpub``."""
    import zmq
    context = zmq.Context.instance()
    front, back = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
    front.bind(xsub)
    back.bind(xpub)
    zmq.proxy(front, back)


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
    supervise(processes, [f"{daemon_url}/healthz", f"http://127.0.0.1:{args.port}/"],
              f"ready: open http://127.0.0.1:{args.port}/ in two browsers")


if __name__ == "__main__":
    stop_on_sigterm()
    main()
