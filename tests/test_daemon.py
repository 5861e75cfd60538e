"""The real daemon: ``twistd -n cyclone-sse`` as a subprocess, spoken to over sockets."""

import datetime
import json
import signal
import socket
import subprocess

import pytest

from tests.daemon import DEADLINE, ROOT, TWISTD, Daemon, SSEClient


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, "--heartbeat=30")
    yield d
    d.stop()


def test_readme_flow_subscribe_publish_with_curl_format_and_stats(daemon):
    client = SSEClient(daemon.port, "channels=base&channels=extras")
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    status, answer = daemon.publish_form("message=%5B123%2C+124%5D&channel=base")
    assert status == 200 and answer["subscribers"] == 1
    status, _ = daemon.request("POST", "/publish", json.dumps(
        {"channel": "extras", "data": "line1\r\nline2", "event": "note"}),
        {"Content-Type": "application/json"})
    assert status == 200
    events = client.events(2)
    assert [(e["event"], e["data"]) for e in events] == [
        ("message", "[123, 124]"), ("note", "line1\nline2")]
    status, stats = daemon.request("GET", "/stats")
    assert stats["connections"] == 1 and stats["deliveries"] == 2
    assert ["base", 1] in stats["subscriptions"]
    client.close()


def test_reconnect_replays_what_was_missed(daemon):
    client = SSEClient(daemon.port, "channels=a,b")
    daemon.publish_form("message=first&channel=a")
    client.events(1)
    seen = client.last_id()
    client.close()
    for n, channel in enumerate("babab"):
        daemon.publish_form(f"message=m{n}&channel={channel}")
    again = SSEClient(daemon.port, "channels=a,b", {"Last-Event-Id": seen})
    daemon.publish_form("message=live&channel=a")
    assert [e["data"] for e in again.events(6)] == ["m0", "m1", "m2", "m3", "m4", "live"]
    again.close()


def test_long_poll_over_a_real_socket(daemon):
    status, first = daemon.request("GET", "/?channels=a&transport=poll&lastEventId=nope")
    assert status == 200 and first["gap"] == "unknown"
    daemon.publish_form("message=x&channel=a")
    status, body = daemon.request("GET", "/?channels=a", headers={
        "X-Requested-With": "XMLHttpRequest", "Accept": "application/json",
        "Last-Event-Id": first["lastEventId"]})
    assert [e["data"] for e in body["events"]] == ["x"]


