"""The tutorial (docs/tutorial/index.rst) runs block by block, as written, against real
daemons: each ``$`` command of a console block is run (``uv run X`` as the project's
``X``; ``twistd -n`` and ``curl -N`` in the background, as a reader's other terminals),
the lines under it are what it must print (``...``: anything), a console block without
commands is what the last background command prints next, each Python block runs in
one namespace, and the text block after it is what it must print."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.daemon import DEADLINE, ROOT
from tests.services import REDIS, require

BIN = Path(sys.executable).parent
BLOCK = re.compile(r"^\.\. code-block:: (\w+)\n\n((?:(?:    .*)?\n)+)", re.M)


def blocks() -> list[tuple[str, str]]:
    """(language, text) of each code block of the tutorial, in order."""
    text = (ROOT / "docs" / "tutorial" / "index.rst").read_text()
    found = []
    for match in BLOCK.finditer(text):
        lines = [line[4:] for line in match.group(2).rstrip("\n").splitlines()]
        found.append((match.group(1), "\n".join(lines)))
    return found


def pattern(expected: list[str]) -> re.Pattern[str]:
    """Lines to match in order, ``...`` standing for anything (other lines included)."""
    parts = [".*?" if line == "..." else
             re.escape(line).replace(re.escape("..."), ".*?") for line in expected]
    return re.compile(r"\n?".join(parts), re.S)


class Background:
    """A command of another terminal: its output as it comes."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.process = subprocess.Popen(command, shell=True, cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        os.set_blocking(self.process.stdout.fileno(), False)  # type: ignore[union-attr]
        self.output = ""
        self.seen = 0  # what earlier expectations consumed

    def expect(self, expected: list[str]) -> None:
        wanted = pattern(expected)
        end = time.monotonic() + DEADLINE
        while not (found := wanted.search(self.output, self.seen)):
            assert self.process.poll() is None or time.monotonic() < end, self.output
            assert time.monotonic() < end, f"never printed {expected!r}:\n{self.output}"
            chunk = self.process.stdout.read()  # type: ignore[union-attr]
            if chunk:
                self.output += chunk.decode()
            else:
                time.sleep(0.02)
        self.seen = found.end()

    def stop(self) -> None:
        """Ctrl-C, as the tutorial says."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(DEADLINE)


def as_run_here(command: str) -> str:
    """``uv run X`` is the project's ``X`` (the suite runs inside that environment);
    installing uv first is the README's first command, not this test's."""
    command = command.removeprefix("python3 -m pip install uv && ")
    return re.sub(r"\buv run (\w+)", lambda m: str(BIN / m.group(1)), command)


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_tutorial_runs_as_written(tmp_path, monkeypatch):
    require(REDIS, "Redis")  # (the tutorial's last step)
    for port in (8888, 8889):
        assert port_free(port), f"the tutorial's port {port} is taken"
    monkeypatch.chdir(tmp_path)  # (its files: jwt.secret, the pid files)
    monkeypatch.syspath_prepend(str(ROOT / "clients" / "python"))
    daemons: dict[str, Background] = {}
    streams: list[Background] = []
    namespace: dict[str, object] = {}
    printed = ""
    try:
        for language, text in blocks():
            if language == "python":
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(text, "tutorial", "exec"), namespace)
                printed = out.getvalue()
            elif language == "text":
                assert printed.rstrip("\n") == text, (printed, text)
            elif language == "console" and not text.startswith("$ "):
                streams[-1].expect(text.splitlines())
            elif language == "console":
                run_console(text, tmp_path, daemons, streams)
    finally:
        for running in [*streams, *daemons.values()]:
            running.stop()
    assert len(daemons) == 2 and len(streams) == 1


def run_console(text: str, cwd: Path, daemons: dict[str, Background],
                streams: list[Background]) -> None:
    """One console block: its commands, each with the lines it must print."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, expected in steps:
        command = as_run_here(command)
        if "twistd -n" in command:
            port = re.search(r"--port=(\d+)", command)
            where = port.group(1) if port else "8888"
            if where in daemons:
                daemons.pop(where).stop()  # (the reader stopped it with Ctrl-C)
            daemon = daemons[where] = Background(command, cwd)
            daemon.expect([f"... starting on {where}"])
        elif command.startswith("curl -N"):
            streams.append(Background(command, cwd))
            streams[-1].expect(expected)
        else:
            result = subprocess.run(command, shell=True, cwd=cwd, capture_output=True,
                                    text=True, timeout=DEADLINE)
            assert result.returncode == 0, result.stderr
            assert pattern(expected).fullmatch(result.stdout.strip()), (command,
                                                                       result.stdout)


def test_the_readmes_thirty_seconds_run_as_written(tmp_path):
    """README.rst's first command, its subscribe and publish, and its Python publish,
    against the daemon that command starts: the subscriber prints what the README shows
    (the ids are the daemon's own)."""
    readme = (ROOT / "README.rst").read_text()
    literal = re.findall(r"::\n\n((?:(?:    .*)?\n)+)", readme)
    server, _, subscribe, publish, shown, python = (
        "\n".join(line[4:] for line in block.rstrip("\n").splitlines())
        for block in literal[1:7])
    assert server.endswith("uv run twistd -n cyclone-sse") and subscribe.startswith("curl -N")
    assert port_free(8888), "the README's port 8888 is taken"
    daemon = Background(as_run_here(server), tmp_path)
    stream = None
    try:
        daemon.expect(["... starting on 8888"])
        stream = Background(subscribe, tmp_path)
        stream.expect(["retry: 3000"])
        assert subprocess.run(publish, shell=True, capture_output=True,
                              timeout=DEADLINE).returncode == 0
        stream.seen = 0  # (what the README shows starts with that line)
        ids = re.sub(r"id: \S+", "id: ...", shown)
        stream.expect(ids.replace('"lastEventId": "5f3a9c-0"', '"lastEventId": "..."')
                      .splitlines())
        exec(compile(python, "README", "exec"), {})
        stream.expect(['data: {"score":[123,124]}'])  # (the client's compact JSON)
    finally:
        for running in (stream, daemon):
            if running is not None:
                running.stop()
