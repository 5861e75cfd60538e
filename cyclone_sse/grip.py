"""GRIP, the instructions a backend gives a Pushpin-style proxy in its response headers
(``Grip-Hold``, ``Grip-Channel``, ``Grip-Timeout``, ``Grip-Keep-Alive``,
``Grip-Status``), read into a ``Hold``; and ``Grip-Sig``, the token the proxy signs its
requests with so the backend can trust them (``--grip-key``)."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

import jwt

from cyclone_sse.channels import check_channel

#: Seconds a held response waits for a publish when Grip-Timeout does not say.
DEFAULT_TIMEOUT = 55.0
#: The issuer in the Grip-Sig tokens this proxy signs.
SIG_ISSUER = "cyclone-sse"
#: Response headers a proxy must not pass on (RFC 9110 7.6.1) and GRIP's own.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding",
                        "upgrade", "content-length"})


class GripError(ValueError):
    """Grip-* headers this proxy cannot follow (the client gets a 502 naming them)."""


@dataclass(frozen=True)
class Hold:
    """What a ``Grip-Hold`` response asks for."""

    mode: str  # "stream" or "response"
    channels: list[str]
    timeout: float
    keep_alive: bytes | None
    keep_alive_every: float
    status: int | None  # Grip-Status: the status the held response is sent with


def _unescape(text: str) -> bytes:
    """A ``format=cstring`` value: backslash escapes as in C."""
    out, escaped = [], False
    table = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0"}
    for char in text:
        if escaped:
            out.append(table.get(char, char))
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out).encode("utf-8")


def _params(value: str) -> tuple[str, dict[str, str]]:
    first, *rest = (part.strip() for part in value.split(";"))
    params = {}
    for part in rest:
        name, _, param = part.partition("=")
        params[name.strip().lower()] = param.strip().strip('"')
    return first, params


def read_hold(headers: dict[str, str]) -> Hold | None:
    """The hold a backend's response headers (lower-cased names) ask for, or None."""
    mode = headers.get("grip-hold", "").strip().lower()
    if not mode:
        return None
    if mode not in ("stream", "response"):
        raise GripError(f"Grip-Hold: {mode!r} (stream or response)")
    channels = []
    for part in headers.get("grip-channel", "").split(","):
        if part.strip():
            name, _ = _params(part)  # (prev-id and filters are not used: see README)
            channels.append(check_channel(name, "Grip-Channel"))
    if not channels:
        raise GripError("Grip-Hold without Grip-Channel")
    try:
        timeout = float(headers.get("grip-timeout", DEFAULT_TIMEOUT))
        status = int(headers["grip-status"].split()[0]) if "grip-status" in headers else None
    except ValueError:
        raise GripError("Grip-Timeout or Grip-Status is not a number") from None
    keep_alive, every = None, 0.0
    if headers.get("grip-keep-alive"):
        data, params = _params(headers["grip-keep-alive"])
        kind = params.get("format", "raw")
        try:
            keep_alive = {"raw": lambda d: d.encode("utf-8"), "cstring": _unescape,
                          "base64": lambda d: base64.b64decode(d, validate=True)}[kind](data)
            every = float(params.get("timeout", "20"))
        except (KeyError, ValueError, binascii.Error):
            raise GripError(f"Grip-Keep-Alive: cannot read {headers['grip-keep-alive']!r}") \
                from None
    return Hold(mode, channels, max(0.0, timeout), keep_alive, max(1.0, every), status)


def routes(text: str) -> list[tuple[str, str]]:
    """``--grip-proxy``: ``[(prefix, backend URL)]``; ValueError names a bad entry."""
    found = []
    for item in text.split(","):
        if not item.strip():
            continue
        prefix, eq, backend = item.strip().partition("=")
        if not eq or not prefix.startswith("/") or not backend.startswith(("http://",
                                                                           "https://")):
            raise ValueError(f"--grip-proxy: cannot read {item!r}: write "
                             "/PREFIX=http://backend:port")
        found.append((prefix, backend.rstrip("/")))
    return found


def signature(key: str, lifetime: float = 3600) -> str:
    """A ``Grip-Sig`` value: a JWT (HS256) the backend checks with the same key."""
    return jwt.encode({"iss": SIG_ISSUER, "exp": int(time.time() + lifetime)}, key,
                      algorithm="HS256")
