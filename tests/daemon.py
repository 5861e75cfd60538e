"""A real ``twistd -n cyclone-sse`` subprocess and plain-socket clients for it."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cyclone_sse.event import parse_stream

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
#: Upper bound for anything a test waits for; reaching it is a failure, not a pause.
DEADLINE = 20.0


def readme_redis_urls(kind: str) -> list[str]:
    """The manual's ``--redis-url=`` examples of ``kind`` (``+sentinel``, ``+cluster``),
    as written."""
    from tests.manual import manual_text
    return [line.split("=", 1)[1].split()[0] for line in manual_text().splitlines()
            if line.strip().startswith("--redis-url=redis") and kind in line]


class Daemon:
    """Starts the daemon with a config file and finds its ports in its log."""

    def __init__(self, tmp_path: Path, *options: str, ports: int = 1,
                 open_files: int | None = None) -> None:
        conf = tmp_path / "cyclone-sse.conf"
        conf.write_text("# written by the test\n--port=0\n" + "\n".join(options) + "\n")
        self.log: list[str] = []
        self._pending = b""  # read from the pipe, not yet split into lines
        def limit_open_files() -> None:  # in the child, before twistd starts
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "cyclone-sse", "--config", str(conf)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=limit_open_files if open_files else None)
        try:
            self.ports = [int(m.group(1)) for m in self.wait_for(r"starting on (\d+)", ports)]
        except BaseException:
            self.proc.kill()  # never leave a daemon behind a failed test
            self.proc.wait(DEADLINE)
            raise
        self.port = self.ports[0]

    def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """Read the daemon's log until ``pattern`` has matched ``count`` lines."""
        found: list[re.Match[str]] = []
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        end = time.monotonic() + DEADLINE
        try:
            while len(found) < count:
                if b"\n" not in self._pending:
                    if not selector.select(max(0.0, end - time.monotonic())):
                        raise AssertionError(f"daemon never logged {pattern!r}:\n"
                                             + "".join(self.log))
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise AssertionError("daemon exited:\n" + "".join(self.log))
                    self._pending += chunk
                    continue
                raw, _, self._pending = self._pending.partition(b"\n")
                line = raw.decode(errors="replace") + "\n"
                self.log.append(line)
                match = re.search(pattern, line)
                if match:
                    found.append(match)
        finally:
            selector.close()
        return found

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data) if data else None

    def publish_form(self, body: str) -> tuple[int, Any]:
        return self.request("POST", "/publish", body,
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def stop(self, signalled: bool = False) -> int:
        """SIGTERM (unless the test already sent it) and wait for the exit code."""
        if self.proc.poll() is None and not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stdout is not None
        self.log.append((self._pending + self.proc.stdout.read()).decode(errors="replace"))
        self.proc.stdout.close()
        return code


class SSEClient:
    """A raw-socket EventSource: sends the GET, then parses the stream as it comes."""

    def __init__(self, port: int, query: str, headers: dict[str, str] | None = None,
                 tls: bool = False, rcvbuf: int | None = None, path: str = "/") -> None:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", port))
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        self.sock = sock
        lines = [f"GET {path}?{query} HTTP/1.1", "Host: localhost", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.read_head()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def read_head(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _complete(self) -> str:
        text = self.buffer.decode("utf-8", errors="strict") if self.buffer.endswith(b"\n\n") else \
            self.buffer[:self.buffer.rfind(b"\n\n") + 2].decode()
        return text

    def events(self, count: int) -> list[dict[str, str]]:
        """Wait until ``count`` events (not counting retry blocks and the
        ``stream-open`` resume point) arrived."""
        while True:
            parsed = [e for e in parse_stream(self._complete())
                      if "data" in e and e["event"] != "stream-open"]
            if len(parsed) >= count:
                return parsed
            self.buffer += self._recv()

    def last_id(self) -> str:
        ids = re.findall(r"^id: (.*)$", self._complete(), re.M)
        return ids[-1]

    def wait_closed(self) -> bytes:
        """Read until the server closes the stream; returns what came meanwhile."""
        rest = b""
        try:
            while True:
                rest += self._recv()
        except (EOFError, ConnectionResetError):
            return rest

    def close(self) -> None:
        self.sock.close()
