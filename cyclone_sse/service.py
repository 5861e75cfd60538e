"""``makeService``: options → a ``MultiService`` of the application, its exporter and its
listening ports (the only place the global reactor is resolved)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from typing import Any

from twisted.application import internet, service
from twisted.internet import defer, ssl
from twisted.logger import Logger
from twisted.python import reflect

from cyclone_sse.app import App
from cyclone_sse.limits import quiet_accept_errors
from cyclone_sse.options import Options, Settings

log = Logger()

#: Pending connections the kernel queues for accept(): a burst of reconnecting
#: browsers must not be dropped (and retried a second later) at Twisted's default 50.
LISTEN_BACKLOG = 4096


def raise_file_limit() -> int:
    """Every stream is a file descriptor: lift the soft limit to the hard one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open-file limit raised from {soft} to {hard}", soft=soft, hard=hard)
        return hard
    return soft


class AppService(service.Service):
    """Starts the application's service tree with the reactor (after raising the
    open-file limit), and on stop closes every stream so clients reconnect to another
    daemon."""

    def __init__(self, app: App) -> None:
        self.app = app

    def startService(self) -> None:
        super().startService()
        raise_file_limit()
        tune_garbage_collector()
        self.app.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        ignore_stop_signals()
        return self.app.stop()


#: Allocations between young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Fewer cyclic collections: a push server holds tens of thousands of long-lived
    connection objects, and CPython's defaults run a young collection every 700
    allocations and a full one (walking all of them) every 100 young ones: in a
    reconnect storm that was a tenth of the daemon's time.  What exists at start-up
    (modules, the application) is frozen out of the collector's walks."""
    import gc
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def ignore_stop_signals() -> None:
    """Once stopping, a second SIGTERM or SIGINT (``uv run`` forwards the one it gets;
    an impatient operator repeats it) changes nothing: without this Twisted's handler
    calls ``reactor.stop()`` again and logs a ``ReactorNotRunning`` traceback.
    SIGKILL still ends a stop that hangs."""
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: None)


class ReusePortServer(service.Service):
    """A listening TCP port opened with SO_REUSEPORT, so several daemons (one per core)
    can share it and the kernel spreads new connections among them."""

    def __init__(self, port: int, factory: Any, interface: str, reactor: Any) -> None:
        self.port_number = port
        self.factory = factory
        self.interface = interface
        self.reactor = reactor
        self.listening: Any = None

    def startService(self) -> None:
        super().startService()
        import socket
        family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.interface, self.port_number))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self.listening = self.reactor.adoptStreamPort(sock.fileno(), family, self.factory)
        sock.close()  # the reactor holds its own copy of the descriptor

    def stopService(self) -> Any:
        super().stopService()
        if self.listening is not None:
            return self.listening.stopListening()
        return None


TLS_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}


def tls_options(settings: Settings) -> ssl.CertificateOptions:
    """The TLS port's certificate, its floor (``--ssl-min-version``) and ciphers."""
    from OpenSSL import crypto
    with open(settings.ssl_cert, "rb") as handle:
        marker = b"-----BEGIN CERTIFICATE-----"
        chain = [marker + part for part in handle.read().split(marker)[1:]]
    with open(settings.ssl_key, "rb") as handle:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, handle.read())
    certificate, *intermediates = (crypto.load_certificate(crypto.FILETYPE_PEM, pem)
                                   for pem in chain)
    extra: dict[str, Any] = {"extraCertChain": intermediates} if intermediates else {}
    if settings.ssl_ciphers:
        extra["acceptableCiphers"] = ssl.AcceptableCiphers.fromOpenSSLCipherString(
            settings.ssl_ciphers)
    return ssl.CertificateOptions(
        privateKey=key, certificate=certificate,
        raiseMinimumTo=getattr(ssl.TLSVersion, TLS_VERSIONS[settings.ssl_min_version]),
        **extra)


def load_app(dotted: str | None, options: Mapping[str, Any], reactor: Any) -> App:
    cls = reflect.namedAny(dotted) if dotted else App
    return cls(options, reactor=reactor)


def makeService(options: Mapping[str, Any], reactor: Any = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    settings = Settings.from_options(options)
    top = service.MultiService()
    app = load_app(settings.app, options, reactor)
    quiet_accept_errors(app.connection_limits)  # (every port: one process, one limit)
    # Added first, so it is stopped last: ports stop accepting before streams close.
    AppService(app).setServiceParent(top)
    apps = [app]
    if settings.export:
        from cyclone_sse.export.graphite import GraphiteExporter
        GraphiteExporter(app, settings, reactor).setServiceParent(top)
    if settings.reuse_port:
        ReusePortServer(settings.port, app, settings.listen, reactor).setServiceParent(top)
    else:
        internet.TCPServer(settings.port, app, backlog=LISTEN_BACKLOG,
                           interface=settings.listen).setServiceParent(top)
    if settings.internal_port:
        internet.TCPServer(settings.internal_port, app.internal_site(), backlog=LISTEN_BACKLOG,
                           interface=settings.internal_listen).setServiceParent(top)
    if settings.use_ssl:
        ssl_app = app
        if settings.ssl_app:
            ssl_app = load_app(settings.ssl_app, options, reactor)
            AppService(ssl_app).setServiceParent(top)
            apps.append(ssl_app)
        internet.SSLServer(settings.ssl_port, ssl_app, tls_options(settings),
                           backlog=LISTEN_BACKLOG,
                           interface=settings.ssl_listen).setServiceParent(top)
    top.apps = apps  # type: ignore[attr-defined]
    return top


__all__ = ["AppService", "Options", "makeService"]
