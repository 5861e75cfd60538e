"""Every option of ``twistd cyclone-sse``, defined once.

``Settings`` is the one definition: each field is an option with its type, default,
help text and group.  ``Options`` (the command line and ``--help``), the shipped
``cyclone-sse.conf`` (``python -m cyclone_sse.options conf``; a test checks it) and the
manual's option table (docs/reference/options.rst, built from ``render_table``) are
rendered from it.

Every option of the 2013 cyclone-sse keeps its name and default.  A config file holds
the same ``--name=value`` words, whitespace separated, so one file works both as
``--config FILE`` and as ``$(cat FILE)``; with ``--config`` it may also contain ``#``
comments.  The command line wins over the file.  An empty value (``--app=``) means
"the default", as in the original config file, except where an option says empty means
none (``--redis-raw=``).  A yes/no option alone (``--use-ssl``) means 1.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from twisted.python import reflect, usage

from cyclone_sse import history as history_mod
from cyclone_sse import registry as registry_mod
from cyclone_sse import transports as transports_mod

HISTORY_NAMES = ("memory", "redis", "amqp-stream")
#: Shortest HMAC secret accepted for tokens: as long as SHA-256's output.
MIN_JWT_SECRET = 32
EXPORT_NAMES = ("graphite",)


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < low or (high is not None and number > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"{number} is out of range ({span})")
        return number
    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def _non_negative(unit: str) -> Callable[[str], float]:
    """A coercion to a number >= 0; ``unit`` names what it counts in its errors."""
    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number {unit}, got {value!r}") from None
        if number < 0:
            raise ValueError(f"{value} must not be negative")
        return number
    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


_seconds = _non_negative("of seconds")
_rate = _non_negative("per second")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 0 or 1, got {value!r}")


_bool.coerceDoc = ""  # type: ignore[attr-defined]

_port = _int(0, 65535)  # 0: the system picks a free port (the log says which)
_count = _int(0)


def _naming(name: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    def named(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as exc:
            raise ValueError(f"--{name}: {exc}") from None
    named.coerceDoc = ""  # type: ignore[attr-defined]
    return named


def option(default: Any, help: str, coerce: Callable[[str], Any] | None = None, *,
           short: str | None = None, group: str = "", empty_ok: bool = False,
           shown: str | None = None) -> Any:
    """One option: a ``Settings`` field whose metadata says how to read and show it.

    ``group`` starts a new block in the config file; ``empty_ok`` keeps an empty value
    instead of taking the default; ``shown`` is the default as the manual shows it.
    """
    return field(default=default, metadata={
        "help": help, "coerce": coerce, "short": short, "group": group,
        "empty_ok": empty_ok, "shown": shown})


@dataclass
class Settings:
    """Options as the application reads them (underscored names, typed).  The field
    order is the order of ``--help``, the config file and the manual's table."""

    config: str | None = option(None, "read more --name=value options from this file",
                                short="c")
    port: int = option(8888, "TCP port (0: any free port; the log names it)", _port,
                       short="p", group="listening")
    listen: str = option("127.0.0.1", "interface to listen on", short="l")
    app: str | None = option(None, "your own cyclone Application class (dotted name)",
                             short="r")
    use_ssl: bool = option(False, "also serve HTTPS (--use-ssl alone means 1)", _bool,
                           group="tls")
    ssl_port: int = option(8443, "TLS port", _port)
    ssl_listen: str = option("127.0.0.1", "TLS interface")
    ssl_cert: str = option("server.crt", "TLS certificate file (PEM)")
    ssl_key: str = option("server.key", "TLS private key file (PEM)")
    ssl_app: str | None = option(None, "a different application for the TLS port")
    ssl_appopts: str | None = option(None, "kept for compatibility; passed to --ssl-app")
    ssl_min_version: str = option("1.2", "oldest TLS version accepted: 1.2 or 1.3")
    ssl_ciphers: str = option("", "OpenSSL cipher list for TLS 1.2 (empty: Twisted's "
                              "secure default)")
    hsts: int = option(0, "Strict-Transport-Security max-age on the TLS port, seconds "
                       "(0: not sent)", _count)
    broker: str = option("http", "where messages come from: http, redis, amqp or zmq",
                         short="b", group="broker")
    http_secret: str = option("", "key required by POST /publish, /stats channel names "
                              "(empty: no key)")
    redis_host: str = option("127.0.0.1", "Redis host (Redis broker)", group="redis")
    redis_port: int = option(6379, "Redis port", _port)
    redis_db: int = option(0, "Redis database number", _int(0, 15))
    redis_password: str = option("", "Redis password (AUTH)")
    redis_tls: bool = option(False, "connect to Redis over TLS", _bool)
    redis_url: str = option("", "redis://[user:pass@]host[:port][/db], rediss:// for TLS, "
                            "redis+sentinel://host:port[,host:port...]/MASTER[/db], or "
                            "redis+cluster://host:port[,host:port...] (rediss+... for TLS; "
                            "wins over --redis-host and the like)")
    redis_ca_file: str = option("", "PEM certificates to trust for Redis TLS (empty: the "
                                "system's)")
    redis_cert_file: str = option("", "client certificate for Redis TLS (PEM)")
    redis_key_file: str = option("", "its private key (PEM)")
    redis_prefix: str = option("cyclone-sse", "prefix of every Redis key and internal "
                               "channel")
    redis_raw: str = option("*", "raw channels stored as publishes (redis-cli publish); "
                            "empty: none", empty_ok=True)
    redis_timeout: float = option(3.0, "seconds a Redis reply may take (and between PINGs) "
                                  "before Redis counts as down", _seconds)
    redis_min_replicas: int = option(0, "replicas that must confirm each stored event "
                                     "(Redis WAIT, up to half --redis-timeout) before the "
                                     "publish is answered 200; else 503 (0: the primary's "
                                     "word is enough)", _count)
    amqp_host: str = option("127.0.0.1", "AMQP host (AMQP broker)", group="amqp")
    amqp_port: int = option(5672, "AMQP port (5671 with --amqp-tls)", _port)
    amqp_vhost: str = option("/", "AMQP virtual host")
    amqp_tls: bool = option(False, "connect to AMQP over TLS", _bool)
    amqp_url: str = option("", "amqp://[user:pass@]host[:port][/vhost], amqps:// for TLS "
                           "(wins over --amqp-host and the like)")
    amqp_ca_file: str = option("", "PEM certificates to trust for AMQP TLS (empty: the "
                               "system's)")
    amqp_cert_file: str = option("", "client certificate for AMQP TLS (PEM)")
    amqp_key_file: str = option("", "its private key (PEM)")
    amqp_spec: str = option("", "AMQP 0-9-1 spec XML (default: Debian's amqp-specs)")
    amqp_username: str = option("guest", "AMQP user")
    amqp_password: str = option("guest", "AMQP password")
    amqp_exchange_name: str = option("sse-cyclone-server", "AMQP exchange to bind to")
    amqp_exchange_type: str = option("direct", "AMQP exchange type")
    amqp_channel: int = option(1, "AMQP channel number", _int(1, 65535))
    amqp_stream: str = option("cyclone-sse.events", "the RabbitMQ stream that keeps the "
                              "history of --history=amqp-stream")
    zmq_connect: str = option("", "ZeroMQ endpoints the SUB socket connects to, comma "
                              "separated (publishers' PUB, or a proxy's XPUB)", group="zmq")
    zmq_bind: str = option("", "ZeroMQ endpoints the SUB socket binds, for publishers to "
                           "connect their PUB")
    zmq_publish: str = option("", "ZeroMQ endpoints a PUB socket connects to (a proxy's "
                              "XSUB): publishes made here reach the other daemons")
    zmq_hwm: int = option(10000, "ZeroMQ messages queued for this daemon before "
                          "publishers drop them (its high-water mark)", _int(1))
    export: str | None = option(None, "send statistics to: graphite", short="e",
                                group="export")
    export_host: str = option("127.0.0.1", "Graphite (carbon plaintext) host")
    export_port: int = option(2003, "Graphite (carbon plaintext) port", _port)
    export_path: str = option("cyclone-sse", "metric name prefix")
    export_interval: float = option(60.0, "seconds between exports", _seconds)
    export_protocol: str = option("tcp", "carbon plaintext over tcp or udp")
    metrics_channels: int = option(100, "per-channel subscriber counts in /metrics and "
                                   "Graphite: the busiest N (0: none)", _count)
    history: str = option("", "where events are kept for replay: memory, redis, or "
                          "amqp-stream (a RabbitMQ stream, with the AMQP broker; "
                          "default: redis with the Redis broker)", group="history",
                          shown="(auto)")
    history_size: int = option(history_mod.DEFAULT_SIZE, "events kept per channel", _count)
    history_ttl: float = option(history_mod.DEFAULT_TTL, "seconds an event is kept",
                                _seconds)
    history_channels: int = option(history_mod.DEFAULT_CHANNELS, "channels kept in "
                                   "history (the least recently published go first)", _count)
    history_bytes: int = option(history_mod.DEFAULT_BYTES, "bytes of events kept in all "
                                "(the largest channel gives first)", _count)
    history_channel_bytes: int = option(history_mod.DEFAULT_CHANNEL_BYTES,
                                        "bytes of events kept per channel",
                                        _count)
    replay_limit: int = option(history_mod.DEFAULT_REPLAY_LIMIT,
                               "most events one reconnect replays", _count)
    heartbeat: float = option(registry_mod.DEFAULT_HEARTBEAT,
                              "seconds between heartbeat comments on streams", _seconds,
                              group="streams")
    retry: int = option(3000, "reconnect delay advised to clients, milliseconds", _count)
    poll_timeout: float = option(25.0, "seconds a long-poll request is held", _seconds)
    max_channels: int = option(64, "channels one subscriber may name", _count)
    max_pending: int = option(transports_mod.DEFAULT_MAX_PENDING,
                              "bytes queued for a client that stopped reading", _count)
    max_body: int = option(1024 * 1024, "largest publish body, bytes", _int(1))
    max_publish_channels: int = option(64, "channels one publish may name", _count)
    max_batch: int = option(1000, "events one publish request may carry (a JSON list)",
                            _int(1))
    pattern_replays: float = option(50.0, "subscriptions with a pattern and a last event "
                                    "id per second, daemon-wide (burst: twice as many)",
                                    _rate)
    header_timeout: float = option(10.0, "seconds to send a request line and headers",
                                   _seconds)
    body_timeout: float = option(30.0, "seconds to send a request body", _seconds)
    idle_timeout: float = option(60.0, "seconds a kept-alive connection may wait for its "
                                 "next request", _seconds)
    max_connections: int = option(0, "open connections before new ones get 503 (0: the "
                                  "open-file limit less 64)", _count)
    max_per_address: int = option(0, "open connections from one client address (0: no "
                                  "limit; a balancer is one address)", _count)
    cors_origin: str = option("*", "* or a comma list of allowed origins")
    ws_max_message: int = option(64 * 1024, "largest message (and frame) a WebSocket "
                                 "client may send, bytes", _int(125), group="websocket")
    ws_max_subscriptions: int = option(16, "subscriptions one WebSocket connection may "
                                       "hold", _int(1))
    ws_publish_rate: float = option(10.0, "publishes per second one WebSocket connection "
                                    "may make, to channels whose policy allows them "
                                    "(burst: twice as many; 0: none)", _rate)
    ws_ping: float = option(20.0, "seconds between WebSocket pings, and the wait for a "
                            "pong before a silent peer is dropped (0: no pings)", _seconds)
    ws_deflate: bool = option(False, "accept permessage-deflate (compresses each message "
                              "per connection: costs CPU on every delivery)", _bool)
    sockjs_prefix: str = option("", "comma list of SockJS endpoints (/echo: sockjs-client's "
                                "new SockJS(\"http://host/echo\"); empty: none)",
                                group="sockjs")
    sockjs_channels: str = option("", "comma list of channels a SockJS session receives "
                                  "from its opening, each event's data as a message")
    sockjs_jsessionid: bool = option(False, "set the JSESSIONID cookie on SockJS session "
                                     "requests (for balancers that stick sessions by it)",
                                     _bool)
    sockjs_test_services: bool = option(False, "also serve the SockJS protocol suite's "
                                        "test services (/echo, /close, "
                                        "/disabled_websocket_echo, /cookie_needed_echo)",
                                        _bool)
    sockjs_url: str = option("https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/"
                             "sockjs.min.js", "the sockjs-client <prefix>/iframe.html loads "
                             "(the version your pages load)")
    policies: str = option("", "channel policies, PATTERN=KIND[+publish][+presence] comma "
                           "separated; KIND: public, token, callback or deny", group="security")
    default_policy: str = option("public", "policy of channels no rule matches")
    jwt_secret: str = option("", "HMAC secret of subscriber and publisher tokens (HS256/384/512)")
    jwt_secret_file: str = option("", "file holding that secret (keeps it out of ps)")
    jwt_public_key: str = option("", "PEM public key file for RS256 or ES256 tokens")
    jwt_audience: str = option("", "required 'aud' of tokens (empty: not checked)")
    jwt_issuer: str = option("", "required 'iss' of tokens (empty: not checked)")
    auth_cookie: str = option("cyclone_sse_token", "cookie a subscriber token may come in "
                              "(empty: none)", empty_ok=True)
    auth_url: str = option("", "the application's auth callback URL (policy 'callback')")
    auth_timeout: float = option(2.0, "seconds the auth callback may take", _seconds)
    auth_cache: float = option(5.0, "seconds an auth callback answer is kept when it sets "
                               "no ttl", _seconds)
    grip_key: str = option("", "Pushpin control key: POST /publish/ accepts it (as Bearer "
                           "or Basic password) or JWTs it signs")
    grip_iss: str = option("", "required 'iss' of those JWTs (empty: not checked)")
    grip_proxy: str = option("", "GRIP proxy routes, PREFIX=BACKEND_URL comma separated "
                             "(/api/=http://127.0.0.1:8000): requests under PREFIX go to "
                             "the backend, which may hold them (empty: none)")
    grip_backend_timeout: float = option(10.0, "seconds a GRIP backend may take to answer",
                                         _seconds)
    grip_max_answer: int = option(8 * 1024 * 1024, "largest answer body read from a GRIP "
                                  "backend, bytes (past it: 502)", _int(1))
    grip_max_head: int = option(64 * 1024, "largest status line and headers read from a "
                                "GRIP backend, bytes (past it: 502)", _int(1024))
    grip_max_timeout: float = option(600.0, "longest Grip-Timeout and Grip-Keep-Alive "
                                     "interval a backend may ask for, seconds (longer "
                                     "ones are cut to this)", _seconds)
    internal_port: int = option(0, "serve /publish, /stats, /metrics only here (0: on --port)",
                                _port)
    internal_listen: str = option("127.0.0.1", "interface of --internal-port")
    public_publish: bool = option(False, "accept unauthenticated publishes on a "
                                  "non-loopback address", _bool)
    access_log: bool = option(False, "log every HTTP request (0: only errors)", _bool,
                              group="operating")
    dashboard: bool = option(True, "serve the live dashboard at /dashboard (beside /stats: "
                             "on the internal listener when there is one)", _bool)
    hide_version: bool = option(False, "send 'Server: cyclone-sse' without the version",
                                _bool)
    reuse_port: bool = option(False, "listen with SO_REUSEPORT: several daemons share "
                              "--port", _bool)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | Settings | None) -> Settings:
        """Accepts twistd ``Options``, a plain dict (hyphenated or underscored keys,
        missing ones take the defaults) or a ``Settings``."""
        if isinstance(options, Settings):
            return options
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in (options or {}).items():
            name = key.replace("-", "_")
            if name in known and value is not None:
                values[name] = value
        settings = cls(**values)
        if not settings.history:  # the one place the default history is derived
            from cyclone_sse.brokers import BROKERS
            broker = BROKERS.get(settings.broker)
            settings.history = broker.default_history if broker else "memory"
        return settings

    def check(self) -> None:
        """Raise ``ValueError`` naming the first option the daemon cannot run with."""
        from cyclone_sse.brokers import BROKERS, broker_class
        if self.broker not in BROKERS:
            raise ValueError(f"--broker={self.broker}: choose one of {', '.join(BROKERS)}")
        _check_choice("history", self.history, HISTORY_NAMES)
        if self.sockjs_channels:
            from cyclone_sse.channels import split_channels
            from cyclone_sse.errors import CycloneSSEError
            try:
                split_channels([self.sockjs_channels], self.max_channels,
                               "--sockjs-channels")
            except CycloneSSEError as exc:
                raise ValueError(f"--sockjs-channels: {exc}") from None
        if self.sockjs_test_services:
            from cyclone_sse.transports.sockjs import TEST_SERVICES
            taken = {"/" + p.strip().strip("/") for p in self.sockjs_prefix.split(",")}
            for prefix, *_ in TEST_SERVICES:
                if prefix in taken:
                    raise ValueError(f"--sockjs-prefix={prefix} is a path of "
                                     "--sockjs-test-services: choose another")
        if self.export:
            _check_choice("export", self.export, EXPORT_NAMES)
        _check_choice("export-protocol", self.export_protocol, ("tcp", "udp"))
        broker_class(self).check_options(self)
        for name, dotted in (("app", self.app), ("ssl-app", self.ssl_app)):
            if dotted:
                try:
                    reflect.namedAny(dotted)
                except Exception as exc:
                    raise ValueError(f"--{name}={dotted}: cannot import it "
                                     f"({exc.__class__.__name__}: {exc})") from None
        _check_choice("ssl-min-version", self.ssl_min_version, ("1.2", "1.3"))
        if self.use_ssl:
            for name, path in (("ssl-cert", self.ssl_cert), ("ssl-key", self.ssl_key)):
                if not os.path.isfile(path):
                    raise ValueError(f"--{name}={path}: no such file")
        if self.ssl_ciphers and not _known_ciphers(self.ssl_ciphers):
            raise ValueError(f"--ssl-ciphers={self.ssl_ciphers}: no cipher OpenSSL knows")
        if self.cors_origin != "*" and any(not o.strip() for o in self.cors_origin.split(",")):
            raise ValueError(f"--cors-origin={self.cors_origin}: empty origin in the list")
        if self.grip_proxy:
            from cyclone_sse.grip import routes
            routes(self.grip_proxy)
        self._check_security()

    def jwt_key(self) -> str:
        """The HMAC secret, from the option or its file."""
        if self.jwt_secret_file:
            return _read("--jwt-secret-file", self.jwt_secret_file).strip()
        return self.jwt_secret

    def public_key(self) -> str:
        """The PEM public key's text ("" without one)."""
        return _read("--jwt-public-key", self.jwt_public_key) if self.jwt_public_key else ""

    @property
    def takes_tokens(self) -> bool:
        return bool(self.jwt_secret or self.jwt_secret_file or self.jwt_public_key)

    def _check_security(self) -> None:
        from cyclone_sse.auth.policy import CALLBACK, TOKEN, PolicyTable
        table = PolicyTable.parse(self.policies, self.default_policy)
        if TOKEN in table.uses and not self.takes_tokens:
            raise ValueError("--policies: a 'token' policy needs --jwt-secret, "
                             "--jwt-secret-file or --jwt-public-key")
        if CALLBACK in table.uses and not self.auth_url:
            raise ValueError("--policies: a 'callback' policy needs --auth-url")
        if self.auth_url and not self.auth_url.startswith(("http://", "https://")):
            raise ValueError("--auth-url: expected an http:// or https:// URL")
        if "@" in self.auth_url.partition("//")[2].partition("/")[0]:
            # (the question's Authorization header is the subscriber's own)
            raise ValueError("--auth-url: user:password@ cannot be sent; put a shared "
                             "secret in the query (?key=..., masked in logs) instead")
        key = self.jwt_key()
        if key and len(key.encode()) < MIN_JWT_SECRET:
            name = "--jwt-secret-file" if self.jwt_secret_file else "--jwt-secret"
            raise ValueError(f"{name}: use at least {MIN_JWT_SECRET} bytes (RFC 7518, 3.2)")
        if not key and self.jwt_secret_file:
            raise ValueError(f"--jwt-secret-file={self.jwt_secret_file}: the file is empty")
        if self.jwt_public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
            try:
                load_pem_public_key(self.public_key().encode())
            except ValueError:
                raise ValueError(f"--jwt-public-key={self.jwt_public_key}: not a PEM "
                                 "public key") from None
        if self.http_secret or self.takes_tokens or self.public_publish:
            return
        where = [(self.internal_listen, "--internal-listen")] if self.internal_port else \
            [(self.listen, "--listen")] + ([(self.ssl_listen, "--ssl-listen")]
                                          if self.use_ssl else [])
        for address, name in where:
            if not _is_loopback(address):
                raise ValueError(
                    f"{name}={address}: anyone who can reach it could publish; set "
                    "--http-secret or a token key, or --public-publish=1 to accept that")


