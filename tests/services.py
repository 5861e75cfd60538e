"""Real Redis and RabbitMQ for the broker tests: found on this machine, never faked.

Outside CI a test skips when its server is absent; with ``CI=true`` it fails instead
(``.ci/run`` starts both).  ``TcpCut`` sits between a daemon and a server so a test can
cut the daemon off while the server (and other publishers) carry on.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from extras.publisher import RedisPublisher
from tests.daemon import DEADLINE

REDIS = ("127.0.0.1", 6379)
AMQP = ("127.0.0.1", 5672)


def reachable(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
        return True
    except OSError:
        return False


def require(address: tuple[str, int], name: str) -> None:
    if not reachable(address):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not running at {address[0]}:{address[1]} (CI never skips)")
        pytest.skip(f"{name} is not running at {address[0]}:{address[1]}")


def delete_prefix(prefix: str) -> None:
    """Remove every key a test wrote under its prefix."""
    client = RedisPublisher(*REDIS)
    keys = client.command("KEYS", prefix + ":*") or []
    if keys:
        client.command("DEL", *keys)
    client.close()


@pytest.fixture
def redis_prefix():
    """A key prefix of its own for each test, removed afterwards."""
    require(REDIS, "Redis")
    prefix = "test-" + secrets.token_hex(4)
    yield prefix
    delete_prefix(prefix)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpCut:
    """A TCP relay to ``target`` whose connections the test can cut and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=DEADLINE)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class PrivateRedis:
    """A redis-server of the test's own, which it may kill and start again."""

    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.options = options
        self.binary = _binary("redis-server")
        self.dir = tmp_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), *self.options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        said = []
        for line in self.proc.stdout:  # its own word that it is ready
            said.append(line)
            if b"Ready to accept connections" in line:
                break
        else:
            raise AssertionError("private redis-server did not start:\n" +
                                 b"".join(said[-10:]).decode(errors="replace"))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(DEADLINE)
            self.proc = None


