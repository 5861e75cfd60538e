"""Lint and type checks are part of the test suite, so one command runs everything."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command):
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_ruff():
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy():
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


# the shape of the code ---------------------------------------------------------------

import ast  # noqa: E402

PACKAGE = ROOT / "cyclone_sse"


def modules():
    """(dotted name, parsed tree) of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(), str(path))


def imported(tree):
    """Every module a tree imports, typing-only imports (TYPE_CHECKING) included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_import_circle():
    trees = {name: tree for name, _, tree in modules()}
    # (a package's __init__ re-exporting its own modules is no circle)
    graph = {name: {m for m in imported(tree)
                    if m in trees and m != name and not m.startswith(name + ".")}
             for name, tree in trees.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_layers_hold():
    """The HTTP layer is below the handlers (the application hands it a route table),
    and a transport only carries bytes: neither imports a handler, the application or
    anything of ``auth`` (admission is ``session``'s)."""
    above = ("cyclone_sse.handlers", "cyclone_sse.app", "cyclone_sse.service",
             "cyclone_sse.auth")
    for name, _, tree in modules():
        if name.startswith(("cyclone_sse.http", "cyclone_sse.transports")):
            reached = [m for m in imported(tree) if m.startswith(above)]
            assert not reached, f"{name} imports {reached}"


def test_every_module_and_public_class_says_what_it_owns():
    for _, path, tree in modules():
        assert ast.get_docstring(tree), f"{path}: module docstring"
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                assert ast.get_docstring(node), f"{path}: class {node.name} docstring"


def test_only_links_import_the_broker_client_libraries():
    for name, path, tree in modules():
        for module in imported(tree):
            if module.split(".")[0] in ("txredisapi", "txamqp"):
                assert name.startswith("cyclone_sse.links."), f"{path} imports {module}"


def test_event_ids_are_formatted_and_split_only_by_event_id():
    import re
    by_hand = re.compile(r'rpartition\("-"\)|f"\{[^}]*epoch[^}]*\}-\{')
    for name, path, _ in modules():
        if name != "cyclone_sse.event":
            assert not by_hand.search(path.read_text()), f"{path} builds or splits an id"


def test_private_internals_we_lean_on_are_still_there():
    """Each of these is used with a comment saying why; an upgrade that changes one
    fails here first."""
    import cyclone.httpserver
    import cyclone.web
    from twisted.internet import abstract, tcp
    from twisted.internet.task import Clock
    from txamqp import connection

    # sockets.py: the direct send() path checks Twisted's own write buffer
    assert issubclass(tcp.Server, abstract.FileDescriptor)
    descriptor = abstract.FileDescriptor(Clock())
    assert descriptor.dataBuffer == b"" and descriptor._tempDataLen == 0
    # handlers: cyclone's error hook, header generation and response state
    for attribute in ("_handle_request_exception", "_generate_headers", "_request_summary"):
        assert hasattr(cyclone.web.RequestHandler, attribute), attribute
    from tests.memory import Connection, make_app
    app = make_app()
    request = cyclone.httpserver.HTTPRequest("GET", "/", connection=Connection(app).protocol)
    handler = cyclone.web.RequestHandler(app, request)
    assert handler._headers_written is False and handler._finished is False
    # http/server.py stands in for cyclone's connection: what cyclone's request and
    # handler call on theirs
    import inspect
    request_source = inspect.getsource(cyclone.httpserver.HTTPRequest)
    for name in ("connection.write(", "connection.finish()", "connection.notifyFinish()",
                 "connection.xheaders", "connection.transport"):
        assert name in request_source, name
    assert "connection.no_keep_alive" in inspect.getsource(cyclone.web.RequestHandler)
    # http/parse.py fills HTTPHeaders as its add() does: the joined value in the dict,
    # each value in the private _as_list that get_list reads
    from cyclone.httputil import HTTPHeaders
    headers = HTTPHeaders()
    headers.add("X-A", "1")
    headers.add("x-a", "2")
    assert headers._as_list == {"X-A": ["1", "2"]} and dict(headers) == {"X-A": "1,2"}
    # http/parse.py's new_headers sets what HTTPHeaders' constructor sets
    from cyclone_sse.http.parse import canonical_name, new_headers
    from cyclone_sse.http.server import LeanRequest
    made_headers, _ = new_headers()
    assert type(made_headers) is HTTPHeaders and vars(made_headers) == vars(HTTPHeaders())
    # http/server.py's LeanRequest sets what cyclone's HTTPRequest constructor sets
    made = cyclone.httpserver.HTTPRequest("GET", "/?a=1", headers=HTTPHeaders(),
                                          connection=Connection(app).protocol)
    lean = LeanRequest(Connection(app).protocol, "GET", "/?a=1", "HTTP/1.0",
                       HTTPHeaders(), "127.0.0.1", "http")
    assert set(vars(made)) == set(vars(lean))
    assert (lean.path, lean.query, lean.arguments) == (made.path, made.query, made.arguments)
    for name in ("content-type", "X-FOO", "Last-Event-ID", "a--b", "9x-y", "Host"):
        assert canonical_name(name) == HTTPHeaders._normalize_name(name), name
    # app.py's lean_routes: cyclone's route table
    assert hasattr(cyclone.web.Application(), "handlers")
    # links/redis.py's send_encoded: txredisapi's reply queue, timeout and state
    import txredisapi
    from twisted.internet.defer import DeferredQueue
    protocol = txredisapi.RedisProtocol(replyTimeout=1)
    assert isinstance(protocol.replyQueue, DeferredQueue)
    assert protocol.replyQueue.waiting == [] and protocol.replyTimeout == 1
    assert "self.replyQueue.put" in inspect.getsource(txredisapi.RedisProtocol.replyReceived)
    # links/redis.py skips txredisapi's reply conversion: with our settings it is none
    converting = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
    reply = [b"1", [b"2.5", b"\xff", 3], b"", -1, b"x"]
    assert converting.tryConvertData(reply) == reply
    # links/amqp.py: the body-frame decoder it replaces; the frame hooks its reader
    # takes frames in (tests/test_amqp_wire.py feeds frames through dataReceived), the
    # heartbeat check it widens, the frame size txamqp learns at connection.tune
    assert hasattr(connection.Body, "decode")
    from txamqp.client import TwistedDelegate
    from txamqp.protocol import AMQClient, FrameReceiver
    assert "_unpack_frame" in FrameReceiver.dataReceived.__code__.co_names
    assert "frame_received" in FrameReceiver.dataReceived.__code__.co_names
    assert {"check_heartbeat", "checkHB", "MAX_UNSEEN_HEARTBEAT", "heartbeatInterval"} <= \
        set(AMQClient.__init__.__code__.co_names) | set(dir(AMQClient))
    assert "MAX_LENGTH" in TwistedDelegate.connection_tune.__code__.co_names
    # httpclient.py: the pool builds each connection's factory from _factory, called
    # with (quiescent callback, metadata); the protocol's _parser, its STATUS/HEADER
    # states, connHeaders and allHeadersReceived, and _giveUp
    from twisted.web import _newclient
    from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
    assert HTTPConnectionPool._factory is _HTTP11ClientFactory
    assert "self._factory(" in inspect.getsource(HTTPConnectionPool._newConnection)
    assert list(inspect.signature(_HTTP11ClientFactory).parameters) == [
        "quiescentCallback", "metadata"]
    protocol = _newclient.HTTP11ClientProtocol()
    assert protocol._parser is None and callable(protocol._giveUp)
    from twisted.internet.testing import StringTransport
    parser = _newclient.HTTPClientParser(None, None)
    parser.makeConnection(StringTransport())
    assert parser.state == _newclient.STATUS and _newclient.HEADER == "HEADER"
    assert callable(parser.allHeadersReceived)
    assert "connHeaders" in inspect.getsource(_newclient.HTTPParser.connectionMade)
    # transports/websocket.py's BoundedDeflate: the inflate state wsproto keeps
    from wsproto.extensions import PerMessageDeflate
    deflate = PerMessageDeflate()
    assert {"_decompressor", "_inbound_compressed", "_inbound_is_compressible"} <= \
        set(vars(deflate))
    for hook in ("frame_inbound_payload_data", "frame_inbound_complete"):
        source = inspect.getsource(getattr(PerMessageDeflate, hook))
        assert "self._decompressor.decompress" in source and "_inbound_compressed" in source
    # limits.py: the listening port's logger, read at each accept, and its EMFILE lines
    from twisted.internet import tcp

    from cyclone_sse.limits import _ACCEPT_CLOSED, _ACCEPT_NOISE
    assert "self._logger" in inspect.getsource(tcp.Port.doRead)
    accept = inspect.getsource(tcp._accept).replace('" "', "")
    assert all(line in accept for line in (*_ACCEPT_CLOSED, *_ACCEPT_NOISE))


def test_the_manual_layout_is_a_true_map_of_the_package():
    from tests.manual import page
    block = page("explanation/development").split(".. layout start", 1)[1].split(
        ".. layout end", 1)[0]
    listed, folders = set(), {}
    for line in block.splitlines():
        text = line[4:]  # inside the literal block
        if not text.strip() or line.strip() == "::":
            continue
        depth = (len(text) - len(text.lstrip())) // 2
        name = text.split()[0]
        folders[depth] = name
        if name.endswith(".py"):
            listed.add("".join(folders[d] for d in range(depth)) + name)
    actual = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert listed == actual


def test_the_readme_is_valid_restructuredtext_and_short():
    import docutils.core
    import docutils.utils
    text = (ROOT / "README.rst").read_text()
    assert text.count("\n") <= 250  # (the rest is the manual: docs/)
    problems = []

    class Collect:
        def write(self, message):
            problems.append(message)

    docutils.core.publish_string(text, writer="null", settings_overrides={
        "report_level": docutils.utils.Reporter.WARNING_LEVEL, "halt_level": 5,
        "warning_stream": Collect()})
    assert not problems, "".join(problems)


def test_the_garbage_collector_is_tuned_for_many_long_lived_connections():
    import gc

    from cyclone_sse.service import GC_YOUNG_THRESHOLD, tune_garbage_collector
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD and gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_every_close_code_sent_is_declared():
    """A close code written in a transport (``close_with(1008, ...)``, or a constant
    ``NAME = (4001, ...)`` passed to it) is declared in cyclone_sse/closes.py, where the
    manual's tables come from."""
    import re

    from cyclone_sse import closes
    declared = {code for code, _ in (*closes.WEBSOCKET, *closes.SOCKJS)}
    sent = set()
    for path in (PACKAGE / "transports").glob("*.py"):
        text = path.read_text()
        sent |= {int(c) for c in re.findall(r"close_with\((\d{4})", text)}
        sent |= {int(c) for c in re.findall(r"^[A-Z_]+ = \((\d{4}), \"", text, re.M)}
    assert sent and sent <= declared, sent - declared
