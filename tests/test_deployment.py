"""The deployment files in extras/, used for real: Debian's nginx in front of the daemon
with extras/nginx/cyclone-sse.conf, and the command and stop signal of
extras/systemd/cyclone-sse.service."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from tests.daemon import DEADLINE, ROOT, TWISTD, Daemon, SSEClient
from tests.services import free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)


@pytest.fixture
def nginx(tmp_path):
    """Start nginx with the shipped site, pointed at a port the test names."""
    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's nginx is not installed (.ci/run installs it)")
        pytest.skip("Debian's nginx is not installed")
    started = []

    def start(daemon_port: int) -> int:
        port = free_port()
        site = (ROOT / "extras/nginx/cyclone-sse.conf").read_text()
        site = site.replace("127.0.0.1:8888", f"127.0.0.1:{daemon_port}")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        (tmp_path / "site.conf").write_text(site)
        for folder in ("body", "proxy", "logs"):
            (tmp_path / folder).mkdir(exist_ok=True)
            os.chmod(tmp_path / folder, 0o777)
        (tmp_path / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/proxy;
    uwsgi_temp_path {tmp_path}/proxy;
    scgi_temp_path {tmp_path}/proxy;
    include {tmp_path}/site.conf;
}}
""")
        proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(proc)
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:  # nginx says nothing when ready: try its port
            try:
                SSEClient(port, "channels=x").close()  # a 404 would also do
                return port
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read().decode()) from None
                time.sleep(0.05)
        raise AssertionError("nginx did not start")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(DEADLINE)


def test_streams_pass_through_the_shipped_nginx_site_unbuffered(tmp_path, nginx):
    internal = free_port()
    daemon = Daemon(tmp_path, f"--internal-port={internal}")
    try:
        port = nginx(daemon.port)
        client = SSEClient(port, "channels=news", path="/sse/")  # proxied to /?channels=

        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        daemon.port = internal
        assert daemon.publish_form("channel=news&message=first")[0] == 200
        first = client.events(1)[0]  # arrives at once: nothing buffered it
        assert first["data"] == "first"
        client.close()
        assert daemon.publish_form("channel=news&message=while+away")[0] == 200
        again = SSEClient(port, "channels=news", {"Last-Event-Id": first["id"]}, path="/sse/")
        assert again.events(1)[0]["data"] == "while away"  # resumed through nginx
        again.close()
        # publishing is not reachable through the public site
        status = _status_through(port, "POST /sse/publish")
        assert status == 404
    finally:
        daemon.stop()


def _status_through(port, request_line):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        return int(sock.recv(4096).split(b" ")[1])


def test_the_systemd_units_command_runs_and_its_stop_signal_stops_it(tmp_path):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "extras/systemd/cyclone-sse.service")
    service = unit["Service"]
    assert int(service["LimitNOFILE"]) >= 65536 and service["KillSignal"] == "SIGTERM"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/.venv/bin/twistd") and "--nodaemon" in command
    conf = tmp_path / "cyclone-sse.conf"
    conf.write_text("--port=0\n")
    command[0] = TWISTD
    command[command.index("/etc/cyclone-sse.conf")] = str(conf)
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(rb"starting on (\d+)", line)
            if found:
                break
        # it answers (so the reactor runs, with its signal handlers), then is stopped
        client = SSEClient(int(found.group(1)), "channels=a")
        assert client.status == 200
        proc.send_signal(getattr(signal, service["KillSignal"]))
        client.wait_closed()  # its stream is closed for it, politely
        # twistd re-raises the signal after a clean shutdown; systemd counts an exit
        # by SIGTERM as clean
        assert proc.wait(float(service["TimeoutStopSec"])) in (0, -signal.SIGTERM)
        rest = proc.stdout.read().decode()
        assert "closing 1 open connections" in rest and "Main loop terminated." in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
