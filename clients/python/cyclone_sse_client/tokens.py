"""Subscriber and publisher tokens (JWT): HS256/384/512 with the standard library,
RS256/ES256 through PyJWT when it is installed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_token(secret: str, sub: str | None = None, channels: list[str] | None = None,
               publish: list[str] | None = None, ttl: float = 3600,
               algorithm: str = "HS256", audience: str | None = None,
               issuer: str | None = None) -> str:
    """A token the daemon (``--jwt-secret=secret``) accepts: ``sub`` (the user; it alone
    reads ``name#<sub>`` channels), ``channels`` it may read and ``publish`` channels it
    may publish to (names or ``*`` patterns), valid for ``ttl`` seconds.  For RS256 or
    ES256, ``secret`` is your PEM private key (and PyJWT must be installed)."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + int(ttl)}
    for name, value in (("sub", sub), ("channels", channels), ("publish", publish),
                        ("aud", audience), ("iss", issuer)):
        if value is not None:
            payload[name] = value
    if algorithm not in _HMAC:
        try:
            import jwt  # PyJWT, for the public-key algorithms
        except ImportError:
            raise ValueError(f"algorithm {algorithm!r} needs PyJWT (pip install "
                             "pyjwt[crypto]); HS256/384/512 need nothing") from None
        return str(jwt.encode(payload, secret, algorithm=algorithm))
    signing_input = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode())
                             for part in ({"alg": algorithm, "typ": "JWT"}, payload))
    signature = hmac.new(secret.encode(), signing_input.encode(), _HMAC[algorithm]).digest()
    return f"{signing_input}.{_b64(signature)}"
