"""GRIP, the instructions a backend gives a Pushpin-style proxy in its response headers
(``Grip-Hold``, ``Grip-Channel``, ``Grip-Timeout``, ``Grip-Keep-Alive``,
``Grip-Status``), read into a ``Hold``; and ``Grip-Sig``, the token the proxy signs its
requests with so the backend can trust them (``--grip-key``)."""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

import jwt

from cyclone_sse.channels import check_channel

#: Seconds a held response waits for a publish when Grip-Timeout does not say.
DEFAULT_TIMEOUT = 55.0
#: The issuer in the Grip-Sig tokens this proxy signs.
SIG_ISSUER = "cyclone-sse"
#: Headers a proxy must not pass on (RFC 9110 7.6.1; ``proxy-connection`` as old
#: clients send it), and ``content-length``, which this proxy computes itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length"})


def hop_by_hop(headers: dict[str, str]) -> frozenset[str]:
    """The lower-cased names not to pass on: the fixed ones and those the message's own
    ``Connection`` header lists (RFC 9110 7.6.1), and GRIP's ``grip-*`` are dropped
    by the caller."""
    listed = headers.get("connection", "")
    return HOP_BY_HOP | {name.strip().lower() for name in listed.split(",") if name.strip()}


def checked_status(code: int) -> int:
    """A status a proxy may send as a final answer: three digits, 200 to 599 (1xx are
    interim, and anything else no client can read)."""
    if not 200 <= code <= 599:
        raise GripError(f"status {code} is not a final HTTP status (200-599)")
    return code


def _seconds(text: str, name: str, most: float) -> float:
    """A number of seconds from a GRIP header: finite and not negative, cut to
    ``most`` (itself at least 1) and at least 1 (a 0 or 1e308 would hold the client
    for ever)."""
    try:
        value = float(text)
    except ValueError:
        raise GripError(f"{name}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise GripError(f"{name}: {text[:40]!r} is not a finite, positive number of "
                        "seconds")
    return min(max(value, 1.0), max(most, 1.0))


def has_dot_segments(path: str) -> bool:
    """Whether a request path holds ``.`` or ``..`` segments, even %-encoded: a
    backend that resolves them would serve what lies outside the route's prefix."""
    return any(unquote(segment) in (".", "..") for segment in path.split("/"))


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
    #: Grip-Channel's ``prev-id``: the last id the backend sent, by channel
    prev_ids: dict[str, str] = field(default_factory=dict)
    #: Grip-Channel's ``filter`` params, by channel
    filters: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Grip-Set-Meta: the held client's own values (``user``, ``id_format``...)
    meta: dict[str, str] = field(default_factory=dict)
    #: Grip-Link's ``rel=next``: where missed items are recovered from
    next_link: str | None = None


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


def read_hold(headers: dict[str, str], most: float = DEFAULT_TIMEOUT) -> Hold | None:
    """The hold a backend's response headers (lower-cased names) ask for, or None;
    its timeouts are cut to ``most`` seconds (``--grip-max-timeout``)."""
    mode = headers.get("grip-hold", "").strip().lower()
    if not mode:
        return None
    if mode not in ("stream", "response"):
        raise GripError(f"Grip-Hold: {mode!r} (stream or response)")
    channels, prev_ids, filters = read_channels(headers.get("grip-channel", ""))
    if not channels:
        raise GripError("Grip-Hold without Grip-Channel")
    timeout = _seconds(headers.get("grip-timeout", str(DEFAULT_TIMEOUT)), "Grip-Timeout", most)
    status = None
    if "grip-status" in headers:
        code = headers["grip-status"].split(None, 1)[:1]
        if not code or not code[0].isdigit() or len(code[0]) != 3:
            raise GripError(f"Grip-Status: {headers['grip-status'][:40]!r} is not a status")
        status = checked_status(int(code[0]))
    keep_alive, every = None, 0.0
    if headers.get("grip-keep-alive"):
        data, params = _params(headers["grip-keep-alive"])
        kind = params.get("format", "raw")
        try:
            keep_alive = {"raw": lambda d: d.encode("utf-8"), "cstring": _unescape,
                          "base64": lambda d: base64.b64decode(d, validate=True)}[kind](data)
        except (KeyError, ValueError, binascii.Error):
            raise GripError(f"Grip-Keep-Alive: cannot read {headers['grip-keep-alive']!r}") \
                from None
        every = _seconds(params.get("timeout", "20"), "Grip-Keep-Alive timeout", most)
    return Hold(mode, channels, timeout, keep_alive, every, status, prev_ids, filters,
                read_meta(headers.get("grip-set-meta", "")),
                read_next_link(headers.get("grip-link", "")))


def read_channels(value: str) -> tuple[list[str], dict[str, str], dict[str, frozenset[str]]]:
    """A ``Grip-Channel`` value: the channel names, their ``prev-id`` and their
    ``filter`` params (a channel may have several)."""
    channels, prev_ids, filters = [], {}, {}
    for part in value.split(","):
        if not part.strip():
            continue
        name, *params = (piece.strip() for piece in part.split(";"))
        channels.append(check_channel(name, "Grip-Channel"))
        named = set()
        for param in params:
            key, _, param_value = param.partition("=")
            key, param_value = key.strip().lower(), param_value.strip().strip('"')
            if key == "prev-id":
                prev_ids[name] = param_value
            elif key == "filter":
                named.add(param_value)
        filters[name] = frozenset(named)
    return channels, prev_ids, filters


_META = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def read_meta(value: str) -> dict[str, str]:
    """A ``Grip-Set-Meta`` value (``name="value", ...``, backslash escapes)."""
    meta, at = {}, 0
    while at < len(value):
        match = _META.match(value, at)
        if match is None:
            raise GripError(f"Grip-Set-Meta: cannot read {value[at:at + 40]!r}")
        meta[match.group(1)] = re.sub(r"\\(.)", r"\1", match.group(2))
        at = match.end()
    return meta


def read_next_link(value: str) -> str | None:
    """The ``rel=next`` link of a ``Grip-Link`` value (a path on the backend)."""
    for link in value.split(","):
        target, _, params = link.strip().partition(";")
        rels = {p.strip().lower() for p in params.split(";")}
        if target.startswith("<") and target.endswith(">") and "rel=next" in rels:
            return target[1:-1]
    return None


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