def _read(option_name: str, path: str) -> str:
    """A file an option names; ValueError naming the option and the reason."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"{option_name}={path}: {exc.strerror}") from None


def _known_ciphers(text: str) -> bool:
    """Whether OpenSSL accepts the cipher list (at least one cipher)."""
    from OpenSSL import SSL
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(text.encode())
    except SSL.Error:
        return False
    return True


def _is_loopback(address: str) -> bool:
    import ipaddress
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"--{name}={value}: choose one of {', '.join(choices)}")


#: The options of the 2013 cyclone-sse (0.6), with their 2013 defaults: each still
#: parses (tests/test_options.py) and docs/howto/from-2013.rst lists what each does now.
OPTIONS_2013: tuple[tuple[str, str], ...] = (
    ("port", "8888"), ("listen", "127.0.0.1"), ("app", ""), ("use-ssl", "0"),
    ("ssl-port", "8443"), ("ssl-listen", "127.0.0.1"), ("ssl-cert", "server.crt"),
    ("ssl-key", "server.key"), ("ssl-app", ""), ("ssl-appopts", ""), ("broker", "http"),
    ("http-secret", ""), ("redis-host", "127.0.0.1"), ("redis-port", "6379"),
    ("amqp-host", "127.0.0.1"), ("amqp-port", "5672"), ("amqp-vhost", "/"),
    ("amqp-spec", "rabbit.xml"), ("amqp-username", "guest"), ("amqp-password", "guest"),
    ("amqp-exchange-name", "sse-cyclone-server"), ("amqp-exchange-type", "direct"),
    ("amqp-channel", "1"), ("export", ""), ("export-host", ""), ("export-port", ""),
    ("export-interval", "60"), ("export-path", "cyclone-sse"))


def option_fields() -> Iterator[tuple[str, Field[Any]]]:
    """``(--name, field)`` for every option, in order."""
    for f in fields(Settings):
        yield f.name.replace("_", "-"), f


def _yes_no_options() -> frozenset[str]:
    return frozenset(name for name, f in option_fields() if f.metadata["coerce"] is _bool)


def _empty_ok_options() -> frozenset[str]:
    return frozenset(name for name, f in option_fields() if f.metadata["empty_ok"])


class Options(usage.Options):
    """``twistd cyclone-sse`` options, rendered from ``Settings``."""

    synopsis = "[options]"
    longdesc = ("Server-Sent Events broadcasting daemon: browsers subscribe with "
                "GET /?channels=NAME, publishers POST /publish (or use Redis/AMQP). "
                "Numeric limits: 0 disables.")

    optParameters: list[list[Any]] = [
        [name, f.metadata["short"], f.default, f.metadata["help"],
         *([_naming(name, f.metadata["coerce"])] if f.metadata["coerce"] else [])]
        for name, f in option_fields()]

    def parseOptions(self, options: list[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        super().parseOptions(normalize_argv(expand_config(list(options))))

    def postOptions(self) -> None:
        try:
            settings = Settings.from_options(self)
            settings.check()
        except ValueError as exc:
            raise usage.UsageError(str(exc)) from None
        self["history"] = settings.history


def expand_config(argv: list[str]) -> list[str]:
    """Replace ``--config FILE`` / ``-c FILE`` / ``--config=FILE`` by the file's words,
    placed first so the rest of the command line overrides them."""
    from_file: list[str] = []
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        path = None
        if word in ("--config", "-c"):
            path = next(words, None)
            if path is None:
                raise usage.UsageError(f"option {word} requires argument")
        elif word.startswith("--config="):
            path = word.partition("=")[2]
        if path is None:
            rest.append(word)
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                from_file.extend(shlex.split(handle.read(), comments=True))
        except OSError as exc:
            raise usage.UsageError(f"--config={path}: {exc.strerror}") from None
        except ValueError as exc:
            raise usage.UsageError(f"--config={path}: {exc}") from None
    return from_file + rest


def normalize_argv(argv: list[str]) -> list[str]:
    """The original's quirks: a yes/no option alone (``--use-ssl``) means 1, and an
    empty ``--name=`` means the default (unless empty means none for that option)."""
    yes_no, empty_ok = _yes_no_options(), _empty_ok_options()
    result = []
    for word in argv:
        if word.startswith("--") and word[2:] in yes_no:
            word += "=1"
        if word.startswith("--") and word.endswith("=") and word.count("=") == 1 \
                and word[2:-1] not in empty_ok:
            continue
        result.append(word)
    return result


# rendered documents ------------------------------------------------------------------

def _written(f: Field[Any]) -> str:
    """The default as an option value: ``0``/``1`` for yes/no, empty for none."""
    value = f.default
    if value is None:
        return ""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    return str(value)


def shown_default(f: Field[Any]) -> str:
    """The default as the manual shows it."""
    shown = f.metadata["shown"]
    return str(shown) if shown is not None else _written(f)


def render_conf() -> str:
    """``cyclone-sse.conf``: every option with its default, one block per group.  No
    comments, so it also works as ``$(cat cyclone-sse.conf)``."""
    lines: list[str] = []
    for name, f in option_fields():
        if name == "config":
            continue
        if f.metadata["group"] and lines:
            lines.append("")
        lines.append(f"--{name}={_written(f)}")
    return "\n".join(lines) + "\n"


def render_table() -> str:
    """The manual's option table (reStructuredText)."""
    rows = []
    for name, f in option_fields():
        short = f.metadata["short"]
        label = f"``-{short}, --{name}``" if short else f"``--{name}``"
        rows.append((label, shown_default(f).replace("*", "\\*"), f.metadata["help"]))
    widths = [max(len(row[i]) for row in [("option", "default", "meaning"), *rows])
              for i in range(3)]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: tuple[str, str, str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([rule, line(("option", "default", "meaning")), rule,
                      *(line(r) for r in rows), rule]) + "\n"


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what not in ("conf", "table"):
        sys.exit("usage: python -m cyclone_sse.options conf|table")
    sys.stdout.write(render_conf() if what == "conf" else render_table())