def test_bad_requests_get_clear_errors_and_the_daemon_keeps_serving(daemon):
    client = SSEClient(daemon.port, "channels=a")
    assert daemon.request("GET", "/")[0] == 400
    status, body = daemon.request("POST", "/publish", b"\xff\xfe",
                                  {"Content-Type": "application/json"})
    assert status == 400 and "UTF-8" in body["error"]
    raw = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
    raw.sendall(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    assert b" 413 " in raw.recv(4096).split(b"\r\n")[0]
    raw.close()
    vanished = SSEClient(daemon.port, "channels=a")
    vanished.sock.close()
    daemon.publish_form("message=still+here&channel=a")
    assert client.events(1)[0]["data"] == "still here"


def test_a_client_that_stops_reading_is_cut_off_others_are_not(tmp_path):
    daemon = Daemon(tmp_path, "--max-pending=65536", "--heartbeat=0")
    try:
        slow = SSEClient(daemon.port, "channels=a", rcvbuf=4096)
        fast = SSEClient(daemon.port, "channels=a")
        payload = "x" * 60000
        received = 0
        for n in range(200):  # 12 MB in all: far more than socket buffers hold
            daemon.publish_form(f"message={payload}{n}&channel=a")
            received = len(fast.events(n + 1))
            if daemon.request("GET", "/stats")[1]["slow_disconnects"]:
                break
        stats = daemon.request("GET", "/stats")[1]
        assert stats["slow_disconnects"] == 1 and stats["connections"] == 1
        assert received == n + 1
        slow.wait_closed()
    finally:
        daemon.stop()


def test_sigterm_closes_streams_and_exits_cleanly(tmp_path):
    daemon = Daemon(tmp_path)
    clients = [SSEClient(daemon.port, "channels=a") for _ in range(3)]
    daemon.proc.send_signal(signal.SIGTERM)
    for client in clients:
        client.wait_closed()
    # twistd re-raises the signal after a clean shutdown, to report how it ended.
    assert daemon.stop(signalled=True) in (0, -signal.SIGTERM)
    assert "closing 3 open connections" in "".join(daemon.log)
    assert "Main loop terminated." in "".join(daemon.log)


def test_unknown_option_stops_start_up_naming_it():
    done = subprocess.run([TWISTD, "-n", "--pidfile=", "cyclone-sse", "--colour=blue"],
                          cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode != 0
    assert "--colour" in done.stdout.strip().splitlines()[-1]


def test_custom_app_from_extras(tmp_path):
    daemon = Daemon(tmp_path, "--app=extras.custom_app.App", "--http-secret=k")
    try:
        assert daemon.request("GET", "/health") == (200, {"ok": True, "connections": 0})
        assert daemon.request("GET", "/?channels=private:x")[0] == 403
    finally:
        daemon.stop()


def make_certificate(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_alongside_plain_http_sharing_one_registry(tmp_path):
    cert, key = make_certificate(tmp_path)
    daemon = Daemon(tmp_path, "--use-ssl", "--ssl-port=0", f"--ssl-cert={cert}",
                    f"--ssl-key={key}", ports=2)
    try:
        secure = SSEClient(daemon.ports[1], "channels=a", tls=True)
        assert secure.status == 200
        daemon.publish_form("message=over+tls&channel=a")
        assert secure.events(1)[0]["data"] == "over tls"
    finally:
        daemon.stop()


def test_graphite_export_sends_carbon_lines(tmp_path):
    carbon = socket.create_server(("127.0.0.1", 0))
    carbon.settimeout(DEADLINE)
    port = carbon.getsockname()[1]
    daemon = Daemon(tmp_path, "--export=graphite", f"--export-port={port}",
                    "--export-interval=0.2", "--export-path=test.sse")
    try:
        conn, _ = carbon.accept()
        conn.settimeout(DEADLINE)
        data = b""
        while b"test.sse.connections " not in data:
            data += conn.recv(4096)
        line = next(ln for ln in data.decode().splitlines()
                    if ln.startswith("test.sse.connections "))
        _, value, stamp = line.split()
        assert value == "0" and int(stamp) > 1_600_000_000
        conn.close()
    finally:
        daemon.stop()
        carbon.close()


def test_tls_has_a_floor_ciphers_and_optional_hsts(tmp_path):
    import http.client
    import ssl
    cert, key = make_certificate(tmp_path)
    daemon = Daemon(tmp_path, "--use-ssl", "--ssl-port=0", f"--ssl-cert={cert}",
                    f"--ssl-key={key}", "--ssl-min-version=1.3", "--hsts=31536000", ports=2)

    def client(maximum):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = maximum
        return context

    try:
        tls12 = http.client.HTTPSConnection("127.0.0.1", daemon.ports[1], timeout=DEADLINE,
                                            context=client(ssl.TLSVersion.TLSv1_2))
        with pytest.raises(ssl.SSLError):
            tls12.request("GET", "/healthz")  # below the floor: no handshake
        tls13 = http.client.HTTPSConnection("127.0.0.1", daemon.ports[1], timeout=DEADLINE,
                                            context=client(ssl.TLSVersion.TLSv1_3))
        tls13.request("GET", "/healthz")
        answer = tls13.getresponse()
        assert answer.status == 200
        assert answer.getheader("Strict-Transport-Security") == "max-age=31536000"
        plain = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
        plain.request("GET", "/healthz")
        assert plain.getresponse().getheader("Strict-Transport-Security") is None
    finally:
        daemon.stop()


def test_json_log_lines_on_request(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("--port=0\n")
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "--logger=cyclone_sse.logs.json_lines",
                             "cyclone-sse", "--config", str(conf), "--access-log=1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        records = []
        for line in proc.stdout:
            records.append(json.loads(line))  # every line is one JSON object
            if "starting on" in records[-1]["message"]:
                break
        port = int(records[-1]["message"].rsplit(" ", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(b"GET /stats?token=hidden HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            while sock.recv(65536):
                pass
        proc.send_signal(signal.SIGTERM)
        rest = [json.loads(line) for line in proc.stdout.read().decode().splitlines()]
        proc.wait(DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    access = [r for r in rest if "GET /stats" in r["message"]]
    assert access and access[0]["level"] == "info" and access[0]["time"].endswith("+00:00")
    assert "token=***" in access[0]["message"] and "hidden" not in json.dumps(rest)


def test_graphite_export_over_udp(tmp_path):
    carbon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carbon.bind(("127.0.0.1", 0))
    carbon.settimeout(DEADLINE)
    daemon = Daemon(tmp_path, "--export=graphite", "--export-protocol=udp",
                    f"--export-port={carbon.getsockname()[1]}", "--export-interval=0.2",
                    "--export-path=udp.sse")
    try:
        lines: list[str] = []
        while not any(ln.startswith("udp.sse.connections ") for ln in lines):
            datagram = carbon.recv(65536)
            assert len(datagram) <= 1400 and datagram.endswith(b"\n")  # whole lines
            lines += datagram.decode().splitlines()
        line = next(ln for ln in lines if ln.startswith("udp.sse.connections "))
        assert line.split()[1] == "0"
    finally:
        daemon.stop()
        carbon.close()
