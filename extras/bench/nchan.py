"""nginx + nchan, driven like the daemon by extras/bench/requests.py (same client, same
loads, same CPU accounting), so both are measured in one run.

Needs Debian's ``nginx`` and ``libnginx-mod-nchan`` (``apt-get install
libnginx-mod-nchan``); one nginx process (no master), pinned to CPU 0.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from measured import ServerProcess, wait_listening

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")

CONFIG = """
load_module {module};
worker_processes 1;
master_process off;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log crit;
worker_rlimit_nofile 200000;
events {{ worker_connections 100000; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {folder}/body;
  {redis}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = / {{
      nchan_subscriber eventsource;
      nchan_channel_id $arg_channels;
      {redis_pass}
    }}
    location = /publish {{
      nchan_publisher;
      nchan_channel_id $arg_channel;
      nchan_message_buffer_length 1000;
      {redis_pass}
    }}
  }}
}}
"""


def available() -> bool:
    return shutil.which("nginx") is not None and MODULE.is_file()


class Nchan(ServerProcess):
    """An nginx + nchan process with the interface of run.Daemon (port, CPU, stop)."""

    def __init__(self, redis: bool = False) -> None:
        import os
        os.sched_setaffinity(0, {1})
        self.folder = Path(tempfile.mkdtemp(prefix="nchan-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        conf = self.folder / "nginx.conf"
        # with ``redis``: nchan's Redis store (messages and channels kept in Redis, as
        # cyclone-sse's Redis broker and history do)
        redis_conf = "upstream bench_redis { nchan_redis_server redis://127.0.0.1:6379; }" \
            if redis else ""
        conf.write_text(CONFIG.format(module=MODULE, folder=self.folder, port=self.port,
                                      redis=redis_conf,
                                      redis_pass="nchan_redis_pass bench_redis;" if redis
                                      else ""))
        self.proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", str(conf),
                                      "-p", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, "nginx")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.folder, ignore_errors=True)
