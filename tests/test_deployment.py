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
import sys
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


def listening_port(proc: subprocess.Popen[bytes]) -> int:
    """The port a twistd started by a test says it listens on."""
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(rb"starting on (\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("the daemon did not start")


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
        # it answers (so the reactor runs, with its signal handlers), then is stopped
        client = SSEClient(listening_port(proc), "channels=a")
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


def test_the_systemd_unit_is_sandboxed_as_systemd_analyze_rates_it():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        assert os.environ.get("CI") != "true", "CI must have systemd-analyze"
        pytest.skip("no systemd-analyze")
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                             str(ROOT / "extras/systemd/cyclone-sse.service")],
                            capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert score is not None, result.stdout + result.stderr
    assert float(score.group(1)) <= 4.0 and score.group(2) == "OK", score.group(0)
    from tests.manual import manual_text
    assert f'rates it {score.group(1)} "OK"' in manual_text()  # the manual says what it is


def test_the_readmes_plain_pip_install_runs_the_daemon(tmp_path):
    """The manual's block for installing without uv (docs/howto/production.rst), run as
    written in a new virtual environment (``python3`` its interpreter, the tree copied so
    ``-e .`` builds nothing into it), then the daemon it installed started."""
    from tests.manual import page
    block = page("howto/production").split(
        "with plain pip, install cyclone\nwithout its dependencies::\n\n", 1)[1].split(
        "\n\n", 1)[0]
    lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    assert lines[-1] == "twistd -n cyclone-sse"
    import tomllib
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.split(r"[\[<>=]", d)[0].lower() for d in declared} - {"cyclone"}
    listed = {re.split(r"[\[<>=]", word.strip('"'))[0].lower()
              for word in shlex.split(lines[0])[4:]}
    assert listed == wanted  # every runtime dependency but cyclone
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".venv", ".git", "node_modules", "__pycache__", "*.egg-info", "build", ".mypy_cache",
        ".ruff_cache", ".pytest_cache"))
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    for line in lines[:-1]:
        subprocess.run(line.replace("python3", str(venv / "bin/python3"), 1), shell=True,
                       cwd=tree, env=env, check=True, timeout=600, capture_output=True)
    (tmp_path / "run").mkdir()
    proc = subprocess.Popen([str(venv / "bin/twistd"), "-n", "--pidfile=", "cyclone-sse",
                             "--port=0"], cwd=tmp_path / "run", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = SSEClient(listening_port(proc), "channels=a")
        assert client.status == 200
        client.close()
    finally:
        proc.terminate()
        proc.wait(DEADLINE)
