"""Command-line and config-file options for ``twistd cyclone-sse``.

Every option of the 2013 cyclone-sse keeps its name and default.  A config file holds
the same ``--name=value`` words, whitespace separated, so one file works both as
``--config FILE`` and as ``$(cat FILE)``; with ``--config`` it may also contain
``#`` comments.  The command line wins over the file.  An empty value (``--app=``)
means "the default", as in the original config file.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from twisted.python import reflect, usage

from cyclone_sse import history as history_mod
from cyclone_sse import registry as registry_mod
from cyclone_sse import subscribers as subscribers_mod

BROKER_NAMES = ("http", "redis", "amqp")
HISTORY_NAMES = ("memory", "redis")
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


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{value} must not be negative")
    return number


_seconds.coerceDoc = ""  # type: ignore[attr-defined]


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


def _named(table: list[list[Any]]) -> list[list[Any]]:
    """Make each coercion error name its option: Twisted's own message does not."""
    for row in table:
        if len(row) > 4:
            row[4] = _naming(row[0], row[4])
    return table


def _naming(name: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    def named(value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as exc:
            raise ValueError(f"--{name}: {exc}") from None
    named.coerceDoc = ""  # type: ignore[attr-defined]
    return named


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Server-Sent Events broadcasting daemon: browsers subscribe with "
                "GET /?channels=NAME, publishers POST /publish (or use Redis/AMQP). "
                "Numeric limits: 0 disables.")

    optParameters: list[list[Any]] = _named([
        ["config", "c", None, "read more --name=value options from this file"],
        ["port", "p", 8888, "TCP port to listen on", _port],
        ["listen", "l", "127.0.0.1", "interface to listen on"],
        ["app", "r", None, "dotted name of your own cyclone Application class to run"],
        ["use-ssl", None, False, "also serve HTTPS (1/0; a bare --use-ssl means 1)", _bool],
        ["ssl-port", None, 8443, "TLS port to listen on", _port],
        ["ssl-listen", None, "127.0.0.1", "interface to listen on for TLS"],
        ["ssl-cert", None, "server.crt", "TLS certificate file (PEM)"],
        ["ssl-key", None, "server.key", "TLS private key file (PEM)"],
        ["ssl-app", None, None, "application for the TLS port (default: the same one)"],
        ["ssl-appopts", None, None, "kept for compatibility; passed to --ssl-app as 'ssl-appopts'"],
        ["broker", "b", "http", "where messages come from: " + ", ".join(BROKER_NAMES)],
        ["http-secret", None, "", "key publishers must send to POST /publish (empty: no key)"],
        ["redis-host", None, "127.0.0.1", "Redis host"],
        ["redis-port", None, 6379, "Redis port", _port],
        ["redis-db", None, 0, "Redis database number", _int(0, 15)],
        ["redis-password", None, "", "Redis password (AUTH)"],
        ["redis-tls", None, False, "connect to Redis over TLS (1/0)", _bool],
        ["redis-url", None, "", "redis://[user:password@]host[:port][/db] (rediss:// for TLS); "
         "overrides the other --redis-* address options"],
        ["redis-prefix", None, "cyclone-sse", "prefix of every Redis key and internal channel"],
        ["redis-raw", None, "*", "raw Redis channels stored as publishes (redis-cli publish); "
         "empty: none"],
        ["amqp-host", None, "127.0.0.1", "AMQP broker's host"],
        ["amqp-port", None, 5672, "AMQP broker's port", _port],
        ["amqp-vhost", None, "/", "AMQP virtual host"],
        ["amqp-spec", None, "", "AMQP 0-9-1 spec XML (default: the bundled one)"],
        ["amqp-username", None, "guest", "AMQP user name"],
        ["amqp-password", None, "guest", "AMQP password"],
        ["amqp-exchange-name", None, "sse-cyclone-server", "AMQP exchange to bind to"],
        ["amqp-exchange-type", None, "direct", "AMQP exchange type"],
        ["amqp-channel", None, 1, "AMQP channel number", _int(1, 65535)],
        ["export", "e", None, "send statistics to: " + ", ".join(EXPORT_NAMES)],
        ["export-host", None, "127.0.0.1", "Graphite (carbon plaintext) host"],
        ["export-port", None, 2003, "Graphite (carbon plaintext) port", _port],
        ["export-path", None, "cyclone-sse", "metric name prefix"],
        ["export-interval", None, 60.0, "seconds between exports", _seconds],
        ["history", None, "", "where events are kept for replay: "
         + ", ".join(HISTORY_NAMES) + " (default: redis with --broker=redis, else memory)"],
        ["history-size", None, history_mod.DEFAULT_SIZE, "events kept per channel", _count],
        ["history-ttl", None, history_mod.DEFAULT_TTL, "seconds an event is kept", _seconds],
        ["history-channels", None, history_mod.DEFAULT_CHANNELS,
         "channels kept in history (least recently published dropped first)", _count],
        ["replay-limit", None, history_mod.DEFAULT_REPLAY_LIMIT,
         "most events one reconnect replays", _count],
        ["heartbeat", None, registry_mod.DEFAULT_HEARTBEAT,
         "seconds between heartbeat comments on streams", _seconds],
        ["retry", None, 3000, "reconnect delay advised to clients, milliseconds", _count],
        ["poll-timeout", None, 25.0, "seconds a long-poll request is held", _seconds],
        ["max-channels", None, 64, "channels one subscriber may name", _count],
        ["max-pending", None, subscribers_mod.DEFAULT_MAX_PENDING,
         "bytes queued for a slow stream before it is closed", _count],
        ["max-body", None, 1024 * 1024, "largest publish body, bytes", _int(1)],
        ["cors-origin", None, "*", "Access-Control-Allow-Origin: * or a comma list of origins"],
    ])
    optFlags: list[list[str | None]] = [
        ["access-log", None, "log every HTTP request (off: only errors are logged)"],
        ["reuse-port", None, "listen with SO_REUSEPORT: several daemons (one per core, fed "
         "by Redis) share --port"],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        if options is None:
            import sys
            options = sys.argv[1:]
        super().parseOptions(normalize_argv(expand_config(list(options))))

    def postOptions(self) -> None:
        check_choice(self, "broker", BROKER_NAMES)
        from cyclone_sse.brokers import BROKERS
        if self["broker"] not in BROKERS and not self["app"]:
            raise usage.UsageError(f"--broker={self['broker']}: not available in this version "
                                   f"(available: {', '.join(BROKERS)})")
        if not self["history"]:
            self["history"] = "redis" if self["broker"] == "redis" else "memory"
        check_choice(self, "history", HISTORY_NAMES)
        if self["broker"] == "redis" and self["history"] != "redis":
            raise usage.UsageError("--history=memory: the Redis broker shares its history "
                                   "through Redis; use --history=redis")
        if self["broker"] == "amqp":
            if self["history"] != "memory":
                raise usage.UsageError("--history=redis: with --broker=amqp each daemon keeps "
                                       "its own history in memory")
            from cyclone_sse.amqp_client import find_spec
            try:
                find_spec(self["amqp-spec"] or None)
            except FileNotFoundError as exc:
                raise usage.UsageError(str(exc)) from None
        if self["redis-url"]:
            from cyclone_sse.redis_client import RedisAddress
            try:
                RedisAddress.from_url(self["redis-url"])
            except ValueError as exc:
                raise usage.UsageError(f"--redis-url: {exc}") from None
        if self["export"]:
            check_choice(self, "export", EXPORT_NAMES)
        for name in ("app", "ssl-app"):
            if self[name]:
                try:
                    reflect.namedAny(self[name])
                except Exception as exc:
                    raise usage.UsageError(f"--{name}={self[name]}: cannot import it "
                                           f"({exc.__class__.__name__}: {exc})") from None
        if self["use-ssl"]:
            for name in ("ssl-cert", "ssl-key"):
                if not os.path.isfile(self[name]):
                    raise usage.UsageError(f"--{name}={self[name]}: no such file")
        origins = self["cors-origin"]
        if origins != "*" and any(not o.strip() for o in origins.split(",")):
            raise usage.UsageError(f"--cors-origin={origins}: empty origin in the list")


def check_choice(options: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> None:
    if options[name] not in choices:
        raise usage.UsageError(f"--{name}={options[name]}: choose one of {', '.join(choices)}")


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
    """The original's quirks: ``--use-ssl`` alone means ``--use-ssl=1``, and an empty
    ``--name=`` means the default."""
    result = []
    for word in argv:
        if word == "--use-ssl":
            word = "--use-ssl=1"
        if word.startswith("--") and word.endswith("=") and word.count("=") == 1:
            continue
        result.append(word)
    return result


@dataclass
class Settings:
    """Options as the application reads them (underscored names, typed)."""

    port: int = 8888
    listen: str = "127.0.0.1"
    broker: str = "http"
    http_secret: str = ""
    history: str = ""
    history_size: int = history_mod.DEFAULT_SIZE
    history_ttl: float = history_mod.DEFAULT_TTL
    history_channels: int = history_mod.DEFAULT_CHANNELS
    replay_limit: int = history_mod.DEFAULT_REPLAY_LIMIT
    heartbeat: float = registry_mod.DEFAULT_HEARTBEAT
    retry: int = 3000
    poll_timeout: float = 25.0
    max_channels: int = 64
    max_pending: int = subscribers_mod.DEFAULT_MAX_PENDING
    max_body: int = 1024 * 1024
    cors_origin: str = "*"
    access_log: bool = False
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str = ""
    redis_tls: bool = False
    redis_url: str = ""
    redis_prefix: str = "cyclone-sse"
    redis_raw: str = "*"
    amqp_host: str = "127.0.0.1"
    amqp_port: int = 5672
    amqp_vhost: str = "/"
    amqp_spec: str = ""
    amqp_username: str = "guest"
    amqp_password: str = "guest"
    amqp_exchange_name: str = "sse-cyclone-server"
    amqp_exchange_type: str = "direct"
    amqp_channel: int = 1
    export: str | None = None
    export_host: str = "127.0.0.1"
    export_port: int = 2003
    export_path: str = "cyclone-sse"
    export_interval: float = 60.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | Settings | None) -> Settings:
        """Accepts twistd ``Options``, a plain dict (hyphenated or underscored keys,
        missing ones take the defaults) or a ``Settings``."""
        if isinstance(options, Settings):
            return options
        options = options or {}
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in options.items():
            name = key.replace("-", "_")
            if name in known and value is not None:
                values[name] = value
        settings = cls(**values)
        if not settings.history:
            settings.history = "redis" if settings.broker == "redis" else "memory"
        return settings