def _binary(name: str, *candidates: str) -> str:
    """A server program, or a skip (a failure in CI) saying it is not installed."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (CI never skips)")
        pytest.skip(f"{name} is not installed")
    return found


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own, listening only for AMQP over TLS on
    ``self.port`` with the certificates of ``private_ca(folder)``, requiring a client
    certificate (a separate node: the shared broker has no TLS listener); or, with
    ``tls=False``, for plain AMQP (a node a test may kill and ``start`` again, its data
    kept in ``folder``)."""

    def __init__(self, folder: Path, tls: bool = True) -> None:
        import glob
        # Debian's rabbitmq-server wrapper re-runs itself as the rabbitmq user, who
        # cannot read the test's files: the script it wraps runs as anyone.
        self.binary = _binary("rabbitmq-server",
                              *sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/"
                                                "sbin/rabbitmq-server")))
        self.port = free_port()
        (folder / "rabbitmq.conf").write_text("\n".join([
            "listeners.tcp = none",
            f"listeners.ssl.default = {self.port}",
            f"ssl_options.cacertfile = {folder / 'ca.crt'}",
            f"ssl_options.certfile = {folder / 'server.crt'}",
            f"ssl_options.keyfile = {folder / 'server.key'}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true", ""]) if tls else
            f"listeners.tcp.default = {self.port}\n")
        (folder / "enabled_plugins").write_text("[].\n")
        env = {**os.environ,
               "RABBITMQ_NODENAME": f"cyclone-test-{secrets.token_hex(4)}@localhost",
               "RABBITMQ_DIST_PORT": str(free_port()),
               "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
               "RABBITMQ_LOG_BASE": str(folder / "log"),
               "RABBITMQ_LOGS": "-",
               "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
               "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid")}
        self.env = env
        self.start()

    def start(self) -> None:
        """Start the node (again: the same name, data and port)."""
        self.proc = subprocess.Popen([self.binary], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        assert self.proc.stdout is not None
        self.log: list[bytes] = []
        for line in self.proc.stdout:  # its own word that it is ready
            self.log.append(line)
            if b"Server startup complete" in line:
                break
        else:
            raise AssertionError("private rabbitmq did not start:\n"
                                 + b"".join(self.log).decode(errors="replace"))
        threading.Thread(target=self.log.extend, args=(self.proc.stdout,), daemon=True).start()

    def stop(self, graceful: bool = False) -> None:
        """Kill the node (SIGKILL), or stop it as its service does (SIGTERM)."""
        import signal
        try:  # (the script and the Erlang VM)
            os.killpg(self.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(DEADLINE)


def amqp_publish(exchange: str, routing_key: str, data: str | bytes, event: str | None = None,
                 port: int = AMQP[1], exchange_type: str | None = None) -> None:
    """Publish one message with a real AMQP client, in a process of its own (txamqp
    runs on a reactor, which a test process cannot restart)."""
    script = (
        "import sys\n"
        "from cyclone_sse.links.amqp import AmqpAddress, publish_once\n"
        "data = sys.argv[4].encode('latin-1') if sys.argv[6] == 'raw' else sys.argv[4]\n"
        "publish_once(AmqpAddress('127.0.0.1', int(sys.argv[1])), sys.argv[2], sys.argv[3],\n"
        "             data, sys.argv[5] or None)\n")
    raw = isinstance(data, bytes)
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    subprocess.run([sys.executable, "-c", script, str(port), exchange, routing_key, text,
                    event or "", "raw" if raw else "text"],
                   check=True, timeout=DEADLINE, capture_output=True)


def require_spec() -> None:
    """txamqp needs Debian's AMQP 0-9-1 spec (``.ci/run`` installs amqp-specs)."""
    from cyclone_sse.links.amqp import SPEC_CANDIDATES
    if not any(os.path.isfile(p) for p in SPEC_CANDIDATES):
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's amqp-specs is not installed (CI never skips)")
        pytest.skip("Debian's amqp-specs is not installed")


@pytest.fixture
def amqp_exchange():
    """An exchange name of its own for each test."""
    require(AMQP, "RabbitMQ")
    require_spec()
    return "test-" + secrets.token_hex(4)


def private_ca(folder: Path) -> None:
    """A CA of the test's own (``ca.crt``/``.key``); a server certificate for localhost
    (``server.*``) and a client one (``client.*``), written to ``folder``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def issue(subject, key, issuer, issuer_key, ca=False, dns=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(dns)]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem, cert, key):
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(name("test CA"), ca_key, name("test CA"), ca_key, ca=True)
    write("ca", ca, ca_key)
    for stem, dns in (("server", "localhost"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, issue(name(stem), key, name("test CA"), ca_key, dns=dns), key)


class SentinelSet:
    """A primary, one replica and three Sentinels (quorum 2) on loopback, each a
    process of the test's own: ``redis-server --sentinel`` is Debian's redis-sentinel."""

    MASTER = "cyclone"

    def __init__(self, tmp_path: Path) -> None:
        for folder in ("primary", "replica"):
            (tmp_path / folder).mkdir()
        # (no 5 s wait before the first full sync, nor on a promoted replica's)
        quick = ("--repl-diskless-sync-delay", "0")
        self.primary = PrivateRedis(tmp_path / "primary", *quick)
        self.replica = PrivateRedis(tmp_path / "replica", *quick, "--replicaof",
                                    "127.0.0.1", str(self.primary.port))
        end = time.monotonic() + 30
        while b"master_link_status:up" not in self.command(self.replica.port, "INFO",
                                                           "replication"):
            assert time.monotonic() < end, "the replica never synchronised"
            time.sleep(0.05)
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.logs: list[list[bytes]] = []
        for n in range(3):
            folder = tmp_path / f"sentinel{n}"
            folder.mkdir()
            port = free_port()
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 4000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n")
            proc = subprocess.Popen([self.primary.binary, str(conf), "--sentinel"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.sentinels.append(proc)
            self.ports.append(port)
            self.logs.append([])
            threading.Thread(target=self._read, args=(proc, self.logs[-1]),
                             daemon=True).start()
        # every Sentinel knows the replica: a failover can choose it
        self.wait_log(b"+slave slave", each=True)

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], lines: list[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    def wait_log(self, text: bytes, each: bool = False, since: int = 0) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            found = [any(text in line for line in log[since:]) for log in self.logs]
            if all(found) if each else any(found):
                return
            time.sleep(0.05)
        raise AssertionError(f"the Sentinels never logged {text!r}")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{self.MASTER}"

    def ask(self, *command: str) -> bytes:
        """One command to the first Sentinel; its raw reply."""
        return self.command(self.ports[0], *command)

    @staticmethod
    def command(port: int, *command: str) -> bytes:
        """One command to the server on ``port``; its raw reply (one read)."""
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
            s.sendall((f"*{len(command)}\r\n" + "".join(
                f"${len(c)}\r\n{c}\r\n" for c in command)).encode())
            return s.recv(65536)

    def primary_port(self) -> int:
        reply = self.ask("SENTINEL", "get-master-addr-by-name", self.MASTER)
        return int(reply.split(b"\r\n")[4])

    def wait_switch(self, old: int) -> int:
        """Until a Sentinel logged ``+switch-master`` and the one ``ask`` reads names a
        primary other than ``old`` (the others learn of a switch a moment after the
        leader logs it); the new primary's port."""
        self.wait_log(b"+switch-master")
        end = time.monotonic() + 10
        while (port := self.primary_port()) == old:
            assert time.monotonic() < end, "the Sentinels logged a switch, not the new primary"
            time.sleep(0.05)
        return port

    def close(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait(DEADLINE)
        self.replica.kill()
        self.primary.kill()


class ClusterSet:
    """A Redis Cluster of three primaries, each with one replica, on loopback: six
    processes of the test's own, joined by ``redis-cli --cluster create``."""

    def __init__(self, tmp_path: Path, primaries: int = 3) -> None:
        self.nodes: list[PrivateRedis] = []
        for n in range(primaries * 2):
            folder = tmp_path / f"node{n}"
            folder.mkdir()
            bus = free_port()
            self.nodes.append(PrivateRedis(
                folder, "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", str(folder / "nodes.conf"),
                "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0",
                "--cluster-replica-validity-factor", "0"))
        created = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=60)
        assert created.returncode == 0, created.stdout.decode(errors="replace")
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and its replicas are in sync."""
        end = time.monotonic() + timeout
        while True:
            states = [SentinelSet.command(n.port, "CLUSTER", "INFO") for n in self.nodes
                      if n.proc is not None]
            if all(b"cluster_state:ok" in s for s in states) and self._synced():
                return
            assert time.monotonic() < end, "the cluster never became ok"
            time.sleep(0.1)

    def _synced(self) -> bool:
        for node in self.nodes:
            if node.proc is None:
                continue
            info = SentinelSet.command(node.port, "INFO", "replication")
            if b"role:slave" in info and b"master_link_status:up" not in info:
                return False
        return True

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def command(self, port: int, *command: str) -> bytes:
        return SentinelSet.command(port, *command)

    def owner_of(self, slot: int) -> PrivateRedis:
        """The node that owns ``slot`` now."""
        for start, end, port in self._slots():
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node owns slot {slot}")

    def _slots(self) -> list[tuple[int, int, int]]:
        out = self.cli(self.live()[0].port, "--json", "CLUSTER", "SLOTS")
        return [(e[0], e[1], e[2][1]) for e in json.loads(out)]

    def live(self) -> list[PrivateRedis]:
        return [n for n in self.nodes if n.proc is not None]

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run([_binary("redis-cli"), "-p", str(port), *args],
                              capture_output=True, timeout=60)
        return done.stdout.decode(errors="replace")

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


class PrivatePushpin:
    """A Pushpin of the test's own (Debian's package), the reference a GRIP proxy is
    held to: clients on ``self.port``, its publish API on ``self.control_port``, every
    request routed to the backend on ``backend_port`` and signed with ``key``."""

    def __init__(self, folder: Path, backend_port: int, key: str,
                 over_http: bool = False) -> None:
        binary = _binary("pushpin", "/usr/bin/pushpin")
        self.port, self.control_port = free_port(), free_port()
        for sub in ("run", "log"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # (over_http: its WebSocket clients reach the backend by WebSocket-over-HTTP)
        (folder / "routes").write_text(f"* 127.0.0.1:{backend_port}"
                                       f"{',over_http' if over_http else ''}\n")
        replaced = {"rundir": folder / "run", "logdir": folder / "log",
                    "ipc_prefix": f"pp{self.port}-", "sig_key": key,
                    "routesfile": folder / "routes",
                    "push_in_http_port": self.control_port,
                    "push_in_spec": f"tcp://127.0.0.1:{free_port()}",
                    "push_in_sub_specs": f"tcp://127.0.0.1:{free_port()}",
                    "command_spec": f"tcp://127.0.0.1:{free_port()}",
                    "stats_spec": f"ipc://{folder}/run/stats"}
        # its requests to the backend go through zurl (Debian's, a program of its own):
        # one for this Pushpin, on sockets in its folder
        zurl = {"in_spec": f"ipc://{folder}/run/zurl-in",
                "in_stream_spec": f"ipc://{folder}/run/zurl-in-stream",
                "out_spec": f"ipc://{folder}/run/zurl-out",
                "in_req_spec": f"ipc://{folder}/run/zurl-req", "deny": ""}
        lines = []
        for line in Path("/etc/pushpin/pushpin.conf").read_text().splitlines():
            name = line.partition("=")[0]
            lines.append(f"{name}={replaced[name]}" if name in replaced else line)
            if line.strip() == "[proxy]":
                lines += [f"zurl_out_specs={zurl['in_spec']}",
                          f"zurl_out_stream_specs={zurl['in_stream_spec']}",
                          f"zurl_in_specs={zurl['out_spec']}"]
        config = folder / "pushpin.conf"
        config.write_text("\n".join(lines) + "\n")
        zurl_lines = []
        for line in Path("/etc/zurl.conf").read_text().splitlines():
            name = line.partition("=")[0]
            zurl_lines.append(f"{name}={zurl[name]}" if name in zurl else line)
        (folder / "zurl.conf").write_text("\n".join(zurl_lines) + "\n")
        self.zurl = subprocess.Popen(
            [_binary("zurl", "/usr/bin/zurl"), f"--config={folder / 'zurl.conf'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            [binary, f"--config={config}", f"--port=127.0.0.1:{self.port}", "-m"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # (its runner starts three programs: stopped as one)
        assert self.proc.stdout is not None
        ready = {"[handler] started": False, "[proxy] started": False,
                 "[condure] started": False}
        for line in self.proc.stdout:
            for mark in ready:
                ready[mark] = ready[mark] or mark in line
            if all(ready.values()):
                break
        else:
            raise AssertionError("pushpin exited before it was ready")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # (drained)

    def stop(self) -> None:
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(DEADLINE)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(DEADLINE)
        self.zurl.terminate()
        self.zurl.wait(DEADLINE)
