"""Signed tokens (JWT, verified with PyJWT): HS256 (HS384, HS512 with a secret long enough
for them) with a shared secret, RS256 and ES256 with a public key. ``alg: none`` and an
algorithm the key was not configured for are refused, so a public key can never be used
as an HMAC secret.

Claims read: ``sub`` (the user), ``exp`` (required), ``nbf``, ``aud``/``iss`` when
configured, ``channels`` (names or patterns the token may read) and ``publish`` (names
or patterns the token may publish to).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jwt

from cyclone_sse.channels import compile_pattern, is_pattern
from cyclone_sse.errors import InvalidToken

#: HMAC algorithms and the shortest secret each is accepted with (RFC 7518, 3.2: at
#: least the hash's size), so a short secret never verifies a longer hash.
HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
KEY_ALGORITHMS = ("RS256", "ES256")


class ChannelList:
    """Names and ``*`` patterns, asked whether they cover a channel."""

    def __init__(self, items: list[str] | tuple[str, ...]) -> None:
        self.names = frozenset(i for i in items if not is_pattern(i))
        self.patterns = tuple(compile_pattern(i) for i in items if is_pattern(i))

    def covers(self, channel: str) -> bool:
        return channel in self.names or any(p.match(channel) for p in self.patterns)


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    sub: str | None
    expires: float
    channels: ChannelList = field(default_factory=lambda: ChannelList([]))
    publish: ChannelList = field(default_factory=lambda: ChannelList([]))


def _channel_claim(payload: dict[str, object], name: str) -> ChannelList:
    value = payload.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken(f"the '{name}' claim must be a list of channel names")
    return ChannelList(value)


#: Claims that RFC 7519 (section 2, 4.1) makes numbers of seconds.
NUMERIC_DATES = ("exp", "nbf", "iat")


class TokenVerifier:
    """Checks tokens against the configured keys; ``verify`` raises ``InvalidToken``
    with a description fit for ``WWW-Authenticate`` (never the token itself)."""

    def __init__(self, secret: str | None = None, public_key: str | None = None,
                 audience: str | None = None, issuer: str | None = None) -> None:
        self.keys: dict[str, str] = {}
        if secret:
            self.keys.update({alg: secret for alg, shortest in HMAC_ALGORITHMS.items()
                              if len(secret.encode()) >= shortest})
        if public_key:
            self.keys.update(dict.fromkeys(KEY_ALGORITHMS, public_key))
        self.audience = audience or None
        self.issuer = issuer or None

    def verify(self, token: str) -> Claims:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if not isinstance(algorithm, str) or algorithm not in self.keys:
            raise InvalidToken(f"algorithm {str(algorithm)[:20]!r} is not accepted")
        key = self.keys[algorithm]
        try:
            payload = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                 issuer=self.issuer, options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no '{exc.claim}' claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("malformed token") from None
        for claim in NUMERIC_DATES:  # PyJWT also takes "1796385082", RFC 7519 does not
            value = payload.get(claim)
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, (int, float))):
                raise InvalidToken(f"'{claim}' is not a number (RFC 7519 NumericDate)")
        sub = payload.get("sub")
        return Claims(str(sub) if sub is not None else None, float(payload["exp"]),
                      _channel_claim(payload, "channels"), _channel_claim(payload, "publish"))
