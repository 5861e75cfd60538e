"""The project's own publishing tool: the shell commands below, and the raw-socket
Redis client the tests and benchmarks use.  Applications publish with the client
distribution instead (``pip install ./clients/python``: ``cyclone_sse_client``), whose
``make_token``, ``send_event`` and ``PublishError`` this module re-exports.

From the shell::

    python extras/publisher.py token 42 --secret jwt-secret --channels 'news.*,notify#42'
    python extras/publisher.py http  base '[1, 2, 3]' --event update --key s3cret
    python extras/publisher.py redis base '[1, 2, 3]'        # durable, through the history
    python extras/publisher.py raw   base '[1, 2, 3]'        # plain PUBLISH, like redis-cli
    python extras/publisher.py amqp  base '[1, 2, 3]'        # to the AMQP exchange

``redis`` mode uses the Lua script of ``cyclone_sse.history.redis_scripts``, ``amqp``
mode the daemon's own AMQP link (txamqp).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from dataclasses import asdict
from typing import Any

from cyclone_sse_client import PublishError, make_token, send_event
from cyclone_sse_client.http import DEFAULT_URL

__all__ = ["PublishError", "RedisPublisher", "make_token", "send_event"]


def _as_text(data: Any) -> str | bytes:
    if isinstance(data, (str, bytes)):
        return data
    return json.dumps(data, separators=(",", ":"))


class RedisPublisher:
    """A minimal Redis (RESP) client that publishes through the cyclone-sse history."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, db: int = 0,
                 password: str | None = None, prefix: str = "cyclone-sse",
                 history_size: int = 1000, history_ttl: float = 3600.0,
                 history_channels: int = 10000, history_bytes: int = 128 * 1024 * 1024,
                 history_channel_bytes: int = 8 * 1024 * 1024,
                 timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.prefix = prefix
        # the daemon's --history-* options: keep them the same as the daemons'
        self.limits = (history_size, int(history_ttl * 1000), history_channels,
                       history_bytes, history_channel_bytes)
        self._sha: str | None = None
        if password:
            self.command("AUTH", password)
        if db:
            self.command("SELECT", db)

    # the protocol -------------------------------------------------------------------

    @staticmethod
    def encode(*args: Any) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    def read_reply(self) -> Any:
        line = self.reader.readline()
        if not line:
            raise PublishError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise PublishError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read_reply() for _ in range(size)]
        raise PublishError(f"unexpected redis reply {line!r}")

    def command(self, *args: Any) -> Any:
        self.sock.sendall(self.encode(*args))
        return self.read_reply()

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send many commands at once and read all the replies (errors included)."""
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(self.read_reply())
            except PublishError as exc:
                replies.append(exc)
        return replies

    # publishing ---------------------------------------------------------------------

    def _append_args(self, channel: str, data: Any, event: str | None,
                     id: str | None) -> tuple[Any, ...]:
        if self._sha is None:
            from cyclone_sse.history.redis_scripts import APPEND
            self._sha = self.command("SCRIPT", "LOAD", APPEND).decode()
        return ("EVALSHA", self._sha, 0, self.prefix, channel, _as_text(data), event or "",
                id or "", *self.limits)

    def send_event(self, channel: str, data: Any, event: str | None = None,
                   id: str | None = None) -> str:
        """Store and announce one event, exactly like POST /publish; returns its id."""
        return _event_id(self.command(*self._append_args(channel, data, event, id)))

    def send_many(self, events: list[tuple[str, Any]]) -> list[str]:
        """Pipelined ``send_event`` for (channel, data) pairs, in order."""
        commands = [self._append_args(channel, data, None, None) for channel, data in events]
        ids = []
        for reply in self.pipeline(commands):
            if isinstance(reply, Exception):
                raise reply
            ids.append(_event_id(reply))
        return ids

    def publish_raw(self, channel: str, message: Any) -> int:
        """``PUBLISH channel message``, as ``redis-cli publish`` does (not durable)."""
        return self.command("PUBLISH", channel, _as_text(message))

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _event_id(reply: list[Any]) -> str:
    """The id the append script assigned (its reply starts with epoch and seq)."""
    from cyclone_sse.event import EventId
    return str(EventId(reply[0].decode(), int(reply[1])))


def token_main(argv: list[str]) -> int:
    """``publisher.py token SUB --secret KEY [--channels a,b] [--publish c] [--ttl N]``"""
    parser = argparse.ArgumentParser(prog="publisher.py token",
                                     description="Mint a cyclone-sse token (for testing).")
    parser.add_argument("sub", help="the user the token is for ('' for none)")
    parser.add_argument("--secret", required=True,
                        help="--jwt-secret, or a PEM private key file with --algorithm RS256")
    parser.add_argument("--channels", default="", help="channels it may read, comma list")
    parser.add_argument("--publish", default="", help="channels it may publish to")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds it is valid")
    parser.add_argument("--algorithm", default="HS256")
    parser.add_argument("--audience")
    parser.add_argument("--issuer")
    args = parser.parse_args(argv)
    key = args.secret
    if not args.algorithm.startswith("HS"):
        with open(key, encoding="utf-8") as handle:
            key = handle.read()

    def listed(text: str) -> list[str] | None:
        return [c.strip() for c in text.split(",") if c.strip()] or None

    print(make_token(key, args.sub or None, listed(args.channels), listed(args.publish),
                     args.ttl, args.algorithm, args.audience, args.issuer))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_main(argv[1:])
    parser = argparse.ArgumentParser(description="Publish one message to cyclone-sse "
                                     "(or: publisher.py token SUB --secret KEY ...).")
    parser.add_argument("mode", choices=["http", "redis", "raw", "amqp"])
    parser.add_argument("channel")
    parser.add_argument("data")
    parser.add_argument("--event")
    parser.add_argument("--id")
    parser.add_argument("--url", help=f"daemon URL (http mode, default {DEFAULT_URL}), or "
                        "amqp:// / amqps:// URL (amqp mode)")
    parser.add_argument("--ca-file", default="", help="PEM CA certificates to trust (amqps)")
    parser.add_argument("--cert-file", default="", help="client certificate, PEM (amqps)")
    parser.add_argument("--key-file", default="", help="its private key, PEM (amqps)")
    parser.add_argument("--key", help="the daemon's --http-secret (http mode)")
    parser.add_argument("--token", help="a publisher token (http mode)")
    parser.add_argument("--host", default="127.0.0.1", help="Redis or AMQP host")
    parser.add_argument("--port", type=int, help="Redis (6379) or AMQP (5672) port")
    parser.add_argument("--prefix", default="cyclone-sse", help="the daemon's --redis-prefix")
    parser.add_argument("--exchange", default="sse-cyclone-server", help="AMQP exchange")
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--password", default="guest")
    args = parser.parse_args(argv)
    try:
        if args.mode == "http":
            print(json.dumps([asdict(p) for p in send_event(
                args.channel, args.data, args.event, args.id, args.url or DEFAULT_URL,
                args.key, token=args.token)]))
        elif args.mode in ("redis", "raw"):
            redis = RedisPublisher(args.host, args.port or 6379, prefix=args.prefix)
            if args.mode == "redis":
                print(redis.send_event(args.channel, args.data, args.event, args.id))
            else:
                print(f"{redis.publish_raw(args.channel, args.data)} receivers")
            redis.close()
        else:
            from cyclone_sse.links.amqp import AmqpAddress, publish_once
            from cyclone_sse.links.tls import ClientTls
            address = AmqpAddress(args.host, args.port or 5672, args.vhost, args.user,
                                  args.password)
            if args.url:
                address = AmqpAddress.from_url(args.url, address)
            address.files = ClientTls(args.ca_file, args.cert_file, args.key_file)
            publish_once(address, args.exchange, args.channel, args.data, args.event)
            print("published")
    except (PublishError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
